// One object: its fields (references and the parent as links), edit and delete when the
// role allows, its files when its type takes uploads, and its children as tabs whose URLs
// nest under it.

import { useEffect, useState } from "react";
import { request } from "./api.js";
import { Files, hasFiles } from "./Files.jsx";
import { ListView } from "./ListView.jsx";
import { canWrite, labelOf, referenceFields, titleOf, xa } from "./schemas.js";
import { ProblemBox, Value } from "./widgets.jsx";

export function DetailView({ catalog, credential, segments, tab, navigate }) {
  const type = segments[segments.length - 2];
  const id = segments[segments.length - 1];
  const itemPath = segments.join("/");
  const schema = catalog.schemas[type];
  const x = xa(schema);
  const [item, setItem] = useState(null);
  const [problem, setProblem] = useState(null);
  const refs = referenceFields(schema);
  const writable = canWrite(catalog, type);
  const children = x.children || [];
  const active = tab || null;

  useEffect(() => {
    setItem(null);
    setProblem(null);
    request(credential, "GET", `/v3/crud/${itemPath}`)
      .then(({ body }) => setItem(body))
      .catch(setProblem);
  }, [credential, itemPath]);

  const remove = async () => {
    if (!window.confirm(`Delete this ${titleOf(catalog, type).toLowerCase()}?`)) return;
    try {
      await request(credential, "DELETE", `/v3/crud/${itemPath}`, { headers: { "If-Match": `"${item.version}"` } });
      navigate(`#/${segments.slice(0, -1).join("/")}`);
    } catch (err) {
      setProblem(err);
    }
  };

  if (problem && !item) {
    return (
      <section className="detail missing">
        <h2>{titleOf(catalog, type)}</h2>
        <ProblemBox problem={problem} />
      </section>
    );
  }
  if (!item) return <p className="loading">Loading…</p>;

  return (
    <section className="detail" data-type={type} data-id={id}>
      <h2>
        {titleOf(catalog, type)}: <span className="label">{labelOf(schema, item)}</span>
      </h2>
      <div className="toolbar">
        {writable && x.update ? (
          <a className="button edit" href={`#/${itemPath}/edit`}>
            Edit
          </a>
        ) : null}
        {writable && x.delete ? (
          <button type="button" className="delete danger" onClick={remove}>
            Delete
          </button>
        ) : null}
      </div>
      <ProblemBox problem={problem} />
      <table className="fields">
        <tbody>
          {Object.keys(schema.properties || {}).map((name) => (
            <tr key={name} data-field={name}>
              <th>{schema.properties[name].title || name}</th>
              <td>
                <Value value={item[name]} refType={refs[name]} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {hasFiles(catalog, type) ? <Files catalog={catalog} credential={credential} type={type} id={id} itemPath={itemPath} writable={writable} /> : null}
      {children.length ? (
        <div className="children">
          <nav className="tabs">
            {children.map((child) => (
              <a key={child} className={`tab${child === active ? " active" : ""}`} data-child={child} href={`#/${itemPath}/${child}`}>
                {titleOf(catalog, child)}
              </a>
            ))}
          </nav>
          {active && children.includes(active) ? (
            <ListView key={`${itemPath}/${active}`} catalog={catalog} credential={credential} type={active} apiBase={`/v3/crud/${itemPath}/${active}`} hashBase={`#/${itemPath}/${active}`} hideField={xa(catalog.schemas[active]).parent?.field} />
          ) : null}
        </div>
      ) : null}
    </section>
  );
}
