"""parse_range: RELIABILITY B7 cases and a property against a small oracle."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import RangeNotSatisfiableError
from engine.ranges import content_range, parse_range


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-99", 1000, (0, 99)),
        ("bytes=0-0", 1, (0, 0)),
        ("bytes=500-", 1000, (500, 999)),
        ("bytes=-100", 1000, (900, 999)),
        ("bytes=-5000", 1000, (0, 999)),  # suffix larger than the file: clamped
        ("bytes=900-5000", 1000, (900, 999)),  # end past the file: clamped
        ("BYTES=1-2", 10, (1, 2)),
        ("bytes = 1 - 2 ", 10, (1, 2)),
        ("bytes=999-999", 1000, (999, 999)),
    ],
)
def test_satisfiable(header: str, size: int, expected: tuple[int, int]) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=1000-", 1000),  # bytes=size-
        ("bytes=1000-1001", 1000),
        ("bytes=5-2", 1000),  # reversed: the documented choice is 416
        ("bytes=-0", 1000),
        ("bytes=0-", 0),
        ("bytes=-5", 0),
    ],
)
def test_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiableError) as info:
        parse_range(header, size)
    assert info.value.status == 416
    assert info.value.headers == {"Content-Range": f"bytes */{size}"}


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes=0-1,5-6",  # multi-range: served whole
        "bytes=0-1,",
        "items=0-5",
        "bytes",
        "bytes=",
        "bytes=-",
        "bytes=a-b",
        "bytes=1-2-3",
        "bytes=0x10-20",
        "bytes=" + "9" * 30 + "-",
        "bytes=-1\x00",
        "bytes=\u0661-2",  # Arabic-Indic digit: not ASCII
    ],
)
def test_ignored(header: str | None) -> None:
    assert parse_range(header, 1000) is None


def test_a_thousand_ranges_is_cheap() -> None:
    header = "bytes=" + ",".join(f"{i}-{i}" for i in range(1000))
    began = time.perf_counter()
    for _ in range(100):
        assert parse_range(header, 10_000) is None
    assert time.perf_counter() - began < 0.1


def test_content_range() -> None:
    assert content_range(0, 99, 1000) == "bytes 0-99/1000"


def oracle(first: int | None, last: int | None, size: int) -> tuple[int, int] | str:
    """RFC 9110 §14.1.2 written out plainly; 'unsat' marks a 416."""
    if first is None:
        assert last is not None
        if last == 0 or size == 0:
            return "unsat"
        return (max(0, size - last), size - 1)
    if last is not None and last < first:
        return "unsat"
    if first >= size:
        return "unsat"
    return (first, size - 1 if last is None else min(last, size - 1))


positions = st.one_of(st.none(), st.integers(min_value=0, max_value=10**6))


@given(positions, positions, st.integers(min_value=0, max_value=10**6))
def test_matches_oracle(first: int | None, last: int | None, size: int) -> None:
    header = f"bytes={'' if first is None else first}-{'' if last is None else last}"
    if first is None and last is None:
        assert parse_range(header, size) is None
        return
    expected = oracle(first, last, size)
    if expected == "unsat":
        with pytest.raises(RangeNotSatisfiableError):
            parse_range(header, size)
    else:
        result = parse_range(header, size)
        assert result == expected
        start, end = result
        assert 0 <= start <= end < size


@given(st.text(max_size=300), st.integers(min_value=0, max_value=10**9))
def test_any_header_is_none_a_range_or_416(header: str, size: int) -> None:
    try:
        result = parse_range(header, size)
    except RangeNotSatisfiableError:
        return
    if result is not None:
        start, end = result
        assert 0 <= start <= end < size
