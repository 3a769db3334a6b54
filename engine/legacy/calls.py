"""What a legacy call is: its route, its V3 successor and the headers every answer carries.

`parse_legacy_call` is pure. It maps `/crud/{type}[/{id}]` and `/v2/crud/{type}[/{id}|/search]`
onto the V3 path segments they stand for, names the route as a template for the usage counts
(`GET /v2/crud/event/{id}`, whatever the id) and gives the V3 URL of the same resource for
the `Link: <...>; rel="successor-version"` header. Any other path under a legacy prefix is a
call of no route (404), which still names its successor.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal
from urllib.parse import quote, unquote

import msgspec

from registry.descriptors import Registry

V3_PREFIX = "/v3/crud"
#: Each legacy prefix and its label in operation ids. V1 (`/crud`) never had search.
LEGACY_PREFIXES = {"/crud": "v1", "/v2/crud": "v2"}
#: When the legacy routes were deprecated: the Deprecation header (RFC 9745) sends it.
DEPRECATED_SINCE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
#: `Deprecation: @<seconds since the epoch>`, an RFC 9651 Date structured field.
DEPRECATION = f"@{int(DEPRECATED_SINCE.timestamp())}"
_RESERVED = frozenset({"", "schema", "search"})

Kind = Literal["collection", "item", "search"]


class LegacyCall(msgspec.Struct, frozen=True, kw_only=True):
    """One request to a legacy path.

    `segments` are the V3 path segments after `/v3/crud/` (None: no legacy route has this
    shape); `route` and `successor` are method-and-path templates; `successor_url` is the
    V3 URL of the resource the request names.
    """

    prefix: str
    method: str
    kind: Kind | None
    segments: list[str] | None
    route: str
    successor: str
    successor_url: str

    @property
    def v3_method(self) -> str:
        return successor_method(self.method)


def successor_method(method: str) -> str:
    """PUT was a partial update in the legacy API: PATCH is its V3 form."""
    return "PATCH" if method == "PUT" else method


def parse_legacy_call(prefix: str, method: str, rest: str, registry: Registry) -> LegacyCall:
    """The legacy call for `method` on `prefix + rest`, `rest` as sent (percent-encoded).

    >>> from registry.descriptors import Registry
    >>> call = parse_legacy_call("/crud", "PUT", "/x/abc", Registry(types={}))
    >>> call.route, call.successor, call.successor_url
    ('PUT /crud/{type}/{id}', 'PATCH /v3/crud/{type}/{id}', '/v3/crud/x/abc')
    """
    parts = [unquote(part) for part in rest.split("/")]
    if parts and parts[0] == "":
        parts = parts[1:]
    if parts and parts[-1] == "":  # one trailing slash is ignored, as in V3
        parts = parts[:-1]
    successor_url = V3_PREFIX + "".join("/" + quote(p, safe="") for p in parts)
    kind: Kind | None = None
    if parts and parts[0] not in _RESERVED:
        if len(parts) == 1:
            kind = "collection"
        elif len(parts) == 2 and parts[1] == "search":
            kind = "search" if LEGACY_PREFIXES.get(prefix) == "v2" else None
        elif len(parts) == 2 and parts[1] not in _RESERVED:
            kind = "item"
    v3_method = successor_method(method)
    if kind is None:
        return LegacyCall(
            prefix=prefix,
            method=method,
            kind=None,
            segments=None,
            route=f"{method} {prefix}/{{path}}",
            successor=f"{v3_method} {V3_PREFIX}/{{path}}",
            successor_url=successor_url,
        )
    name = parts[0] if registry.get(parts[0]) is not None else "{type}"
    tail = {"collection": "", "item": "/{id}", "search": "/search"}[kind]
    return LegacyCall(
        prefix=prefix,
        method=method,
        kind=kind,
        segments=parts,
        route=f"{method} {prefix}/{name}{tail}",
        successor=f"{v3_method} {V3_PREFIX}/{name}{tail}",
        successor_url=successor_url,
    )


def successor_of(route: str) -> str:
    """The V3 template of a legacy route template (for the usage counts).

    >>> successor_of("PUT /v2/crud/event/{id}")
    'PATCH /v3/crud/event/{id}'
    """
    method, _, path = route.partition(" ")
    for prefix in sorted(LEGACY_PREFIXES, key=len, reverse=True):
        if path == prefix or path.startswith(prefix + "/"):
            return f"{successor_method(method)} {V3_PREFIX}{path[len(prefix) :]}"
    return route


def deprecation_headers(call: LegacyCall, sunset: str) -> dict[str, str]:
    """`Deprecation` (RFC 9745), `Sunset` (RFC 8594) and the successor `Link` (RFC 8288)."""
    return {
        "Deprecation": DEPRECATION,
        "Sunset": sunset,
        "Link": f'<{call.successor_url}>; rel="successor-version"',
    }
