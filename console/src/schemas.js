// What the console knows, all read over HTTP at sign-in: the schema index, each type's
// JSON Schema (with its `x-aether` extension), the upload actions the OpenAPI document
// lists, and the caller's role (used only to hide buttons; the server still decides).

import { jwtClaims, request } from "./api.js";

export const ROLES = ["viewer", "editor", "admin", "owner"];

export function roleRank(role) {
  const index = ROLES.indexOf(role);
  return index < 0 ? -1 : index;
}

/** Everything generated screens need, loaded once per credential. */
export async function loadCatalog(credential) {
  const listed = (await request(credential, "GET", "/v3/crud/schema")).body.data;
  const schemas = {};
  await Promise.all(
    listed.map(async (entry) => {
      try {
        schemas[entry.name] = (await request(credential, "GET", `/v3/crud/${entry.name}/schema`)).body;
      } catch (problem) {
        if (problem.status !== 403) throw problem; // a type this role may not read is left out
      }
    }),
  );
  const index = listed
    .filter((entry) => schemas[entry.name])
    .map((entry) => ({ ...entry, children: (entry.children || []).filter((child) => schemas[child]) }));
  for (const schema of Object.values(schemas)) {
    const x = schema["x-aether"];
    if (x && x.children) x.children = x.children.filter((child) => schemas[child]);
  }
  const openapi = (await request(null, "GET", "/openapi.json")).body;
  const uploads = {};
  for (const [path, item] of Object.entries(openapi.paths || {})) {
    const match = /^\/v3\/action\/([a-z0-9_]+)\/\{[a-z0-9_]+\}\/upload$/.exec(path);
    if (match && item.post) uploads[match[1]] = true;
  }
  const role = await findRole(credential, index, schemas);
  return { index, schemas, uploads, role };
}

/** The caller's role: the token's claim, else (an API key) what write probes reveal.

A write whose body is `[]` is refused for the role (403) before the body is looked at (422),
so a probe never writes. Types offering create are probed with a POST; the others (such as
`account`, owner-only) with a PATCH of one object the caller can read.
*/
async function findRole(credential, index, schemas) {
  if (credential.kind === "bearer") return jwtClaims(credential.value).role || "viewer";
  let rank = 0;
  const allowed = async (method, path) => {
    try {
      await request(credential, method, path, { body: [] });
    } catch (problem) {
      return problem.status === 422;
    }
    return false;
  };
  const entries = [...index].sort((a, b) => roleRank(xa(schemas[a.name]).write_role) - roleRank(xa(schemas[b.name]).write_role));
  for (const entry of entries) {
    const x = xa(schemas[entry.name]);
    const needed = roleRank(x.write_role);
    if (needed <= rank) continue;
    if (x.create) {
      if (await allowed("POST", `/v3/crud/${entry.name}`)) rank = needed;
    } else if (x.update) {
      try {
        const { body } = await request(credential, "GET", `/v3/crud/${entry.name}`, { query: { limit: 1, fields: "id" } });
        if (body.data.length && (await allowed("PATCH", `/v3/crud/${entry.name}/${body.data[0].id}`))) rank = needed;
      } catch {
        // unreadable: says nothing about writing
      }
    }
  }
  return ROLES[rank];
}

export function xa(schema) {
  return (schema && schema["x-aether"]) || {};
}

export function canWrite(catalog, type) {
  return roleRank(catalog.role) >= roleRank(xa(catalog.schemas[type]).write_role || "editor");
}

/** The field naming an object for people: the first plain text field a search can match. */
export function labelField(schema) {
  const x = xa(schema);
  for (const [name, prop] of Object.entries(schema.properties || {})) {
    if (name === "id" || name.endsWith("_id") || prop.readOnly || prop.format) continue;
    const types = [].concat(prop.type || []);
    if (types.includes("string") && !prop.enum && (x.operators?.[name] || []).includes("_icontains")) return name;
  }
  return null;
}

/** A short label for an object: its label field, else its id. */
export function labelOf(schema, item) {
  const field = labelField(schema);
  return (field && item?.[field]) || item?.id || "";
}

/** Reference fields of a type: `{field: type}`, the parent's field included. */
export function referenceFields(schema) {
  const x = xa(schema);
  const out = {};
  for (const ref of x.references || []) out[ref.field] = ref.type;
  if (x.parent) out[x.parent.field] = x.parent.type;
  return out;
}

export function titleOf(catalog, type) {
  return catalog.schemas[type]?.title || type;
}
