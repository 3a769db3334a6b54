// Create and edit forms, rendered by react-jsonschema-form from `$defs.create` and
// `$defs.update`. Server problems land under their fields (`errors[].path`); edits send
// `If-Match`, and a 412 opens a screen showing what changed, to reload or overwrite.

import Form from "@rjsf/core";
import { useEffect, useMemo, useState } from "react";
import { request } from "./api.js";
import { referenceFields, titleOf } from "./schemas.js";
import { validator } from "./validator.js";
import { DateTimeWidget, JsonField, ProblemBox, ReferencePicker } from "./widgets.jsx";

const widgets = { ReferencePicker, DateTimeWidget };
const fields = { JsonField };

/** `layout.elements[0].x` → ["layout", "elements", "0", "x"]. */
export function splitPath(path) {
  return String(path || "")
    .replace(/\[(\d+)\]/g, ".$1")
    .split(".")
    .filter((part) => part !== "");
}

/** Server problems as an rjsf error schema; each error placed is marked `mapped`. */
export function problemToErrorSchema(problem, properties) {
  const errorSchema = {};
  for (const error of problem?.errors || []) {
    const parts = splitPath(error.path);
    if (!parts.length || !(parts[0] in properties)) continue;
    let node = errorSchema;
    for (const part of parts) node = node[part] = node[part] || {};
    node.__errors = [...(node.__errors || []), error.message];
    error.mapped = true;
  }
  return errorSchema;
}

function formSchema(schema, which, omit) {
  const def = JSON.parse(JSON.stringify(schema.$defs?.[which] || { type: "object", properties: {} }));
  delete def["x-aether"];
  for (const name of omit) {
    delete def.properties?.[name];
    if (def.required) def.required = def.required.filter((r) => r !== name);
  }
  const defs = { ...(schema.$defs || {}) };
  delete defs.create;
  delete defs.update;
  return Object.keys(defs).length ? { ...def, $defs: defs } : def;
}

function uiSchemaFor(schema, properties) {
  const refs = referenceFields(schema);
  const ui = { "ui:submitButtonOptions": { submitText: "Save" } };
  for (const [name, prop] of Object.entries(properties)) {
    const types = [].concat(prop.type || []);
    if (refs[name]) ui[name] = { "ui:widget": "ReferencePicker", "ui:options": { refType: refs[name] } };
    else if (prop.format === "date-time") ui[name] = { "ui:widget": "DateTimeWidget" };
    else if (types.includes("object") && !prop.properties) ui[name] = { "ui:field": "JsonField" };
    else if (prop.writeOnly || name === "password") ui[name] = { "ui:widget": "password" };
  }
  return ui;
}

function pick(item, properties) {
  const out = {};
  for (const name of Object.keys(properties)) {
    if (item[name] !== undefined && item[name] !== null) out[name] = item[name];
  }
  return out;
}

function changedFields(original, edited, properties) {
  const out = {};
  for (const name of Object.keys(properties)) {
    const before = original[name] ?? null;
    const after = edited[name] ?? null;
    if (JSON.stringify(before) !== JSON.stringify(after)) out[name] = after;
  }
  return out;
}

const show = (value) => (value === undefined || value === null ? "—" : typeof value === "object" ? JSON.stringify(value) : String(value));

