"""JWT verification: the attack table of RELIABILITY S7, happy paths, key configuration."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc.jwk import ECKey, Key, OctKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from engine.auth.jwt import TOKEN_ERROR_DETAIL, JwtVerifier
from engine.errors import UnauthorizedError
from engine.settings import Secret, Settings, SettingsError, resolve_jwt_key

NOW = 1_700_000_000
SECRET = "a-test-hmac-secret-that-is-long-enough-0123456789"
ISSUER = "https://issuer.example"
AUDIENCE = "aether-api"

RSA = RSAKey.generate_key(2048, private=True)
RSA_ATTACKER = RSAKey.generate_key(2048, private=True)
EC_OLD = ECKey.generate_key("P-256", parameters={"kid": "ec-2024"}, private=True)
EC_NEW = ECKey.generate_key("P-256", parameters={"kid": "ec-2025"}, private=True)
ED = OKPKey.generate_key("Ed25519", parameters={"kid": "ed-1"}, private=True)
EC_ATTACKER = ECKey.generate_key("P-256", private=True)
RSA_PEM = RSA.as_pem(private=False)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any] | bytes | list[Any], key: Any) -> str:
    """A compact JWS signed by hand, so any header or payload can be produced."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(body)}".encode()
    alg = header["alg"]
    if isinstance(key, bytes):  # raw HMAC bytes, e.g. a PEM used as a secret
        digest = hashlib.sha512 if alg == "HS512" else hashlib.sha256
        signature = hmac.new(key, signing_input, digest).digest()
    else:
        signature = JWSRegistry.algorithms[alg].sign(signing_input, key)
    return f"{signing_input.decode()}.{b64(signature)}"


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sub": "usr_1",
        "acct": "acc_1",
        "role": "editor",
        "iat": NOW,
        "exp": NOW + 600,
        "iss": ISSUER,
        "aud": AUDIENCE,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def jwk_header(key: ECKey) -> dict[str, Any]:
    """An ES256 header naming a trusted kid but embedding `key`, which must be ignored."""
    return {"alg": "ES256", "kid": "ec-2025", "jwk": key.as_dict(private=False)}


def hs(payload: dict[str, Any] | bytes | list[Any], **header: Any) -> str:
    return forge({"alg": "HS256", "typ": "JWT", **header}, payload, SECRET.encode())


@dataclass
class Verifiers:
    hs: JwtVerifier  # HS256 only, iss and aud configured
    rs: JwtVerifier  # RS256 only, PEM public key
    mixed: JwtVerifier  # HS256 and RS256 together
    jwks: JwtVerifier  # ES256 and EdDSA, JWKS with two EC keys and one Ed25519 key


def write_jwks(path: Path, keys: list[Key]) -> str:
    path.write_text(json.dumps({"keys": [k.as_dict(private=False) for k in keys]}))
    return str(path)


