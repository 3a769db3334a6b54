"""API key format, hashing, header extraction and the last-used throttle."""

from __future__ import annotations

import contextlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.auth.api_keys import (
    MAX_KEY_LENGTH,
    Credentials,
    extract_credentials,
    generate_api_key,
    hash_secret,
    parse_api_key,
    verify_secret,
)
from engine.errors import UnauthorizedError

KEY_SHAPE = re.compile(r"ae_[a-z2-7]{12}_[a-z2-7]{59}")


def test_generated_key_shape_and_round_trip() -> None:
    generated = generate_api_key()
    assert KEY_SHAPE.fullmatch(generated.key)
    parsed = parse_api_key(generated.key)
    assert parsed is not None
    prefix, secret = parsed
    assert prefix == generated.prefix
    assert generated.key == f"ae_{prefix}_{secret}"
    assert generated.secret_hash == hash_secret(secret)
    assert len(generated.secret_hash) == 64
    assert verify_secret(secret, generated.secret_hash)
    assert generated.key not in repr(generated)
    assert generated.secret_hash not in repr(generated)


def test_keys_are_unique() -> None:
    keys = {generate_api_key().key for _ in range(200)}
    prefixes = {k.split("_")[1] for k in keys}
    assert len(keys) == len(prefixes) == 200


@settings(max_examples=50)
@given(st.data())
def test_round_trip_and_any_single_change_is_refused(data: st.DataObject) -> None:
    generated = generate_api_key()
    assert parse_api_key(generated.key) is not None
    position = data.draw(st.integers(min_value=3, max_value=len(generated.key) - 1))
    if generated.key[position] == "_":
        return
    replacement = data.draw(st.sampled_from("abcdefghijklmnopqrstuvwxyz234567"))
    changed = generated.key[:position] + replacement + generated.key[position + 1 :]
    if changed == generated.key:
        return
    parsed = parse_api_key(changed)
    # The CRC32 catches every single-character change.
    assert parsed is None


@given(st.text(max_size=300))
def test_parse_never_raises_and_accepts_only_the_shape(text: str) -> None:
    parsed = parse_api_key(text)
    if parsed is not None:
        assert KEY_SHAPE.fullmatch(text)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "ae__",
        "ae_abc_def",
        "AE_" + generate_api_key().key[3:],
        generate_api_key().key.upper(),
        generate_api_key().key + "a",
        generate_api_key().key[:-1],
        " " + generate_api_key().key,
        "ae_" + "a" * MAX_KEY_LENGTH,
        "ghp_" + "a" * 40,
    ],
    ids=lambda key: f"len{len(key)}",  # random keys: ids must still match across xdist workers
)
def test_malformed_keys_are_refused(key: str) -> None:
    assert parse_api_key(key) is None


@given(st.text(max_size=80), st.text(max_size=80))
def test_verify_secret_matches_only_its_own_hash(secret: str, other: str) -> None:
    assert verify_secret(secret, hash_secret(secret))
    assert verify_secret(other, hash_secret(secret)) == (other == secret)


def test_verify_secret_tolerates_a_corrupt_stored_hash() -> None:
    assert not verify_secret("s", "é" * 64)
    assert not verify_secret("s", "")


KEY = generate_api_key().key


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Authorization": "Bearer a.b.c"}, Credentials("jwt", "a.b.c")),
        ({"authorization": "bearer  a.b.c "}, Credentials("jwt", "a.b.c")),
        ({"Authorization": f"ApiKey {KEY}"}, Credentials("api_key", KEY)),
        ({"X-API-Key": KEY}, Credentials("api_key", KEY)),
        ({"Authorization": f"ApiKey {KEY}", "x-api-key": KEY}, Credentials("api_key", KEY)),
        ({"Accept": "application/json"}, None),
    ],
)
def test_extract_credentials(headers: dict[str, str], expected: Credentials | None) -> None:
    assert extract_credentials(headers) == expected


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer a b"},
        {"Authorization": "Bearer a.b.c{}"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Token abc"},
        {"Authorization": "ApiKey"},
        {"Authorization": "Bearer " + "a" * 9000},
        {"Authorization": "Bearer a.b.c", "X-API-Key": KEY},
        {"Authorization": f"ApiKey {KEY}", "X-API-Key": KEY + "x"},
        {"X-API-Key": ""},
        {"X-API-Key": "k" * 500},
    ],
)
def test_extract_credentials_refuses_malformed_or_conflicting(headers: dict[str, str]) -> None:
    with pytest.raises(UnauthorizedError):
        extract_credentials(headers)


def test_extract_credentials_refuses_repeated_headers() -> None:
    with pytest.raises(UnauthorizedError):
        extract_credentials([("authorization", "Bearer a.b.c"), ("authorization", "Bearer d.e.f")])
    with pytest.raises(UnauthorizedError):
        extract_credentials([("x-api-key", KEY), ("x-api-key", KEY)])


def test_credentials_repr_hides_the_value() -> None:
    assert KEY not in repr(Credentials("api_key", KEY))


@given(st.dictionaries(st.sampled_from(["Authorization", "X-API-Key", "Other"]), st.text()))
def test_extract_credentials_only_raises_unauthorized(headers: dict[str, str]) -> None:
    with contextlib.suppress(UnauthorizedError):
        extract_credentials(headers)