function ConflictScreen({ properties, original, mine, current, onReload, onOverwrite }) {
  const rows = Object.keys(properties).filter((name) => {
    const o = JSON.stringify(original[name] ?? null);
    return JSON.stringify(mine[name] ?? null) !== o || JSON.stringify(current[name] ?? null) !== o;
  });
  return (
    <div className="conflict" role="alert">
      <h3>Someone else changed this object while you were editing it</h3>
      <p>
        Your copy was version {original.version}; the server now holds version {current.version}. Review the
        differences, then reload theirs (your edits are dropped) or overwrite with yours.
      </p>
      <table className="conflict-fields">
        <thead>
          <tr>
            <th>field</th>
            <th>when you started</th>
            <th>yours</th>
            <th>on the server now</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((name) => (
            <tr key={name} data-field={name}>
              <th>{properties[name].title || name}</th>
              <td>{show(original[name])}</td>
              <td className="mine">{show(mine[name])}</td>
              <td className="theirs">{show(current[name])}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <button type="button" className="reload" onClick={onReload}>
        Reload theirs
      </button>
      <button type="button" className="overwrite danger" onClick={onOverwrite}>
        Overwrite with mine
      </button>
    </div>
  );
}

export function FormView({ catalog, credential, type, mode, apiPath, hashBack, omit = [], navigate }) {
  const schema = catalog.schemas[type];
  const which = mode === "create" ? "create" : "update";
  const rjsfSchema = useMemo(() => formSchema(schema, which, omit), [schema, which, omit.join(",")]);
  const properties = rjsfSchema.properties || {};
  const uiSchema = useMemo(() => uiSchemaFor(schema, properties), [schema, rjsfSchema]);
  const [formData, setFormData] = useState(mode === "create" ? {} : null);
  const [original, setOriginal] = useState(null);
  const [etag, setEtag] = useState(null);
  const [problem, setProblem] = useState(null);
  const [extraErrors, setExtraErrors] = useState(undefined);
  const [conflict, setConflict] = useState(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    if (mode !== "edit") return;
    request(credential, "GET", apiPath)
      .then(({ body, headers }) => {
        setOriginal(body);
        setEtag(headers.get("ETag"));
        setFormData(pick(body, properties));
      })
      .catch(setProblem);
  }, [mode, apiPath, credential]);

  const fail = (err) => {
    setExtraErrors(problemToErrorSchema(err, properties));
    setProblem(err);
  };

  const patch = async (changes, tag) => {
    const { body } = await request(credential, "PATCH", apiPath, { body: changes, headers: tag ? { "If-Match": tag } : {} });
    return body;
  };

  const submit = async ({ formData: data }) => {
    setBusy(true);
    setProblem(null);
    setExtraErrors(undefined);
    const clean = JSON.parse(JSON.stringify(data || {}));
    try {
      if (mode === "create") {
        const { body } = await request(credential, "POST", apiPath, { body: clean });
        navigate(`${hashBack}/${body.id}`);
      } else {
        const changes = changedFields(pick(original, properties), clean, properties);
        await patch(changes, etag);
        navigate(hashBack);
      }
    } catch (err) {
      if (err.status === 412) {
        const { body, headers } = await request(credential, "GET", apiPath);
        setConflict({ mine: clean, current: body, etag: headers.get("ETag") });
      } else fail(err);
    } finally {
      setBusy(false);
    }
  };

  const reload = () => {
    setOriginal(conflict.current);
    setEtag(conflict.etag);
    setFormData(pick(conflict.current, properties));
    setConflict(null);
  };

  const overwrite = async () => {
    try {
      await patch(changedFields(pick(conflict.current, properties), conflict.mine, properties), conflict.etag);
      navigate(hashBack);
    } catch (err) {
      setConflict(null);
      fail(err);
    }
  };

  const title = `${mode === "create" ? "New" : "Edit"} ${titleOf(catalog, type).toLowerCase()}`;
  return (
    <section className={`form-view ${mode}`} data-type={type}>
      <h2>{title}</h2>
      <ProblemBox problem={problem} />
      {conflict ? (
        <ConflictScreen properties={properties} original={original} mine={conflict.mine} current={conflict.current} onReload={reload} onOverwrite={overwrite} />
      ) : formData ? (
        <Form
          key={etag || "new"}
          schema={rjsfSchema}
          uiSchema={uiSchema}
          formData={formData}
          validator={validator}
          widgets={widgets}
          fields={fields}
          extraErrors={extraErrors}
          showErrorList={false}
          noHtml5Validate
          disabled={busy}
          onChange={({ formData: next }) => setFormData(next)}
          onSubmit={submit}
        >
          <div className="form-buttons">
            <button type="submit" className="primary save" disabled={busy}>
              Save
            </button>
            <a className="button cancel" href={hashBack}>
              Cancel
            </a>
          </div>
        </Form>
      ) : null}
      {mode === "edit" && original ? <p className="version">version {original.version}</p> : null}
    </section>
  );
}
