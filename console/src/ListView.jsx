// A generated table for one type: chosen columns, sortable headers, the filter builder and
// keyset paging (`next` is the cursor). It only uses `POST {collection}/search`.

import { useEffect, useMemo, useState } from "react";
import { request } from "./api.js";
import { FilterBuilder } from "./FilterBuilder.jsx";
import { groupFilter, newGroup } from "./filters.js";
import { canWrite, referenceFields, titleOf, xa } from "./schemas.js";
import { ProblemBox, Value } from "./widgets.jsx";

const PAGE_SIZE = 10;

function defaultColumns(schema) {
  const names = Object.entries(schema.properties || {})
    .filter(([name, prop]) => name !== "id" && !["object", "array"].includes([].concat(prop.type)[0]))
    .map(([name]) => name);
  return ["id", ...names.slice(0, 5)];
}

export function ListView({ catalog, credential, type, apiBase, hashBase, hideField }) {
  const schema = catalog.schemas[type];
  const x = xa(schema);
  const [columns, setColumns] = useState(() => defaultColumns(schema).filter((name) => name !== hideField));
  const [sort, setSort] = useState([]);
  const [tree, setTree] = useState(() => newGroup("and"));
  const [applied, setApplied] = useState(null);
  const [cursors, setCursors] = useState([null]);
  const [page, setPage] = useState(null);
  const [problem, setProblem] = useState(null);
  const refs = useMemo(() => referenceFields(schema), [schema]);
  const after = cursors[cursors.length - 1];

  useEffect(() => {
    let live = true;
    const body = { fields: columns, limit: PAGE_SIZE, count: true };
    if (applied) body.filter = applied;
    if (sort.length) body.sort = sort;
    if (after) body.after = after;
    setProblem(null);
    request(credential, "POST", `${apiBase}/search`, { body })
      .then(({ body: result }) => live && setPage(result))
      .catch((err) => live && setProblem(err));
    return () => {
      live = false;
    };
  }, [credential, apiBase, columns, sort, applied, after]);

  const restart = () => setCursors([null]);
  const toggleSort = (name) => {
    const current = sort[0];
    setSort(current === name ? [`-${name}`] : current === `-${name}` ? [] : [name]);
    restart();
  };
  const toggleColumn = (name) => {
    setColumns(columns.includes(name) ? columns.filter((c) => c !== name) : [...columns, name]);
    restart();
  };
  const applyFilter = () => {
    setApplied(groupFilter(tree, schema.properties || {}));
    restart();
  };
  const clearFilter = () => {
    setTree(newGroup("and"));
    setApplied(null);
    restart();
  };

  return (
    <section className="list" data-type={type}>
      <div className="toolbar">
        {x.create && canWrite(catalog, type) ? (
          <a className="button primary create" href={`${hashBase}/new`}>
            New {titleOf(catalog, type).toLowerCase()}
          </a>
        ) : null}
        <details className="columns">
          <summary>Columns</summary>
          {Object.keys(schema.properties || {}).map((name) => (
            <label key={name} className="column-choice">
              <input type="checkbox" name={`column-${name}`} checked={columns.includes(name)} disabled={name === "id"} onChange={() => toggleColumn(name)} />
              {schema.properties[name].title || name}
            </label>
          ))}
        </details>
      </div>
      <FilterBuilder schema={schema} tree={tree} onChange={setTree} onApply={applyFilter} onClear={clearFilter} />
      <ProblemBox problem={problem} />
      {page ? (
        <>
          <table className="rows">
            <thead>
              <tr>
                {columns.map((name) => {
                  const sortable = (x.sortable || []).includes(name);
                  const mark = sort[0] === name ? " ▲" : sort[0] === `-${name}` ? " ▼" : "";
                  return (
                    <th key={name} data-field={name}>
                      {sortable ? (
                        <button type="button" className="sort" onClick={() => toggleSort(name)}>
                          {(schema.properties[name]?.title || name) + mark}
                        </button>
                      ) : (
                        schema.properties[name]?.title || name
                      )}
                    </th>
                  );
                })}
              </tr>
            </thead>
            <tbody>
              {page.data.map((row) => (
                <tr key={row.id} data-id={row.id}>
                  {columns.map((name) => (
                    <td key={name} data-field={name}>
                      {name === "id" ? (
                        <a className="open" href={`${hashBase}/${row.id}`}>
                          {row.id}
                        </a>
                      ) : (
                        <Value value={row[name]} refType={refs[name]} />
                      )}
                    </td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
          {page.data.length === 0 ? <p className="empty">Nothing here yet.</p> : null}
          <div className="pager">
            <span className="total">{page.total ?? page.data.length} in all</span>
            <button type="button" className="first" disabled={cursors.length === 1} onClick={restart}>
              First
            </button>
            <button type="button" className="previous" disabled={cursors.length === 1} onClick={() => setCursors(cursors.slice(0, -1))}>
              Previous
            </button>
            <span className="page-number">page {cursors.length}</span>
            <button type="button" className="next" disabled={!page.next} onClick={() => setCursors([...cursors, page.next])}>
              Next
            </button>
          </div>
        </>
      ) : problem ? null : (
        <p className="loading">Loading…</p>
      )}
    </section>
  );
}
