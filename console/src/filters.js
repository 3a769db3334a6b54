// The filter builder's model: groups (and/or) of conditions and groups, turned into the
// search grammar's filter object. Pure functions, so they are easy to reason about.

let counter = 0;
export const newId = () => `n${++counter}`;

export function newCondition(field = "", op = "") {
  return { id: newId(), kind: "condition", field, op, value: "", value2: "" };
}

export function newGroup(mode = "and") {
  return { id: newId(), kind: "group", mode, items: [] };
}

function scalarType(prop) {
  const types = [].concat(prop?.type || "string").filter((t) => t !== "null");
  return types[0] || "string";
}

/** A text typed into the builder as the JSON value the field takes. */
export function convertValue(prop, text) {
  const type = scalarType(prop);
  const trimmed = String(text).trim();
  if (type === "integer" || type === "number") {
    const number = Number(trimmed);
    return trimmed === "" || Number.isNaN(number) ? trimmed : number;
  }
  if (type === "boolean") return trimmed === "true";
  return text;
}

function conditionFilter(condition, properties) {
  const { field, op } = condition;
  if (!field || !op) return null;
  const prop = properties[field];
  let value;
  if (op === "_is_null") value = condition.value !== "false";
  else if (op === "_in" || op === "_nin") {
    value = String(condition.value)
      .split(",")
      .map((part) => part.trim())
      .filter((part) => part !== "")
      .map((part) => convertValue(prop, part));
  } else if (op === "_between") value = [convertValue(prop, condition.value), convertValue(prop, condition.value2)];
  else value = convertValue(prop, condition.value);
  return { [field]: { [op]: value } };
}

/** The search filter for a group, or null when it holds no complete condition. */
export function groupFilter(group, properties) {
  const parts = [];
  for (const item of group.items) {
    const part = item.kind === "group" ? groupFilter(item, properties) : conditionFilter(item, properties);
    if (part) parts.push(part);
  }
  if (!parts.length) return null;
  if (parts.length === 1) return parts[0];
  return { [group.mode === "or" ? "_or" : "_and"]: parts };
}

/** `group` with the node `id` replaced by `update(node)` (or removed when it returns null). */
export function updateNode(group, id, update) {
  if (group.id === id) return update(group);
  const items = [];
  for (const item of group.items) {
    const next = item.id === id ? update(item) : item.kind === "group" ? updateNode(item, id, update) : item;
    if (next) items.push(next);
  }
  return { ...group, items };
}
