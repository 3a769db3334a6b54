"""The legacy `/crud` and `/v2/crud` routes (SPEC 9), served by the V3 handlers on their way out.

`LegacyRoutes` is mounted by `create_app` only when `AE_LEGACY_ROUTES` is on;
`with_legacy_paths` adds them (deprecated) to the OpenAPI document then. See `routes.py`
for the adapters, `calls.py` for the headers and `usage.py` for the call counts.
"""

from __future__ import annotations

from engine.legacy.openapi import with_legacy_paths
from engine.legacy.routes import LegacyRoutes

__all__ = ["LegacyRoutes", "with_legacy_paths"]
