"""Generated msgspec types per object type, and the write validation built on them.

Each public field gets one msgspec type carrying its constraints (length, pattern, range,
enum, timezone-aware datetimes, embedded JSON shapes). A body is decoded as an object of raw
JSON values and each value is decoded with its field's type, so every bad field is reported
with its own path instead of stopping at the first. The JSON Schema (`jsonschema.py`) is
generated from the same descriptors, so the two cannot disagree.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
import zoneinfo
from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any, Literal

import msgspec

from registry.descriptors import PUBLIC_ID_PATTERN, FieldInfo, ObjectType
from registry.hints import MAX_ERRORS, did_you_mean

EMAIL_PATTERN = r"^[^@\s\x00-\x1f]{1,64}@[^@\s\x00-\x1f]+\.[^@\s\x00-\x1f]+$"
_INT64 = (-(2**63), 2**63 - 1)
#: RFC 3339 date-time as JSON text, offset required (what JSON Schema's date-time means).
RFC3339_JSON = re.compile(
    rb'^\s*"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})"\s*$'
)
#: JSON columns nest at most this deep (MariaDB's JSON_VALID refuses 32 levels).
MAX_JSON_DEPTH = 31


class FieldError(msgspec.Struct, frozen=True):
    path: str
    message: str


class BodyError(Exception):
    """The body is not a JSON object (or not JSON): `path` is empty or names the body."""

    def __init__(self, message: str, *, malformed: bool) -> None:
        super().__init__(message)
        self.message = message
        self.malformed = malformed


def python_pattern(pattern: str) -> str:
    """The ECMA-262 `pattern` for Python's `re.search`: a final `$` becomes `\\Z`.

    In Python `$` also matches before a trailing newline; in ECMA-262 (and JSON Schema)
    it does not, so `"GALA\\n"` must not pass `^[A-Z]+$`.
    """
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        return pattern[:-1] + "\\Z"
    return pattern


def _meta(field: FieldInfo) -> msgspec.Meta | None:
    kwargs: dict[str, Any] = {}
    if field.kind in ("string",):
        if field.max_length is not None:
            kwargs["max_length"] = field.max_length
        if field.min_length is not None:
            kwargs["min_length"] = field.min_length
        if field.pattern:
            kwargs["pattern"] = python_pattern(field.pattern)
        elif field.format == "email":
            kwargs["pattern"] = python_pattern(EMAIL_PATTERN)
    if field.kind in ("integer", "number"):
        if field.minimum is not None:
            kwargs["ge"] = field.minimum
        if field.maximum is not None:
            kwargs["le"] = field.maximum
        if field.exclusive_minimum is not None:
            kwargs["gt"] = field.exclusive_minimum
    if field.kind == "datetime":
        kwargs["tz"] = True
    return msgspec.Meta(**kwargs) if kwargs else None


def schema_type(schema: Mapping[str, Any], name: str = "Value") -> Any:
    """A msgspec type for the JSON Schema subset models use in `info["json_schema"]`."""
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        for prop, sub in props.items():
            sub_type = schema_type(sub, f"{name}_{prop}")
            if prop in required:
                fields.append((prop, sub_type))
            else:
                fields.append((prop, sub_type | msgspec.UnsetType, msgspec.UNSET))
        return msgspec.defstruct(
            name, fields, forbid_unknown_fields=schema.get("additionalProperties") is False
        )
    if kind == "array":
        item = schema_type(schema.get("items", {}), f"{name}_item")
        meta = {"max_length": schema["maxItems"]} if "maxItems" in schema else {}
        return Annotated[list[item], msgspec.Meta(**meta)] if meta else list[item]  # type: ignore[valid-type]
    meta_map = {
        "maxLength": "max_length",
        "minLength": "min_length",
        "pattern": "pattern",
        "minimum": "ge",
        "maximum": "le",
        "exclusiveMinimum": "gt",
    }
    kwargs = {meta_map[k]: v for k, v in schema.items() if k in meta_map}
    if "pattern" in kwargs:
        kwargs["pattern"] = python_pattern(kwargs["pattern"])
    base: Any = {"string": str, "number": float, "integer": int, "boolean": bool}.get(
        str(kind), Any
    )
    return Annotated[base, msgspec.Meta(**kwargs)] if kwargs else base


def field_type(field: FieldInfo) -> Any:
    """The msgspec type a written value of `field` must decode as (None allowed if nullable)."""
    base: Any
    if field.kind in ("id", "reference"):
        base = Annotated[str, msgspec.Meta(pattern=python_pattern(PUBLIC_ID_PATTERN))]
    elif field.kind == "enum":
        base = Literal[tuple(field.enum or ())]
    elif field.kind == "string":
        base = str
    elif field.kind == "integer":
        base = int
    elif field.kind == "number":
        base = float
    elif field.kind == "decimal":
        base = decimal.Decimal
    elif field.kind == "boolean":
        base = bool
    elif field.kind == "datetime":
        base = dt.datetime
    elif field.kind == "date":
        base = dt.date
    elif field.kind == "object":
        base = (
            schema_type(field.json_schema, f"{field.name}_shape")
            if field.json_schema
            else dict[str, Any]
        )
    else:  # array
        item = {"string": str, "integer": int, "number": float}.get(field.items or "", Any)
        base = list[item]  # type: ignore[valid-type]
    meta = _meta(field)
    if meta is not None:
        base = Annotated[base, meta]
    return base | None if field.nullable else base


def _extra_checks(field: FieldInfo, value: Any) -> str | None:
    """Rules msgspec types cannot say: finite numbers, no NUL, 64-bit integers, time zones."""
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not _INT64[0] <= value <= _INT64[1]
    ):
        return "integer out of range"
    if isinstance(value, str):
        if "\x00" in value:
            return "must not contain NUL characters"
        if field.format == "iana-timezone" and not is_time_zone(value):
            return "must be an IANA time zone name such as Europe/Paris or UTC"
    if isinstance(value, list | dict) and _contains_nul(value):
        return "must not contain NUL characters"
    if isinstance(value, list | dict) and _depth(value) > MAX_JSON_DEPTH:
        return f"must not nest deeper than {MAX_JSON_DEPTH} levels"
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        try:  # year 1 at +01:00 or year 9999 at -01:00 has no UTC equivalent to store
            value.astimezone(dt.UTC)
        except OverflowError:
            return "datetime out of range once converted to UTC"
    return None


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_contains_nul(v) for v in value)
    if isinstance(value, dict):
        return any(_contains_nul(k) or _contains_nul(v) for k, v in value.items())
    return False


@cache
def time_zone_names() -> tuple[str, ...]:
    """The IANA time zone names this host knows, sorted: what the JSON Schema `enum` lists
    for an `iana-timezone` field, and exactly what a write accepts."""
    return tuple(sorted(zoneinfo.available_timezones()))


@cache
def _time_zone_set() -> frozenset[str]:
    return frozenset(time_zone_names())


def is_time_zone(name: str) -> bool:
    return name in _time_zone_set()


def _check_syntax(body: bytes) -> None:
    """Raise `BodyError(malformed=True)` when `body` is not JSON text at all."""
    try:
        msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise BodyError(f"malformed JSON: {exc}", malformed=True) from exc


def split_validation_error(exc: msgspec.ValidationError) -> tuple[str, str]:
    """Split msgspec's `... - at `$.x[1]`` into (message, sub-path `.x[1]`)."""
    text = str(exc)
    sub = ""
    if " - at `$" in text:
        text, _, at = text.partition(" - at `$")
        sub = at.rstrip("`")
    return text, sub


