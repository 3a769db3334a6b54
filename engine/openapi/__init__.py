"""The OpenAPI 3.1 document of every route, generated from the registry (SPEC 5, 6, 7).

`components` holds the shared and per-type components, `paths` the fixed, CRUD and action
operations (action plugins describe theirs with `OperationSpec`), and `document` joins them
in `build_openapi` and serves the result with `openapi_routes`.
"""

from __future__ import annotations

from engine.openapi.components import READ_ERRORS, WRITE_ERRORS
from engine.openapi.document import build_openapi, openapi_routes
from engine.openapi.paths import OperationSpec

__all__ = ["READ_ERRORS", "WRITE_ERRORS", "OperationSpec", "build_openapi", "openapi_routes"]
