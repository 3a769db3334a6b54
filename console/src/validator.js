// A react-jsonschema-form validator on @cfworker/json-schema: it interprets schemas instead
// of compiling them to code (as Ajv does with `new Function`), so the console runs under a
// Content-Security-Policy without 'unsafe-eval'.

import { Validator } from "@cfworker/json-schema";
import { toErrorList, toErrorSchema } from "@rjsf/utils";

// Keywords that only report that something beneath them failed; the leaf error says what.
const WRAPPERS = new Set(["properties", "items", "prefixItems", "allOf", "$ref", "additionalItems", "unevaluatedProperties", "contains", "dependentSchemas", "then", "else", "if"]);

const cache = new Map();

function validatorFor(schema) {
  const key = JSON.stringify(schema);
  let validator = cache.get(key);
  if (!validator) {
    validator = new Validator(schema, "2020-12", false);
    cache.set(key, validator);
  }
  return validator;
}

function pointerToPath(pointer) {
  return pointer
    .replace(/^#\/?/, "")
    .split("/")
    .filter((part) => part !== "")
    .map((part) => decodeURIComponent(part).replace(/~1/g, "/").replace(/~0/g, "~"));
}

function toRjsfErrors(results) {
  const errors = [];
  for (const result of results) {
    if (WRAPPERS.has(result.keyword)) continue;
    const path = pointerToPath(result.instanceLocation);
    let message = result.error;
    if (result.keyword === "required") {
      const match = /property "([^"]+)"/.exec(result.error);
      if (match) path.push(match[1]);
      message = "is required";
    } else if (result.keyword === "additionalProperties" || result.keyword === "false") {
      message = "is not allowed";
    } else {
      message = message.replace(/^Instance /, "").replace(/^String "[^"]*" /, "");
    }
    const property = path.length ? "." + path.join(".") : "";
    errors.push({ name: result.keyword, property, message, params: {}, stack: `${property} ${message}`.trim(), schemaPath: result.keywordLocation });
  }
  return errors;
}

function clean(data) {
  // rjsf leaves `undefined` for emptied inputs; JSON never carries them.
  return data === undefined ? undefined : JSON.parse(JSON.stringify(data));
}

export const validator = {
  validateFormData(formData, schema, customValidate, transformErrors) {
    let errors = toRjsfErrors(validatorFor(schema).validate(clean(formData) ?? {}).errors);
    if (transformErrors) errors = transformErrors(errors);
    return { errors, errorSchema: toErrorSchema(errors) };
  },
  toErrorList(errorSchema, fieldPath) {
    return toErrorList(errorSchema, fieldPath);
  },
  isValid(schema, formData, rootSchema) {
    const full = rootSchema && rootSchema.$defs && !schema.$defs ? { ...schema, $defs: rootSchema.$defs } : schema;
    return validatorFor(full).validate(clean(formData)).valid;
  },
  rawValidation(schema, formData) {
    try {
      return { errors: validatorFor(schema).validate(clean(formData)).errors };
    } catch (validationError) {
      return { validationError };
    }
  },
  reset() {
    cache.clear();
  },
};
