// Small shared pieces: values in tables, problem boxes, and the form widgets the JSON Schema
// form uses for references (search as you type), datetimes (RFC 3339 text) and free JSON.

import { useContext, useEffect, useRef, useState } from "react";
import { request } from "./api.js";
import { CatalogContext } from "./context.js";
import { labelField, labelOf } from "./schemas.js";

export function Value({ value, refType }) {
  if (value === null || value === undefined) return <span className="null">—</span>;
  if (refType && typeof value === "string") {
    return (
      <a className="reference" data-ref-type={refType} href={`#/${refType}/${value}`}>
        {value}
      </a>
    );
  }
  if (typeof value === "object") return <code className="json">{JSON.stringify(value)}</code>;
  return String(value);
}

export function ProblemBox({ problem }) {
  if (!problem) return null;
  const body = problem.body || {};
  const loose = (problem.errors || []).filter((e) => !e.mapped);
  return (
    <div className="problem" role="alert" data-status={problem.status}>
      <strong>{body.title || "Error"}</strong> {problem.status ? `(${problem.status})` : null}
      <div className="detail">{body.detail || problem.message}</div>
      {loose.length ? (
        <ul>
          {loose.map((e, i) => (
            <li key={i}>
              <code>{e.path || "(body)"}</code> {e.message}
            </li>
          ))}
        </ul>
      ) : null}
    </div>
  );
}

/** A text input that finds objects of `options.refType` as you type and keeps the chosen id. */
export function ReferencePicker({ id, value, required, disabled, readonly, onChange, options, label }) {
  const { catalog, credential } = useContext(CatalogContext);
  const type = options.refType;
  const schema = catalog.schemas[type];
  const [text, setText] = useState("");
  const [results, setResults] = useState([]);
  const [chosen, setChosen] = useState(null);
  const timer = useRef(null);

  useEffect(() => {
    if (!value || (chosen && chosen.id === value)) return;
    request(credential, "GET", `/v3/crud/${type}/${encodeURIComponent(value)}`)
      .then(({ body }) => setChosen(body))
      .catch(() => setChosen({ id: value }));
  }, [value, type, credential]);

  const search = (query) => {
    setText(query);
    clearTimeout(timer.current);
    timer.current = setTimeout(async () => {
      const field = labelField(schema);
      const body = { limit: 10 };
      if (query.trim()) {
        const conditions = [];
        if (field) conditions.push({ [field]: { _icontains: query.trim() } });
        if (/^[A-Za-z0-9_-]{22}$/.test(query.trim())) conditions.push({ id: query.trim() });
        body.filter = conditions.length > 1 ? { _or: conditions } : conditions[0] || {};
      }
      try {
        setResults((await request(credential, "POST", `/v3/crud/${type}/search`, { body })).body.data);
      } catch {
        setResults([]);
      }
    }, 200);
  };

  const pick = (item) => {
    setChosen(item);
    setResults([]);
    setText("");
    onChange(item.id);
  };

  return (
    <div className="reference-picker" data-ref-type={type}>
      {value ? (
        <div className="chosen">
          <span className="chosen-label">{labelOf(schema, chosen) || value}</span> <code>{value}</code>
          {disabled || readonly ? null : (
            <button type="button" className="clear-reference" onClick={() => onChange(undefined)}>
              change
            </button>
          )}
        </div>
      ) : (
        <>
          <input id={id} className="reference-search" placeholder={`search ${schema?.title || type}…`} value={text} required={required} disabled={disabled || readonly} onChange={(e) => search(e.target.value)} onFocus={() => search(text)} autoComplete="off" aria-label={label} />
          {results.length ? (
            <ul className="reference-results">
              {results.map((item) => (
                <li key={item.id}>
                  <button type="button" className="reference-option" data-id={item.id} onClick={() => pick(item)}>
                    {labelOf(schema, item)} <code>{item.id}</code>
                  </button>
                </li>
              ))}
            </ul>
          ) : null}
        </>
      )}
    </div>
  );
}

/** RFC 3339 as text: what the API takes, with no local-time guessing by the browser. */
export function DateTimeWidget({ id, value, required, disabled, readonly, onChange, onBlur, onFocus }) {
  return (
    <input id={id} className="form-control datetime" type="text" placeholder="2027-03-14T09:00:00Z" value={value ?? ""} required={required} disabled={disabled || readonly} onChange={(e) => onChange(e.target.value === "" ? undefined : e.target.value)} onBlur={(e) => onBlur(id, e.target.value)} onFocus={(e) => onFocus(id, e.target.value)} />
  );
}

/** A JSON text area for objects whose shape the schema leaves open. */
export function JsonField({ idSchema, formData, onChange, schema, name, rawErrors }) {
  const [text, setText] = useState(() => JSON.stringify(formData ?? schema.default ?? {}, null, 1));
  const [bad, setBad] = useState(null);
  return (
    <div className="form-group field json-field">
      <label className="control-label" htmlFor={idSchema.$id}>
        {schema.title || name}
      </label>
      <textarea
        id={idSchema.$id}
        className="form-control"
        rows={3}
        value={text}
        onChange={(e) => {
          setText(e.target.value);
          try {
            onChange(JSON.parse(e.target.value || "null"));
            setBad(null);
          } catch (err) {
            setBad(String(err.message));
          }
        }}
      />
      {bad ? <div className="error-detail">not JSON: {bad}</div> : null}
      {(rawErrors || []).map((e, i) => (
        <div key={i} className="error-detail">
          {e}
        </div>
      ))}
    </div>
  );
}
