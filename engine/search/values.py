"""Filter values checked against a field's kind and converted to Python values ready to bind.

Each converter returns the converted value or raises `ValueError` with the message the
client sees; the parser adds the path. Nothing here knows about SQL or the registry.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
from typing import Any

from registry.descriptors import FieldInfo, is_public_id
from registry.searchschema import MAX_TEXT_LENGTH

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


# RFC 3339 date-time: an offset is required (naive input is refused, SPEC 2).
_DATETIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})"
)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MAX_DECIMAL_DIGITS = 65  # MariaDB's DECIMAL precision cap; larger cannot be stored anyway


def check_text(value: object) -> str:
    """A string that every database can bind: no NUL (PostgreSQL refuses it) and no lone
    surrogates (not encodable as UTF-8)."""
    if not isinstance(value, str):
        raise ValueError("expected a string")
    if len(value) > MAX_TEXT_LENGTH:
        raise ValueError(f"at most {MAX_TEXT_LENGTH} characters")
    if "\x00" in value:
        raise ValueError("must not contain the NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


def parse_datetime(value: object) -> dt.datetime:
    """An RFC 3339 date-time with an offset, as an aware UTC datetime.

    >>> parse_datetime("2026-01-01T10:00:00+02:00")
    datetime.datetime(2026, 1, 1, 8, 0, tzinfo=datetime.timezone.utc)
    """
    if not isinstance(value, str):
        raise ValueError("expected an RFC 3339 date-time string")
    m = _DATETIME_RE.fullmatch(value)
    if m is None:
        if _DATETIME_RE.fullmatch(value + "Z"):
            raise ValueError("a date-time needs an offset (e.g. 'Z' or '+02:00')")
        raise ValueError("expected an RFC 3339 date-time such as 2026-01-01T09:00:00Z")
    year, month, day, hour, minute, second, fraction, offset = m.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        if offset in ("Z", "z"):
            tz = dt.UTC
        else:
            sign = -1 if offset[0] == "-" else 1
            hours, minutes = int(offset[1:3]), int(offset[4:6])
            if hours > 23 or minutes > 59:
                raise ValueError("offset out of range")
            tz = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
        parsed = dt.datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tz
        )
        return parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        raise ValueError("not a valid date-time (out of range)") from None


def parse_date(value: object) -> dt.date:
    if not isinstance(value, str) or _DATE_RE.fullmatch(value) is None:
        raise ValueError("expected a date such as 2026-01-31")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError("not a valid date") from None


def parse_integer(value: object) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON Schema's `integer` includes 10.0, as a write does
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected an integer")
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError("integer out of the signed 64-bit range")
    return value


def parse_number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected a number")
    try:  # 10**20 is the number 1e20, as JSON Schema sees it
        result = float(value)
    except OverflowError:
        raise ValueError("expected a finite number") from None
    if not math.isfinite(result):
        raise ValueError("expected a finite number")
    return result


def parse_decimal(value: object) -> decimal.Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("expected a decimal string")
    try:
        result = decimal.Decimal(str(value))
    except (decimal.InvalidOperation, ValueError):
        raise ValueError("expected a decimal string such as '12.50'") from None
    if not result.is_finite() or len(result.as_tuple().digits) > _MAX_DECIMAL_DIGITS:
        raise ValueError("expected a finite decimal of at most 65 digits")
    if abs(result.adjusted()) > _MAX_DECIMAL_DIGITS:
        raise ValueError("decimal out of range")
    return result


def parse_scalar(field: FieldInfo, value: object) -> Any:
    """`value` as a Python value of `field`'s kind; `ValueError` with the message otherwise."""
    if value is None:
        raise ValueError("must not be null (use _is_null)")
    kind = field.kind
    if kind in ("id", "reference"):
        if not isinstance(value, str):
            raise ValueError("expected a public id string")
        # Any other string names nothing: it must match no row and say nothing more.
        return value if is_public_id(value) else ""
    if kind == "string":
        return check_text(value)
    if kind == "enum":
        allowed = field.enum or ()
        if not isinstance(value, str) or value not in allowed:
            raise ValueError("expected one of: " + ", ".join(allowed))
        return value
    if kind == "integer":
        return parse_integer(value)
    if kind == "number":
        return parse_number(value)
    if kind == "decimal":
        return parse_decimal(value)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if kind == "datetime":
        return parse_datetime(value)
    if kind == "date":
        return parse_date(value)
    raise ValueError(f"a {kind} field cannot be compared with a value")