@pytest.fixture
def verifiers(tmp_path: Path) -> Verifiers:
    pem = tmp_path / "rsa.pem"
    pem.write_bytes(RSA_PEM)
    jwks = write_jwks(tmp_path / "jwks.json", [EC_OLD, EC_NEW, ED])
    common = {"api_jwt_key": Secret(SECRET), "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE}
    return Verifiers(
        hs=JwtVerifier.from_settings(Settings(**common)),  # type: ignore[arg-type]
        rs=JwtVerifier.from_settings(
            Settings(jwt_algorithms=("RS256",), jwt_public_key_file=str(pem), **common)  # type: ignore[arg-type]
        ),
        mixed=JwtVerifier.from_settings(
            Settings(
                jwt_algorithms=("HS256", "RS256"),
                jwt_public_key_file=str(pem),
                **common,  # type: ignore[arg-type]
            )
        ),
        jwks=JwtVerifier.from_settings(
            Settings(jwt_algorithms=("ES256", "EdDSA"), jwt_jwks_file=jwks, **common)  # type: ignore[arg-type]
        ),
    )


Case = tuple[str, str, Callable[[], str]]

ATTACKS: list[Case] = [
    ("alg-none-empty-sig", "hs", lambda: hs(claims(), alg="none").rsplit(".", 1)[0] + "."),
    ("alg-none-with-sig", "hs", lambda: hs(claims(), alg="none")),
    ("alg-None-case", "hs", lambda: hs(claims(), alg="None")),
    ("hs256-with-rsa-pem-rs-only", "rs", lambda: forge({"alg": "HS256"}, claims(), RSA_PEM)),
    ("hs256-with-rsa-pem-mixed", "mixed", lambda: forge({"alg": "HS256"}, claims(), RSA_PEM)),
    ("alg-outside-list", "hs", lambda: forge({"alg": "HS512"}, claims(), SECRET.encode())),
    ("rs256-to-hs-only", "hs", lambda: forge({"alg": "RS256"}, claims(), RSA)),
    ("alg-not-a-string", "hs", lambda: hs(claims(), alg=["HS256"])),
    ("bad-signature-hs", "hs", lambda: forge({"alg": "HS256"}, claims(), b"other-secret" * 4)),
    ("bad-signature-rs", "rs", lambda: forge({"alg": "RS256"}, claims(), RSA_ATTACKER)),
    ("truncated-signature", "hs", lambda: hs(claims())[:-4]),
    ("expired", "hs", lambda: hs(claims(exp=NOW - 31))),
    ("expired-long-ago", "hs", lambda: hs(claims(exp=1))),
    ("no-exp", "hs", lambda: hs(claims(exp=None))),
    ("exp-string", "hs", lambda: hs(claims(exp=str(NOW + 600)))),
    ("exp-bool", "hs", lambda: hs(claims(exp=True))),
    ("exp-nan", "hs", lambda: hs(json.dumps(claims(exp=float("nan"))).encode())),
    ("nbf-future", "hs", lambda: hs(claims(nbf=NOW + 31))),
    ("iat-future", "hs", lambda: hs(claims(iat=NOW + 3600))),
    ("wrong-aud", "hs", lambda: hs(claims(aud="other-api"))),
    ("missing-aud", "hs", lambda: hs(claims(aud=None))),
    ("aud-not-string", "hs", lambda: hs(claims(aud=42))),
    ("wrong-iss", "hs", lambda: hs(claims(iss="https://evil.example"))),
    ("missing-iss", "hs", lambda: hs(claims(iss=None))),
    ("kid-path-hs", "hs", lambda: hs(claims(), kid="../../x")),
    ("kid-sql-hs", "hs", lambda: hs(claims(), kid="' OR 1=1")),
    ("kid-path-jwks", "jwks", lambda: forge({"alg": "ES256", "kid": "../../x"}, claims(), EC_NEW)),
    ("kid-sql-jwks", "jwks", lambda: forge({"alg": "ES256", "kid": "' OR 1=1"}, claims(), EC_NEW)),
    ("kid-unknown", "jwks", lambda: forge({"alg": "ES256", "kid": "ec-1999"}, claims(), EC_NEW)),
    ("kid-not-string", "jwks", lambda: forge({"alg": "ES256", "kid": 7}, claims(), EC_NEW)),
    (
        "kid-of-other-family",
        "jwks",
        lambda: forge({"alg": "ES256", "kid": "ed-1"}, claims(), EC_NEW),
    ),
    ("no-kid-two-ec-keys", "jwks", lambda: forge({"alg": "ES256"}, claims(), EC_NEW)),
    (
        "kid-right-key-wrong",
        "jwks",
        lambda: forge({"alg": "ES256", "kid": "ec-2024"}, claims(), EC_NEW),
    ),
    ("embedded-jwk", "jwks", lambda: forge(jwk_header(EC_ATTACKER), claims(), EC_ATTACKER)),
    (
        "embedded-jku",
        "rs",
        lambda: forge({"alg": "RS256", "jku": "http://x/j"}, claims(), RSA_ATTACKER),
    ),
    (
        "embedded-x5u",
        "rs",
        lambda: forge({"alg": "RS256", "x5u": "http://x/c"}, claims(), RSA_ATTACKER),
    ),
    ("empty", "hs", lambda: ""),
    ("one-segment", "hs", lambda: "abc"),
    ("two-segments", "hs", lambda: ".".join(hs(claims()).split(".")[:2])),
    ("four-segments", "hs", lambda: hs(claims()) + ".x"),
    ("dots-only", "hs", lambda: ".."),
    ("garbage-segments", "hs", lambda: "a.b.c"),
    ("bad-base64-header", "hs", lambda: "!!!." + hs(claims()).split(".", 1)[1]),
    ("header-not-object", "hs", lambda: b64(b"[1]") + "." + hs(claims()).split(".", 1)[1]),
    ("header-not-json", "hs", lambda: b64(b"{alg") + "." + hs(claims()).split(".", 1)[1]),
    ("payload-not-json", "hs", lambda: hs(b"not json at all")),
    ("payload-array", "hs", lambda: hs([1, 2, 3])),
    ("payload-string", "hs", lambda: hs(b'"sub"')),
    ("huge-token", "hs", lambda: hs(claims(pad="x" * 9000))),
    ("non-ascii", "hs", lambda: hs(claims()) + "é"),
    ("sub-not-string", "hs", lambda: hs(claims(sub=123))),
    ("acct-missing", "hs", lambda: hs(claims(acct=None))),
    ("acct-empty", "hs", lambda: hs(claims(acct=""))),
    ("acct-object", "hs", lambda: hs(claims(acct={"id": 1}))),
    ("role-unknown", "hs", lambda: hs(claims(role="superuser"))),
    ("role-list", "hs", lambda: hs(claims(role=["admin"]))),
    ("jti-not-string", "hs", lambda: hs(claims(jti=5))),
]


@pytest.mark.parametrize(("case", "which", "make"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_attack_is_a_uniform_401(
    verifiers: Verifiers, case: str, which: str, make: Callable[[], str]
) -> None:
    verifier: JwtVerifier = getattr(verifiers, which)
    with pytest.raises(UnauthorizedError) as info:
        verifier.verify(make(), now=NOW)
    assert info.value.detail == TOKEN_ERROR_DETAIL
    assert info.value.status == 401
    assert "WWW-Authenticate" in info.value.headers


def test_attack_table_controls_are_accepted(verifiers: Verifiers) -> None:
    """Each attack differs from a token that passes, so the table tests what it names."""
    assert verifiers.hs.verify(hs(claims()), now=NOW).sub == "usr_1"
    assert verifiers.rs.verify(forge({"alg": "RS256"}, claims(), RSA), now=NOW).role == "editor"
    assert verifiers.mixed.verify(hs(claims()), now=NOW).acct == "acc_1"
    ec = forge({"alg": "ES256", "kid": "ec-2025"}, claims(), EC_NEW)
    assert verifiers.jwks.verify(ec, now=NOW).sub == "usr_1"
    assert verifiers.jwks.verify(forge(jwk_header(EC_NEW), claims(), EC_NEW), now=NOW).sub
    for url_header in ({"jku": "http://x/j"}, {"x5u": "http://x/c"}):
        token = forge({"alg": "RS256", **url_header}, claims(), RSA)
        assert verifiers.rs.verify(token, now=NOW).sub == "usr_1"


@pytest.mark.parametrize(
    "overrides",
    [{"exp": NOW - 10}, {"nbf": NOW + 20}, {"iat": NOW + 29}, {"aud": [AUDIENCE, "other"]}],
    ids=["exp-within-leeway", "nbf-within-leeway", "iat-within-leeway", "aud-list"],
)
def test_leeway_and_audience_list_accepted(verifiers: Verifiers, overrides: dict[str, Any]) -> None:
    assert verifiers.hs.verify(hs(claims(**overrides)), now=NOW).sub == "usr_1"


def test_issue_round_trip_with_iss_and_aud(verifiers: Verifiers) -> None:
    token = verifiers.hs.issue(sub="usr_9", acct="acc_9", role="admin", ttl_seconds=60, now=NOW)
    got = verifiers.hs.verify(token, now=NOW + 30)
    assert (got.sub, got.acct, got.role, got.iat, got.exp, got.iss) == (
        "usr_9",
        "acc_9",
        "admin",
        NOW,
        NOW + 60,
        ISSUER,
    )
    with pytest.raises(UnauthorizedError):
        verifiers.hs.verify(token, now=NOW + 60 + 31)


def test_issue_refuses_bad_role_and_needs_an_hmac_key(verifiers: Verifiers) -> None:
    with pytest.raises(ValueError, match="role"):
        verifiers.hs.issue(sub="u", acct="a", role="root", ttl_seconds=60)
    with pytest.raises(SettingsError):
        verifiers.rs.issue(sub="u", acct="a", role="viewer", ttl_seconds=60)


def test_default_settings_issue_and_verify_now(tmp_path: Path) -> None:
    settings = resolve_jwt_key(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"))
    verifier = JwtVerifier.from_settings(settings)
    token = verifier.issue(sub="usr_1", acct="acc_1", role="owner", ttl_seconds=900)
    assert verifier.verify(token).role == "owner"


def test_rs256_via_pem_with_and_without_kid(verifiers: Verifiers) -> None:
    assert verifiers.rs.verify(forge({"alg": "RS256"}, claims(), RSA), now=NOW).sub == "usr_1"
    kid = RSAKey.import_key(RSA_PEM).thumbprint()
    token = forge({"alg": "RS256", "kid": kid}, claims(), RSA)
    assert verifiers.rs.verify(token, now=NOW).sub == "usr_1"


def test_jwks_rotation_es256_and_eddsa(tmp_path: Path) -> None:
    def verifier(keys: list[Key]) -> JwtVerifier:
        path = write_jwks(tmp_path / "jwks.json", keys)
        return JwtVerifier.from_settings(
            Settings(jwt_algorithms=("ES256", "EdDSA"), jwt_jwks_file=path)
        )

    old = forge({"alg": "ES256", "kid": "ec-2024"}, claims(aud=None, iss=None), EC_OLD)
    new = forge({"alg": "ES256", "kid": "ec-2025"}, claims(aud=None, iss=None), EC_NEW)
    ed = forge({"alg": "EdDSA", "kid": "ed-1"}, claims(aud=None, iss=None), ED)
    during = verifier([EC_OLD, EC_NEW, ED])
    for token in (old, new, ed):
        assert during.verify(token, now=NOW).sub == "usr_1"
    after = verifier([EC_NEW, ED])
    assert after.verify(new, now=NOW).sub == "usr_1"
    with pytest.raises(UnauthorizedError):
        after.verify(old, now=NOW)
    # A single key of a family needs no kid.
    only_ec = JwtVerifier.from_settings(
        Settings(jwt_algorithms=("ES256",), jwt_jwks_file=write_jwks(tmp_path / "1.json", [EC_NEW]))
    )
    no_kid = forge({"alg": "ES256"}, claims(aud=None, iss=None), EC_NEW)
    assert only_ec.verify(no_kid, now=NOW).sub == "usr_1"


def test_jwks_private_keys_are_reduced_to_public(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [EC_NEW.as_dict(private=True)]}))
    verifier = JwtVerifier.from_settings(
        Settings(jwt_algorithms=("ES256",), jwt_jwks_file=str(path))
    )
    token = forge({"alg": "ES256", "kid": "ec-2025"}, claims(aud=None, iss=None), EC_NEW)
    assert verifier.verify(token, now=NOW).role == "editor"


@pytest.mark.parametrize(
    "make_settings",
    [
        lambda tmp: Settings(jwt_algorithms=("none",)),
        lambda tmp: Settings(jwt_algorithms=("RS256",)),  # no public key configured
        lambda tmp: Settings(api_jwt_key=Secret(RSA_PEM.decode())),  # a public key as HMAC secret
        lambda tmp: Settings(
            jwt_algorithms=("ES256",),
            jwt_jwks_file=write_jwks(tmp / "o.json", [OctKey.generate_key(256)]),
        ),
        lambda tmp: Settings(jwt_algorithms=("RS256",), jwt_public_key_file=str(tmp / "absent")),
        lambda tmp: Settings(env="production"),  # check_jwt_key: no key
        lambda tmp: Settings(),  # no key, and none resolved (resolve_jwt_key)
        lambda tmp: Settings(
            env="production", api_jwt_key=Secret("k" * 63), jwt_algorithms=("HS512",)
        ),
    ],
    ids=[
        "alg-none",
        "rs-without-key",
        "pem-as-hmac",
        "oct-in-jwks",
        "missing-pem",
        "prod-no-key",
        "no-key",
        "hs512-short-key",
    ],
)
def test_bad_configuration_fails_at_start(
    tmp_path: Path, make_settings: Callable[[Path], Settings]
) -> None:
    with pytest.raises(SettingsError):
        JwtVerifier.from_settings(make_settings(tmp_path))


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.lists(st.text(alphabet="abcxyzAB09-_=", max_size=40), min_size=1, max_size=5).map(
            ".".join
        ),
    )
)
def test_arbitrary_input_only_ever_raises_unauthorized(token: str) -> None:
    verifier = JwtVerifier(algorithms=("HS256",), hmac_key=OctKey.import_key(SECRET.encode()))
    with pytest.raises(UnauthorizedError):
        verifier.verify(token)