class WriteDecoder:
    """Validates create and update bodies of one object type.

    >>> # decoder = WriteDecoder(obj); values = decoder.create(b'{"name": "Gala"}')
    """

    def __init__(self, obj: ObjectType) -> None:
        self.obj = obj
        self.fields = {f.name: f for f in obj.fields}
        self.types = {f.name: field_type(f) for f in obj.fields if not f.read_only}
        self._decoders = {name: msgspec.json.Decoder(type_) for name, type_ in self.types.items()}
        self._writable = sorted(f.name for f in obj.fields if not f.read_only)

    def decode_object(self, body: bytes) -> dict[str, msgspec.Raw]:
        try:
            raw = msgspec.json.decode(body, type=dict[str, msgspec.Raw])
        except msgspec.ValidationError as exc:
            # `[1, 2` fails as "not an object" before its end is read: syntax comes first.
            _check_syntax(body)
            raise BodyError(f"the body must be a JSON object ({exc})", malformed=False) from exc
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
            raise BodyError(f"malformed JSON: {exc}", malformed=True) from exc
        return raw

    def _decode_fields(
        self, raw: Mapping[str, msgspec.Raw], *, creating: bool, errors: list[FieldError]
    ) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, value in raw.items():
            if len(errors) >= MAX_ERRORS:
                break  # nobody reads past the cap: stop before any more work
            field = self.fields.get(name)
            if field is None:
                hint = did_you_mean(name, self._writable)
                errors.append(FieldError(name[:100], "unknown field" + hint))
                continue
            if field.read_only:
                errors.append(FieldError(name, "read-only field: it cannot be written"))
                continue
            if field.write_once and not creating:
                errors.append(FieldError(name, "can only be set when the object is created"))
                continue
            text = bytes(value)
            if (
                field.kind == "datetime"
                and text.strip() != b"null"
                and not RFC3339_JSON.match(text)
            ):
                errors.append(FieldError(name, "expected an RFC 3339 date-time with an offset"))
                continue
            try:
                decoded = self._decoders[name].decode(value)
            except msgspec.ValidationError as exc:
                integral = self._integral(field, value)
                if integral is None:
                    message, sub = split_validation_error(exc)
                    errors.append(FieldError(name + sub, message))
                    continue
                decoded = integral
            except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
                # Raw keeps a value's bytes unchecked, so bad UTF-8 only shows up here.
                errors.append(FieldError(name, f"malformed value: {exc}"))
                continue
            problem = _extra_checks(field, decoded)
            if problem:
                errors.append(FieldError(name, problem))
                continue
            if isinstance(decoded, msgspec.Struct):
                decoded = msgspec.to_builtins(decoded)
            values[name] = decoded
        return values

    def _integral(self, field: FieldInfo, value: msgspec.Raw) -> int | None:
        """`10.0` for an integer field, as JSON Schema's `integer` allows; None otherwise."""
        if field.kind != "integer":
            return None
        try:
            number = msgspec.json.decode(value, type=float)
            if not number.is_integer():
                return None
            checked: int = self._decoders[field.name].decode(str(int(number)).encode())
        except (msgspec.ValidationError, msgspec.DecodeError, OverflowError, ValueError):
            return None
        return checked

    def create(
        self, raw: Mapping[str, msgspec.Raw], *, supplied: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Checked values of a create body; `supplied` are values the URL already fixes.

        Fills defaults, reports missing required fields and cross-field rules. Raises
        `WriteErrors` with every problem found.
        """
        errors: list[FieldError] = []
        values = self._decode_fields(raw, creating=True, errors=errors)
        for name, value in supplied.items():
            if name in values and values[name] != value:
                errors.append(FieldError(name, "does not match the parent in the URL"))
            values[name] = value
        for field in self.obj.fields:
            if field.read_only or field.name in values:
                continue
            if field.default is not msgspec.UNSET:
                values[field.name] = msgspec.json.decode(msgspec.json.encode(field.default))
            elif field.required and not any(e.path == field.name for e in errors):
                errors.append(FieldError(field.name, "required field is missing"))
        if not errors:
            errors.extend(self._cross_check(values))
        if errors:
            raise WriteErrors(errors)
        return values

    def update(
        self, raw: Mapping[str, msgspec.Raw], *, current: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Checked values of a partial update, cross-checked against the stored state."""
        errors: list[FieldError] = []
        values = self._decode_fields(raw, creating=False, errors=errors)
        for name, value in values.items():
            field = self.fields[name]
            if value is None and field.required:
                errors.append(FieldError(name, "cannot be null"))
        if not errors:
            errors.extend(self._cross_check({**current, **values}))
        if errors:
            raise WriteErrors(errors)
        return values

    def _cross_check(self, values: Mapping[str, Any]) -> list[FieldError]:
        if self.obj.validator is None:
            return []
        return [FieldError(path, msg) for path, msg in self.obj.validator(values).items()]


class WriteErrors(Exception):
    """The problems of one write body, at most `MAX_ERRORS` of them."""

    def __init__(self, errors: list[FieldError]) -> None:
        errors = errors[:MAX_ERRORS]
        super().__init__("; ".join(f"{e.path}: {e.message}" for e in errors[:5]))
        self.errors = errors
