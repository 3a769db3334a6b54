// The filter builder: and/or groups of conditions; each field offers exactly the operators
// its schema's `x-aether.operators` lists.

import { newCondition, newGroup, updateNode } from "./filters.js";
import { xa } from "./schemas.js";

const OPERATOR_LABELS = {
  _eq: "=", _neq: "≠", _gt: ">", _gte: "≥", _lt: "<", _lte: "≤", _in: "in", _nin: "not in",
  _between: "between", _like: "like", _ilike: "ilike", _contains: "contains",
  _icontains: "contains (any case)", _startswith: "starts with", _endswith: "ends with", _is_null: "is null",
};

function ConditionRow({ schema, condition, onChange, onRemove }) {
  const operators = xa(schema).operators || {};
  const fieldOps = operators[condition.field] || [];
  const prop = (schema.properties || {})[condition.field] || {};
  const set = (patch) => onChange({ ...condition, ...patch });
  const enumValues = (prop.enum || []).filter((v) => v !== null);
  const single = (name, value, key) =>
    enumValues.length && !["_in", "_nin"].includes(condition.op) ? (
      <select className={`filter-value ${name}`} value={value} onChange={(e) => set({ [key]: e.target.value })}>
        <option value="" />
        {enumValues.map((v) => (
          <option key={v} value={v}>
            {v}
          </option>
        ))}
      </select>
    ) : (
      <input className={`filter-value ${name}`} value={value} placeholder={["_in", "_nin"].includes(condition.op) ? "a, b, c" : ""} onChange={(e) => set({ [key]: e.target.value })} />
    );
  return (
    <div className="filter-row">
      <select className="filter-field" value={condition.field} onChange={(e) => set({ field: e.target.value, op: (operators[e.target.value] || [])[0] || "" })}>
        <option value="">field…</option>
        {Object.keys(operators).map((name) => (
          <option key={name} value={name}>
            {schema.properties?.[name]?.title || name}
          </option>
        ))}
      </select>
      <select className="filter-op" value={condition.op} onChange={(e) => set({ op: e.target.value })}>
        {fieldOps.map((op) => (
          <option key={op} value={op}>
            {OPERATOR_LABELS[op] || op}
          </option>
        ))}
      </select>
      {condition.op === "_is_null" ? (
        <select className="filter-value" value={condition.value || "true"} onChange={(e) => set({ value: e.target.value })}>
          <option value="true">yes</option>
          <option value="false">no</option>
        </select>
      ) : (
        single("first", condition.value, "value")
      )}
      {condition.op === "_between" ? single("second", condition.value2, "value2") : null}
      <button type="button" className="remove-condition" onClick={onRemove} aria-label="remove condition">
        ×
      </button>
    </div>
  );
}

function Group({ schema, group, root, onTree }) {
  const change = (id, update) => onTree((tree) => updateNode(tree, id, update));
  return (
    <div className={`filter-group ${group.mode}`}>
      <div className="group-head">
        <label>
          match
          <select className="group-mode" value={group.mode} onChange={(e) => change(group.id, (g) => ({ ...g, mode: e.target.value }))}>
            <option value="and">all (and)</option>
            <option value="or">any (or)</option>
          </select>
        </label>
        <button type="button" className="add-condition" onClick={() => change(group.id, (g) => ({ ...g, items: [...g.items, newCondition()] }))}>
          + condition
        </button>
        <button type="button" className="add-group" onClick={() => change(group.id, (g) => ({ ...g, items: [...g.items, newGroup(g.mode === "and" ? "or" : "and")] }))}>
          + group
        </button>
        {root ? null : (
          <button type="button" className="remove-group" onClick={() => change(group.id, () => null)}>
            remove group
          </button>
        )}
      </div>
      {group.items.map((item) =>
        item.kind === "group" ? (
          <Group key={item.id} schema={schema} group={item} onTree={onTree} />
        ) : (
          <ConditionRow key={item.id} schema={schema} condition={item} onChange={(next) => change(item.id, () => next)} onRemove={() => change(item.id, () => null)} />
        ),
      )}
    </div>
  );
}

export function FilterBuilder({ schema, tree, onChange, onApply, onClear }) {
  const onTree = (update) => onChange(update(tree));
  return (
    <details className="filter" open={tree.items.length > 0}>
      <summary>Filter</summary>
      <Group schema={schema} group={tree} root onTree={onTree} />
      <div className="filter-actions">
        <button type="button" className="apply-filter primary" onClick={onApply}>
          Search
        </button>
        <button type="button" className="clear-filter" onClick={onClear}>
          Clear
        </button>
      </div>
    </details>
  );
}