def test_an_accepted_hmac_key_verifies_its_tokens_and_signs_none(tmp_path: Path) -> None:
    old, new, stranger = SECRET, "a-new-hmac-secret-that-is-long-enough-9876543210", "x" * 48
    base = {"AE_ENV": "production", "AE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"}
    from engine.settings import load_settings

    before = JwtVerifier.from_settings(load_settings({**base, "AE_API_JWT_KEY": old}, dotenv=None))
    during = JwtVerifier.from_settings(
        load_settings(
            {**base, "AE_API_JWT_KEY": new, "AE_API_JWT_ACCEPTED_KEYS": f"{stranger}, {old}"},
            dotenv=None,
        )
    )
    step_one = JwtVerifier.from_settings(
        load_settings({**base, "AE_API_JWT_KEY": old, "AE_API_JWT_ACCEPTED_KEYS": new}, dotenv=None)
    )
    after = JwtVerifier.from_settings(load_settings({**base, "AE_API_JWT_KEY": new}, dotenv=None))
    issued_before = before.issue(sub="usr_1", acct="acc_1", role="viewer", ttl_seconds=900)
    issued_during = during.issue(sub="usr_1", acct="acc_1", role="viewer", ttl_seconds=900)
    assert during.verify(issued_before).sub == "usr_1"  # nobody is logged out by the switch
    assert after.verify(issued_during).sub == "usr_1"  # new tokens use the new key only
    assert step_one.verify(issued_during).sub == "usr_1"  # a pod not yet switched accepts it
    assert before.verify(step_one.issue(sub="u", acct="a", role="viewer", ttl_seconds=60))
    with pytest.raises(UnauthorizedError):
        after.verify(issued_before)  # once the old key is dropped, its tokens end
    with pytest.raises(UnauthorizedError):
        during.verify(forge({"alg": "HS256"}, claims(), b"z" * 48))  # no other key works
    with pytest.raises(UnauthorizedError):  # an expired token stays expired under any key
        during.verify(forge({"alg": "HS256"}, claims(exp=NOW), old.encode()), now=NOW + 120)
    with pytest.raises(SettingsError, match="AE_API_JWT_ACCEPTED_KEYS must be at least 32"):
        load_settings(
            {**base, "AE_API_JWT_KEY": new, "AE_API_JWT_ACCEPTED_KEYS": "short"}, dotenv=None
        )
