"""The HTTP `Range` header (RFC 9110 §14) reduced to what blob downloads serve: one range.

Choices, documented for clients: a multi-range, a non-`bytes` unit or a malformed header is
ignored (the full 200 is sent; RFC 9110 allows a server to ignore Range). A reversed range
(`bytes=5-2`) is answered 416. The header is capped at `MAX_RANGE_HEADER` characters, so a
header of 1,000 ranges costs one length check.
"""

from __future__ import annotations

import re

from engine.errors import RangeNotSatisfiableError

__all__ = ["MAX_RANGE_HEADER", "content_range", "parse_range"]

MAX_RANGE_HEADER = 200
# Positions over 18 digits exceed any file we could store; treat them as malformed input.
_SPEC = re.compile(r"[ \t]*([0-9]{0,18})[ \t]*-[ \t]*([0-9]{0,18})[ \t]*")


def _unsatisfiable(size: int) -> RangeNotSatisfiableError:
    return RangeNotSatisfiableError(
        f"The range does not overlap the {size}-byte content",
        headers={"Content-Range": f"bytes */{size}"},
    )


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """`(start, end)`, inclusive, for a single satisfiable byte range; None to send it all.

    Raises RangeNotSatisfiableError (carrying `Content-Range: bytes */size`) when the range
    starts at or past the end, is reversed, or is a zero-length suffix.

    >>> parse_range("bytes=0-99", 1000)
    (0, 99)
    >>> parse_range("bytes=-5000", 1000)
    (0, 999)
    >>> parse_range("bytes=0-1,5-6", 1000) is None
    True
    """
    if not header or len(header) > MAX_RANGE_HEADER:
        return None
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    match = _SPEC.fullmatch(spec)
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - suffix), size - 1
    start = int(first)
    end = size - 1 if not last else int(last)
    if last and end < start:
        raise _unsatisfiable(size)
    if start >= size:
        raise _unsatisfiable(size)
    return start, min(end, size - 1)


def content_range(start: int, end: int, size: int) -> str:
    """The `Content-Range` value of a 206 for inclusive `start..end` of `size` bytes."""
    return f"bytes {start}-{end}/{size}"
