"""JWT verification and issuing (joserfc), built once from `Settings`.

The allow-list pins the algorithms; each algorithm family has its own keys (an HMAC secret
for HS*, PEM or JWKS public keys for RS*/PS*/ES*/EdDSA), picked by `kid` from an in-memory
table, never from header key material. Every failure is the same `UnauthorizedError`.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from joserfc import jwt as jose_jwt
from joserfc.errors import BadSignatureError, UnsupportedAlgorithmError
from joserfc.jwa import JWSAlgModel
from joserfc.jwk import ECKey, Key, KeySet, OctKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from engine.errors import UnauthorizedError
from engine.settings import Settings, SettingsError, check_jwt_key
from registry.descriptors import ROLE_ORDER

logger = logging.getLogger(__name__)

TOKEN_ERROR_DETAIL = "Invalid or expired token"
MAX_TOKEN_BYTES = 8 * 1024
LEEWAY_SECONDS = 30
MAX_KID_LENGTH = 128
MAX_CLAIM_LENGTH = 256

#: The key type (`kty`) each accepted algorithm needs; anything else is refused at start-up.
KEY_TYPES: Mapping[str, str] = {
    "HS256": "oct",
    "HS384": "oct",
    "HS512": "oct",
    "RS256": "RSA",
    "RS384": "RSA",
    "RS512": "RSA",
    "PS256": "RSA",
    "PS384": "RSA",
    "PS512": "RSA",
    "ES256": "EC",
    "ES384": "EC",
    "ES512": "EC",
    "EdDSA": "OKP",
    "Ed25519": "OKP",
}


class Claims(msgspec.Struct, frozen=True, kw_only=True):
    """The verified claims of a token: who (`sub`), which account (`acct`) and `role`."""

    sub: str
    acct: str
    role: str
    exp: int
    iat: int | None = None
    nbf: int | None = None
    iss: str | None = None
    jti: str | None = None


class _PinnedRegistry(JWSRegistry):
    """A JWS registry that accepts exactly its allow-list, recommended or not.

    joserfc warns on every use of `EdDSA` (deprecated by RFC 9864 for `Ed25519`); the
    choice is the operator's, made once in `AE_JWT_ALGORITHMS`, so no per-token warning.
    """

    def get_alg(self, name: str) -> JWSAlgModel:
        if not self.allowed or name not in self.allowed or name not in self.algorithms:
            raise UnsupportedAlgorithmError(f"Algorithm of '{name}' is not allowed")
        return self.algorithms[name]


def _reject() -> UnauthorizedError:
    return UnauthorizedError(TOKEN_ERROR_DETAIL)


def _b64_json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


class JwtVerifier:
    """Verifies (and, with an HMAC key, issues) access tokens.

    `keys` maps a `kid` to a public key; a token naming a `kid` must name one of them, and a
    token without one is accepted only when its family has a single key. HS* tokens must
    carry no `kid`; they are checked against `hmac_key`, then (a rotation in progress)
    against each of `accepted_hmac_keys`. Tokens are signed with `hmac_key` only.
    """

    def __init__(
        self,
        *,
        algorithms: Collection[str],
        hmac_key: OctKey | None = None,
        accepted_hmac_keys: Collection[OctKey] = (),
        keys: Mapping[str, Key] | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway: int = LEEWAY_SECONDS,
    ) -> None:
        self.algorithms = tuple(algorithms)
        for name in self.algorithms:
            if name not in KEY_TYPES:
                raise SettingsError(f"AE_JWT_ALGORITHMS: unsupported algorithm {name!r}")
        self._hmac_key = hmac_key
        self._accepted_hmac_keys = tuple(accepted_hmac_keys) if hmac_key is not None else ()
        self._keys = dict(keys or {})
        for kid, key in self._keys.items():
            if key.key_type == "oct" or key.is_private:
                raise SettingsError(f"JWT key {kid!r} must be a public key")
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self._registry = _PinnedRegistry(algorithms=self.algorithms)

    @classmethod
    def from_settings(cls, settings: Settings) -> JwtVerifier:
        """Build the verifier; a bad key, file or algorithm raises `SettingsError`."""
        check_jwt_key(settings)
        algorithms = settings.jwt_algorithms
        for name in algorithms:
            if name not in KEY_TYPES:
                raise SettingsError(f"AE_JWT_ALGORITHMS: unsupported algorithm {name!r}")
        hmac_key: OctKey | None = None
        if any(KEY_TYPES[name] == "oct" for name in algorithms):
            if not settings.api_jwt_key:
                raise SettingsError("AE_API_JWT_KEY is not set (see resolve_jwt_key)")
            try:
                hmac_key = OctKey.import_key(settings.jwt_key.encode())
            except ValueError:
                # joserfc refuses PEM/ssh-looking secrets: a public key is no HMAC key.
                raise SettingsError("AE_API_JWT_KEY must be a secret, not a public key") from None
        accepted = []
        for other in settings.api_jwt_accepted_keys:
            try:
                accepted.append(OctKey.import_key(other.encode()))
            except ValueError:
                raise SettingsError(
                    "AE_API_JWT_ACCEPTED_KEYS must hold secrets, not public keys"
                ) from None
        keys: dict[str, Key] = {}
        if settings.jwt_public_key_file:
            key = load_pem_file(settings.jwt_public_key_file)
            keys[key.thumbprint()] = key
        if settings.jwt_jwks_file:
            for kid, key in load_jwks_file(settings.jwt_jwks_file).items():
                if kid in keys:
                    raise SettingsError(f"AE_JWT_JWKS_FILE: duplicate kid {kid!r}")
                keys[kid] = key
        for name in algorithms:
            kty = KEY_TYPES[name]
            if kty != "oct" and not any(k.key_type == kty for k in keys.values()):
                raise SettingsError(
                    f"AE_JWT_ALGORITHMS lists {name} but no {kty} key is configured "
                    "(AE_JWT_PUBLIC_KEY_FILE or AE_JWT_JWKS_FILE)"
                )
        return cls(
            algorithms=algorithms,
            hmac_key=hmac_key,
            accepted_hmac_keys=accepted,
            keys=keys,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )

    def verify(self, token: str, *, now: float | None = None) -> Claims:
        """The claims of a valid token; anything else raises `UnauthorizedError`."""
        try:
            return self._verify(token, now)
        except UnauthorizedError:
            raise
        except Exception as exc:  # every failure must be the same 401
            logger.debug("token rejected: %s", type(exc).__name__)
            raise _reject() from None

    def issue(
        self, *, sub: str, acct: str, role: str, ttl_seconds: int, now: float | None = None
    ) -> str:
        """A signed HS* token for `sub` in `acct` with `role`, valid for `ttl_seconds`."""
        if self._hmac_key is None:
            raise SettingsError("AE_JWT_ALGORITHMS holds no HS* algorithm: cannot issue tokens")
        if role not in ROLE_ORDER:
            raise ValueError(f"unknown role {role!r}")
        if ttl_seconds < 1:
            raise ValueError("ttl_seconds must be at least 1")
        alg = (
            "HS256"
            if "HS256" in self.algorithms
            else next(name for name in self.algorithms if KEY_TYPES[name] == "oct")
        )
        issued_at = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "sub": sub,
            "acct": acct,
            "role": role,
            "iat": issued_at,
            "exp": issued_at + ttl_seconds,
        }
        if self.issuer:
            claims["iss"] = self.issuer
        if self.audience:
            claims["aud"] = self.audience
        return jose_jwt.encode({"alg": alg}, claims, self._hmac_key, [alg], self._registry)

    def _verify(self, token: str, now: float | None) -> Claims:
        if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES or not token.isascii():
            raise _reject()
        segments = token.split(".")
        if len(segments) != 3 or not all(segments):
            raise _reject()
        header = _b64_json(segments[0])
        if not isinstance(header, dict):
            raise _reject()
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise _reject()
        key = self._select_key(alg, header.get("kid"))
        try:
            decoded = jose_jwt.decode(token, key, [alg], self._registry)
        except BadSignatureError:
            if KEY_TYPES[alg] != "oct":
                raise
            decoded = self._decode_with_accepted_key(token, alg)
        return self._check_claims(decoded.claims, now)

    def _decode_with_accepted_key(self, token: str, alg: str) -> jose_jwt.Token:
        """A token signed with a key being rotated in or out (`AE_API_JWT_ACCEPTED_KEYS`)."""
        for key in self._accepted_hmac_keys:
            try:
                return jose_jwt.decode(token, key, [alg], self._registry)
            except BadSignatureError:
                continue
        raise _reject()

    def _select_key(self, alg: str, kid: object) -> Key:
        kty = KEY_TYPES[alg]
        if kid is not None and (not isinstance(kid, str) or len(kid) > MAX_KID_LENGTH):
            raise _reject()
        if kty == "oct":
            if kid is not None or self._hmac_key is None:
                raise _reject()
            return self._hmac_key
        if kid is not None:
            # A plain dict lookup: the kid is never a path, a query or a URL.
            key = self._keys.get(kid)
            if key is None or key.key_type != kty:
                raise _reject()
            return key
        candidates = [k for k in self._keys.values() if k.key_type == kty]
        if len(candidates) != 1:
            raise _reject()
        return candidates[0]

    def _check_claims(self, claims: dict[str, Any], now: float | None) -> Claims:
        options: dict[str, Any] = {"exp": {"essential": True}}
        if self.issuer:
            options["iss"] = {"essential": True, "value": self.issuer}
        if self.audience:
            options["aud"] = {"essential": True, "value": self.audience}
        registry = jose_jwt.JWTClaimsRegistry(
            now=None if now is None else int(now), leeway=self.leeway, **options
        )
        registry.validate(claims)
        strings = {}
        for name in ("sub", "acct", "role"):
            value = claims.get(name)
            if not isinstance(value, str) or not 0 < len(value) <= MAX_CLAIM_LENGTH:
                raise _reject()
            strings[name] = value
        if strings["role"] not in ROLE_ORDER:
            raise _reject()
        return Claims(
            **strings,
            exp=int(claims["exp"]),
            iat=_optional_int(claims.get("iat")),
            nbf=_optional_int(claims.get("nbf")),
            iss=claims.get("iss"),
            jti=claims.get("jti"),
        )


def _optional_int(value: object) -> int | None:
    # The claims registry has already refused non-numeric and non-finite values.
    return None if value is None else int(value)  # type: ignore[call-overload]


def load_pem_file(path: str) -> Key:
    """The public key in a PEM file as a joserfc key (RSA, EC or OKP)."""
    try:
        data = Path(path).read_bytes()
        public = load_pem_public_key(data)
    except (OSError, ValueError, TypeError) as exc:
        raise SettingsError(f"AE_JWT_PUBLIC_KEY_FILE: cannot read a public key: {exc}") from None
    if isinstance(public, rsa.RSAPublicKey):
        return RSAKey.import_key(data)
    if isinstance(public, ec.EllipticCurvePublicKey):
        return ECKey.import_key(data)
    if isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return OKPKey.import_key(data)
    raise SettingsError("AE_JWT_PUBLIC_KEY_FILE: unsupported key type")


def load_jwks_file(path: str) -> dict[str, Key]:
    """The public keys of a JWKS file by `kid`; private parts are dropped, `oct` refused."""
    try:
        keyset = KeySet.import_key_set(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise SettingsError(f"AE_JWT_JWKS_FILE: cannot read a key set: {exc}") from None
    keys: dict[str, Key] = {}
    for key in keyset.keys:
        if key.key_type == "oct":
            raise SettingsError("AE_JWT_JWKS_FILE must hold public keys only, not oct keys")
        kid = key.kid or key.thumbprint()
        if kid in keys:
            raise SettingsError(f"AE_JWT_JWKS_FILE: duplicate kid {kid!r}")
        public = key.as_dict(private=False)
        keys[kid] = type(key).import_key(public)
    return keys
