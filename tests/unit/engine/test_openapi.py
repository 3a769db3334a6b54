"""The OpenAPI document and the /docs page (SPEC 5, 7)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from starlette.applications import Starlette

import models  # noqa: F401  (registers the domain models on Base)
from engine.actions import specs
from engine.docs import ASSETS, docs_response, docs_routes, swagger_ui_dir
from engine.errors import AetherError
from engine.openapi import OperationSpec, build_openapi, openapi_routes
from engine.problems import handle_aether_error
from engine.search import parse_fields, parse_include, parse_sort
from models.base import Base
from registry import introspect
from registry.searchschema import include_paths

REGISTRY = introspect(Base)
UPLOAD = OperationSpec(
    method="POST",
    path="/v3/action/event/{event_id}/upload",
    summary="Upload files to an event",
    min_role="editor",
    request_content_type="multipart/form-data",
    request_schema={
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {
                "type": "array",
                "items": {"type": "string", "contentMediaType": "application/octet-stream"},
            },
            "meta": {"type": "string"},
        },
    },
    responses={"201": {"description": "Created."}},
    errors=(400, 401, 403, 404, 413, 415, 422, 429, 503),
    idempotent=True,
)
DOC = build_openapi(REGISTRY, actions=[UPLOAD], version="1.2.3")
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def operations(doc: dict[str, Any] = DOC):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield path, method, item, op


def resolve(ref: str, doc: dict[str, Any] = DOC) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def component_validator(name: str) -> Draft202012Validator:
    root = {"components": DOC["components"], "$ref": f"#/components/schemas/{name}"}
    return Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_document_is_valid_openapi_3_1() -> None:
    validate(DOC)
    assert DOC["openapi"] == "3.1.0"
    assert DOC["info"]["version"] == "1.2.3"


def test_operation_ids_are_unique_and_stable() -> None:
    ids = [op["operationId"] for _, _, _, op in operations()]
    assert len(ids) == len(set(ids))
    assert {
        "event_session.list",
        "event.event_session.list",
        "account.event.event_session.list",
    } <= set(ids)
    assert build_openapi(REGISTRY, actions=[UPLOAD], version="1.2.3") == DOC


def test_every_path_parameter_is_declared() -> None:
    for path, method, item, op in operations():
        declared = set()
        for param in [*item.get("parameters", []), *op.get("parameters", [])]:
            param = resolve(param["$ref"]) if "$ref" in param else param
            if param["in"] == "path":
                declared.add(param["name"])
        assert declared == set(re.findall(r"{([^}]+)}", path)), (method, path)


def test_nested_paths_for_every_ancestor_chain() -> None:
    paths = DOC["paths"]
    for suffix in ("", "/{id}", "/search"):
        assert f"/v3/crud/account/{{account_id}}/event/{{event_id}}/event_session{suffix}" in paths
        assert f"/v3/crud/event/{{event_id}}/event_session{suffix}" in paths
        assert f"/v3/crud/event_session{suffix}" in paths
    assert "/v3/crud/event_session/schema" in paths
    assert "/v3/crud/event/{event_id}/event_session/schema" not in paths
    assert not any(p.startswith("/v3/crud/account/{account_id}/account") for p in paths)
    assert "/v3/crud/account/{account_id}/event/{event_id}/event_file/{id}" in paths


def test_methods_a_type_does_not_offer_are_omitted() -> None:
    paths = DOC["paths"]
    assert "post" not in paths["/v3/crud/file"]
    assert "post" not in paths["/v3/crud/account/{account_id}/file"]
    assert {"get", "patch", "delete"} <= set(paths["/v3/crud/file/{id}"])
    assert "post" not in paths["/v3/crud/account"]
    assert "delete" not in paths["/v3/crud/account/{id}"]
    assert "post" not in paths["/v3/crud/api_key"]
    assert {"get", "post"} <= set(paths["/v3/crud/event"])
    assert {"get", "patch", "delete"} <= set(paths["/v3/crud/event/{id}"])


def test_bodies_reference_the_type_components() -> None:
    paths = DOC["paths"]
    flat = paths["/v3/crud/event_session"]["post"]["requestBody"]["content"]["application/json"]
    nested = paths["/v3/crud/event/{event_id}/event_session"]["post"]["requestBody"]["content"][
        "application/json"
    ]
    assert flat["schema"] == {"$ref": "#/components/schemas/event_session.create"}
    assert nested["schema"] == {"$ref": "#/components/schemas/event_session.create_nested"}
    schemas = DOC["components"]["schemas"]
    assert "event_id" in schemas["event_session.create"]["required"]
    assert "event_id" not in schemas["event_session.create_nested"]["required"]
    patch = paths["/v3/crud/event/{id}"]["patch"]
    assert patch["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/event.update"
    )
    assert patch["x-aether-min-role"] == "editor"
    created = paths["/v3/crud/event"]["post"]["responses"]["201"]
    assert set(created["headers"]) == {"Location", "ETag"}
    listing = paths["/v3/crud/event"]["get"]["responses"]["200"]["content"]["application/json"]
    assert listing["schema"] == {"$ref": "#/components/schemas/event.list"}


def test_list_parameters_and_conditional_headers() -> None:
    get_list = DOC["paths"]["/v3/crud/event"]["get"]
    names = {
        resolve(p["$ref"])["name"] if "$ref" in p else p["name"] for p in get_list["parameters"]
    }
    assert names == {"limit", "offset", "after", "sort", "fields", "include", "count", "filter"}
    item = DOC["paths"]["/v3/crud/event/{id}"]
    assert resolve(item["get"]["parameters"][0]["$ref"])["name"] == "If-None-Match"
    assert resolve(item["patch"]["parameters"][0]["$ref"])["name"] == "If-Match"
    assert "412" in item["patch"]["responses"] and "428" in item["delete"]["responses"]
    assert "304" in item["get"]["responses"]


def test_item_get_lists_fields_and_include_as_the_list_does() -> None:
    paths = DOC["paths"]
    for collection, item in (
        ("/v3/crud/event", "/v3/crud/event/{id}"),
        ("/v3/crud/event/{event_id}/event_session", "/v3/crud/event/{event_id}/event_session/{id}"),
    ):
        listed = {p["name"]: p for p in paths[collection]["get"]["parameters"] if "name" in p}
        got = paths[item]["get"]
        params = {p["name"]: p for p in got["parameters"] if "name" in p}
        assert set(params) == {"fields", "include"}, item
        for name in ("fields", "include"):
            assert params[name] == listed[name]
            assert params[name]["in"] == "query" and params[name]["required"] is False
        assert "422" in got["responses"]
    include = DOC["paths"]["/v3/crud/event/{id}"]["get"]["parameters"]
    pattern = next(p for p in include if p.get("name") == "include")["schema"]["pattern"]
    assert re.fullmatch(pattern, "event_session,account")
    assert not re.fullmatch(pattern, "bogus")


def test_problem_responses_and_security() -> None:
    responses = DOC["components"]["responses"]
    for status in (400, 401, 403, 404, 405, 409, 412, 413, 415, 422, 428, 429, 503):
        found = [
            r
            for r in responses.values()
            if r["content"]["application/problem+json"]["example"]["status"] == status
        ]
        assert len(found) == 1, status
    assert "Retry-After" in responses["TooManyRequests"]["headers"]
    problem = DOC["components"]["schemas"]["Problem"]
    assert set(problem["properties"]) == {
        "type",
        "title",
        "status",
        "detail",
        "instance",
        "request_id",
        "errors",
    }
    schemes = DOC["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {
        **schemes["bearerAuth"],
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    assert schemes["apiKeyAuth"]["in"] == "header" and schemes["apiKeyAuth"]["name"] == "X-API-Key"
    assert {"bearerAuth": []} in DOC["security"] and {"apiKeyAuth": []} in DOC["security"]
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        assert DOC["paths"][path]["get"]["security"] == []
    assert DOC["paths"]["/v3/auth/login"]["post"]["security"] == []
    assert "security" not in DOC["paths"]["/v3/crud/schema"]["get"]


def test_actions_are_described() -> None:
    op = DOC["paths"]["/v3/action/event/{event_id}/upload"]["post"]
    assert "multipart/form-data" in op["requestBody"]["content"]
    assert op["x-aether-min-role"] == "editor"
    assert "413" in op["responses"]
    with pytest.raises(ValueError, match="two operations"):
        build_openapi(REGISTRY, actions=[UPLOAD, UPLOAD])


@pytest.mark.parametrize("name", list(REGISTRY.types))
def test_create_examples_validate_against_their_schema(name: str) -> None:
    for _, method, _, op in operations():
        if method != "post" or op["operationId"].split(".")[-1] != "create" or op["tags"] != [name]:
            continue
        media = op["requestBody"]["content"]["application/json"]
        shape = media["schema"]["$ref"].rsplit("/", 1)[1]
        if "example" in media:
            errors = list(component_validator(shape).iter_errors(media["example"]))
            assert errors == [], (op["operationId"], errors)


def test_components_validate_real_bodies() -> None:
    assert component_validator("event.create").is_valid(
        {"name": "Gala", "starts_at": "2026-01-01T10:00:00Z"}
    )
    assert not component_validator("event.create").is_valid(
        {"name": "Gala", "starts_at": "2026-01-01T10:00:00Z", "capacity": -1}
    )
    assert not component_validator("user.create").is_valid(
        {"email": "a@example.com", "password": "short"}
    )
    search = component_validator("event.search")
    assert search.is_valid(
        {"filter": {"event_session": {"_some": {"event": {"account": {"status": "active"}}}}}}
    )
    assert not search.is_valid({"filter": {"event_session": {"_some": {"nope": 1}}}})
    read = component_validator("event_file")
    row = {"id": "A" * 22, "file": {"id": "B" * 22, "sha256": "0" * 64}}
    assert read.is_valid(row)  # an include adds the relation; `fields` may drop the rest
    assert not read.is_valid({"id": "A" * 22, "bogus": 1})


def test_component_names_and_refs_resolve() -> None:
    names = set(DOC["components"]["schemas"])
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in names)
    for name in REGISTRY.types:
        assert {
            name,
            f"{name}.create",
            f"{name}.update",
            f"{name}.filter",
            f"{name}.search",
            f"{name}.list",
        } <= names

    def refs(node: Any):
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for ref in refs(DOC):
        assert ref.startswith("#/components/"), ref
        resolve(ref)


def client_for(app: Starlette, root_path: str = "") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, root_path=root_path)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_openapi_route_serves_cached_bytes_with_etag() -> None:
    app = Starlette(routes=openapi_routes(DOC))
    async with client_for(app) as client:
        first = await client.get("/openapi.json")
        assert first.status_code == 200
        assert first.json()["openapi"] == "3.1.0"
        again = await client.get("/openapi.json", headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304


# -- /docs --------------------------------------------------------------------------------


def test_docs_page_uses_only_local_assets() -> None:
    body = docs_response().body.decode()
    urls = re.findall(r'(?:src|href)="([^"]+)"', body)
    assert urls and all(u.startswith("/docs/assets/") for u in urls), urls
    assert 'data-openapi-url="/openapi.json"' in body
    assert "<script>" not in body  # no inline script: a strict CSP keeps working
    assert "http://" not in body and "https://" not in body


async def test_docs_routes_serve_the_page_and_allowed_assets() -> None:
    app = Starlette(routes=docs_routes(), exception_handlers={AetherError: handle_aether_error})
    async with client_for(app) as client:
        page = await client.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for url in re.findall(r'(?:src|href)="([^"]+)"', page.text):
            asset = await client.get(url)
            assert asset.status_code == 200, url
            assert len(asset.content) > 0
        init = (await client.get("/docs/assets/aether-docs.js")).text
        assert "SwaggerUIBundle" in init and "http" not in init
        demo = await client.get("/docs/assets/index.html")  # in the package, not allowed
        assert demo.status_code == 404
        assert demo.headers["content-type"] == "application/problem+json"
        escape = await client.get("/docs/assets/..%2Fswagger-initializer.js")
        assert escape.status_code == 404
    assert set(ASSETS) >= {"swagger-ui-bundle.js", "swagger-ui.css"}


async def test_docs_page_follows_the_root_path() -> None:
    app = Starlette(routes=docs_routes())
    async with client_for(app, root_path="/api") as client:
        page = (await client.get("/docs")).text
    assert 'href="/api/docs/assets/swagger-ui.css"' in page
    assert 'data-openapi-url="/api/openapi.json"' in page


def test_packaged_swagger_ui_renders_openapi_3_1() -> None:
    # Swagger UI 4.x refuses `openapi: 3.1.x` ("Unable to render this definition"); 3.1
    # support arrived in 5.0, shipped by the `swagger-ui-bundle-v2` distribution.
    match = re.search(r"swagger-ui-(\d+)\.", swagger_ui_dir().name)
    assert match is not None, swagger_ui_dir()
    assert int(match.group(1)) >= 5, f"{swagger_ui_dir().name} cannot render OpenAPI 3.1"


def test_every_json_body_documents_400_413_and_415() -> None:
    """One body reader serves every JSON route: not JSON is 400, too large 413, another
    media type 415 (SPEC 5)."""
    doc = build_openapi(REGISTRY, actions=[UPLOAD, specs.API_KEY], version="1.2.3")
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method == "parameters" or "requestBody" not in op:
                continue
            if "application/json" not in op["requestBody"]["content"]:
                continue
            for status in ("400", "413", "415", "422"):
                assert status in op["responses"], (method, path, status)


def _list_param(path: str, name: str) -> dict[str, Any]:
    for param in DOC["paths"][path]["get"]["parameters"]:
        if param.get("name") == name:
            return param
    raise AssertionError(f"{name} not on {path}")


@pytest.mark.parametrize("type_name", ["event", "event_session", "account"])
@given(data=st.data())
def test_list_name_parameters_decide_as_the_parser(type_name: str, data: st.DataObject) -> None:
    """`sort`, `fields` and `include` are comma-separated names the pattern lists; a name
    sorted on twice is the one rule left to the server (README)."""
    obj = REGISTRY[type_name]
    first = [f.name for f in obj.fields][:4]
    pool = {
        "sort": [*first, "-name", "-id", "nope", "-", ""],
        "fields": [*first, "nope", "password_hash", ""],
        "include": [*include_paths(obj, REGISTRY)[:4], "nope", "a.b.c.d", "event_session.x"],
    }
    parse = {
        "sort": lambda v: parse_sort(v, obj),
        "fields": lambda v: parse_fields(v, obj),
        "include": lambda v: parse_include(v, obj, REGISTRY),
    }
    for key, names in pool.items():
        chosen = data.draw(st.lists(st.sampled_from(names), max_size=3), label=key)
        if key == "sort":
            bare = [c.lstrip("-") for c in chosen]
            assume(len(set(bare)) == len(bare))
        value = ",".join(chosen)
        pattern = _list_param(f"/v3/crud/{type_name}", key)["schema"]["pattern"]
        schema_ok = re.search(pattern, value) is not None
        try:
            parse[key](value)
            parser_ok = True
        except AetherError:
            parser_ok = False
        # An empty name between commas is skipped by the parser; the pattern is stricter.
        if schema_ok or "" not in chosen:
            assert schema_ok == parser_ok, (key, value, pattern)
