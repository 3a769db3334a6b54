"""Keyset cursors: round trips, opacity, and 400 for anything altered, forged or foreign."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import BadRequestError
from engine.search.cursor import MAX_CURSOR_LENGTH, decode_cursor, encode_cursor

KEY = b"k" * 32
SIG = "3c8ca1fcd761f6f2068f52027e7b3d3d"

values = st.lists(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.datetimes(timezones=st.just(dt.UTC))
    | st.dates()
    | st.decimals(allow_nan=False, allow_infinity=False),
    max_size=6,
)


@settings(max_examples=200)
@given(values)
def test_round_trip(items: list[Any]) -> None:
    token = encode_cursor(items, sort_signature=SIG, key=KEY)
    back = decode_cursor(token, sort_signature=SIG, key=KEY)
    assert back == items
    assert [type(v) for v in back] == [type(v) for v in items]


def test_opaque() -> None:
    token = encode_cursor([123456789, "Gala"], sort_signature=SIG, key=KEY)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert b"123456789" not in raw and b"Gala" not in raw
    assert token != encode_cursor([123456789, "Gala"], sort_signature=SIG, key=KEY)


@pytest.mark.parametrize(
    "change",
    [
        {"sort_signature": "another-query"},
        {"key": b"x" * 32},
    ],
)
def test_another_query_or_key_is_refused(change: dict[str, Any]) -> None:
    token = encode_cursor([1, "a"], sort_signature=SIG, key=KEY)
    kwargs: dict[str, Any] = {"sort_signature": SIG, "key": KEY, **change}
    with pytest.raises(BadRequestError):
        decode_cursor(token, **kwargs)


def test_every_single_character_change_is_refused() -> None:
    token = encode_cursor([dt.datetime(2026, 1, 1, tzinfo=dt.UTC), 7], sort_signature=SIG, key=KEY)
    alphabet = "AbZ09-_"
    for i in range(len(token)):
        for ch in alphabet:
            if ch == token[i]:
                continue
            forged = token[:i] + ch + token[i + 1 :]
            try:
                decoded = decode_cursor(forged, sort_signature=SIG, key=KEY)
            except BadRequestError:
                continue
            # Only the unused low bits of the last base64 character may change harmlessly.
            assert i == len(token) - 1
            assert decoded == [dt.datetime(2026, 1, 1, tzinfo=dt.UTC), 7]
    with pytest.raises(BadRequestError):
        decode_cursor(token[:-1], sort_signature=SIG, key=KEY)
    with pytest.raises(BadRequestError):
        decode_cursor(token + "A", sort_signature=SIG, key=KEY)


@settings(max_examples=300)
@given(
    st.text(max_size=80)
    | st.binary(max_size=80).map(lambda b: base64.urlsafe_b64encode(b).decode())
)
def test_garbage_is_a_400(token: str) -> None:
    with pytest.raises(BadRequestError) as exc:
        decode_cursor(token, sort_signature=SIG, key=KEY)
    assert exc.value.status == 400 and "cursor" in exc.value.detail


def test_length_cap_and_types() -> None:
    for token in ("A" * (MAX_CURSOR_LENGTH + 1), "", 5, None):
        with pytest.raises(BadRequestError):
            decode_cursor(token, sort_signature=SIG, key=KEY)  # type: ignore[arg-type]
    assert decode_cursor(
        encode_cursor([decimal.Decimal("1.50")], sort_signature=SIG, key=KEY),
        sort_signature=SIG,
        key=KEY,
    ) == [decimal.Decimal("1.50")]
    with pytest.raises(ValueError):
        encode_cursor([1], sort_signature=SIG, key=b"short")


def test_a_cursor_is_aes_gcm_bound_to_its_query() -> None:
    """Version byte, 96-bit nonce, AES-GCM ciphertext and 128-bit tag; the version and the
    query signature are the associated data, so neither can be swapped."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    token = encode_cursor([7, "Gala"], sort_signature=SIG, key=KEY)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    version, nonce, sealed = raw[:1], raw[1:13], raw[13:]
    plain = AESGCM(KEY).decrypt(nonce, sealed, version + SIG.encode())
    assert plain == b'[7,"Gala"]'


@pytest.mark.parametrize("size", [15, 17, 31, 33, 64])
def test_the_key_must_be_an_aes_key(size: int) -> None:
    with pytest.raises(ValueError):
        encode_cursor([1], sort_signature=SIG, key=b"k" * size)
