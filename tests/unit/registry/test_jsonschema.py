"""JSON Schema documents built from the registry (SPEC 7)."""

from __future__ import annotations

import functools
import re
from typing import Any

import jsonschema
import msgspec
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

import models  # noqa: F401  (registers the domain models on Base)
from engine.errors import AetherError
from engine.search import parse_search
from models.base import Base
from registry import introspect
from registry.descriptors import FieldInfo, ObjectType, Registry
from registry.jsonschema import (
    DIALECT,
    NO_NUL_PATTERN,
    collection_paths,
    create_schema,
    ecma_pattern,
    field_schema,
    schema_index,
    type_schema,
    update_schema,
)
from registry.operators import operators_for
from registry.searchschema import filter_schema, search_schema
from registry.types import WriteDecoder, WriteErrors

REGISTRY: Registry = introspect(Base)
NAMES = list(REGISTRY.types)


def doc(name: str) -> dict[str, Any]:
    return type_schema(REGISTRY[name], REGISTRY, base_url="https://api.example.com")


def walk(node: Any, path: str = "#"):
    """Every (json pointer, sub-schema dict) pair under `node`."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}/{i}")


def validator(document: dict[str, Any], shape: str | None = None) -> Draft202012Validator:
    """Validate against the read shape or a `$defs` shape, refs resolving in `document`."""
    schema = document
    if shape is not None:
        schema = {"$defs": document["$defs"], "$ref": f"#/$defs/{shape}"}
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def is_valid(document: dict[str, Any], shape: str | None, instance: Any) -> bool:
    return validator(document, shape).is_valid(instance)


# -- every type ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_type_schema_is_valid_draft_2020_12(name: str) -> None:
    document = doc(name)
    Draft202012Validator.check_schema(document)
    assert document["$schema"] == DIALECT
    assert document["$id"] == f"https://api.example.com/v3/crud/{name}/schema"
    assert document["additionalProperties"] is False
    assert set(document["$defs"]) >= {"create", "update"}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", ["create", "update"])
def test_write_shapes_are_self_contained_and_writable(name: str, shape: str) -> None:
    document = doc(name)
    write = document["$defs"][shape]
    obj = REGISTRY[name]
    props = write["properties"]
    assert write["additionalProperties"] is False
    for pointer, node in walk(write):
        assert node.get("readOnly") is not True, pointer
        ref = node.get("$ref")
        if isinstance(ref, str):
            assert ref.startswith("#/$defs/"), (pointer, ref)
            assert ref.split("/")[2] not in ("create", "update"), (pointer, ref)
    read_only = {f.name for f in obj.fields if f.read_only}
    assert not read_only & set(props)
    assert "id" not in props
    assert "account_id" not in props
    if shape == "update":
        assert "required" not in write
        assert not any("default" in p for p in props.values())
        assert not {f.name for f in obj.fields if f.write_once} & set(props)


@pytest.mark.parametrize("name", NAMES)
def test_nullable_fields_use_type_arrays(name: str) -> None:
    document = doc(name)
    for shape in (document, document["$defs"]["create"], document["$defs"]["update"]):
        for field_name, prop in shape["properties"].items():
            field = REGISTRY[name].field(field_name)
            assert field is not None
            assert "anyOf" not in prop and "oneOf" not in prop, field_name
            if field.nullable:
                assert isinstance(prop["type"], list) and "null" in prop["type"], field_name
                assert is_valid({"$defs": {}, **prop}, None, None)
            else:
                assert isinstance(prop["type"], str), field_name


@pytest.mark.parametrize("name", NAMES)
def test_every_pattern_compiles_in_python_and_has_no_python_only_syntax(name: str) -> None:
    patterns = [
        node["pattern"] for _, node in walk(doc(name)) if isinstance(node.get("pattern"), str)
    ]
    assert patterns  # at least the id pattern
    for pattern in patterns:
        re.compile(pattern)
        assert "(?P" not in pattern and "\\A" not in pattern and "\\Z" not in pattern


@pytest.mark.parametrize("name", NAMES)
def test_read_shape_has_readable_fields_only_and_required_as_on_create(name: str) -> None:
    obj = REGISTRY[name]
    document = doc(name)
    readable = [f.name for f in obj.fields if not f.write_only]
    assert list(document["properties"]) == readable
    for field in obj.fields:
        if field.read_only:
            assert document["properties"][field.name]["readOnly"] is True
    assert document["required"] == document["$defs"]["create"]["required"]


@pytest.mark.parametrize("name", NAMES)
def test_x_aether_describes_relations_operators_and_links(name: str) -> None:
    obj = REGISTRY[name]
    x = doc(name)["x-aether"]
    assert x["name"] == name
    assert x["children"] == [c.name for c in obj.children]
    assert x["parent"] == (
        {"type": obj.parent.target, "field": obj.parent.field} if obj.parent else None
    )
    for field in obj.fields:
        if field.write_only:
            assert field.name not in x["operators"]
        else:
            assert x["operators"][field.name] == list(operators_for(field))
    assert x["sortable"] == [f.name for f in obj.fields if f.sortable and not f.write_only]
    assert x["default_sort"] == list(obj.default_sort)
    links = x["links"]
    assert links["collection"] == f"https://api.example.com/v3/crud/{name}"
    assert links["search"] == f"https://api.example.com/v3/crud/{name}/search"
    assert len(links["nested"]) == len(REGISTRY.ancestors(name))
    assert x["create"] is obj.permissions.create


def test_index_lists_every_type() -> None:
    index = schema_index(REGISTRY)
    assert [e["name"] for e in index["data"]] == NAMES
    by_name = {e["name"]: e for e in index["data"]}
    assert by_name["event_session"]["parent"] == {"type": "event", "field": "event_id"}
    assert by_name["account"]["parent"] is None
    assert "event_session" in by_name["event"]["children"]
    assert by_name["event"]["links"]["schema"] == "/v3/crud/event/schema"
    for entry in index["data"]:
        assert set(entry) >= {"name", "title", "parent", "children", "links"}


# -- constraints that must not be dropped -------------------------------------------------


def test_event_code_pattern_and_length() -> None:
    document = doc("event")
    code = document["$defs"]["create"]["properties"]["code"]
    assert code["pattern"] == "^[A-Za-z0-9_-]+$"
    assert code["maxLength"] == 32
    assert is_valid(
        document, "create", {"name": "Gala", "starts_at": "2026-01-01T10:00:00Z", "code": "GALA_26"}
    )
    assert not is_valid(
        document, "create", {"name": "Gala", "starts_at": "2026-01-01T10:00:00Z", "code": "ga la"}
    )
    assert not is_valid(
        document, "create", {"name": "Gala", "starts_at": "2026-01-01T10:00:00Z", "code": "x" * 33}
    )


def test_event_create_requires_name_and_starts_at_and_checks_datetime() -> None:
    document = doc("event")
    assert set(document["$defs"]["create"]["required"]) == {"name", "starts_at"}
    assert not is_valid(document, "create", {"name": "Gala"})
    assert is_valid(
        document, "create", {"name": "Gala", "starts_at": "2026-01-01T10:00:00.123+02:00"}
    )
    assert not is_valid(document, "create", {"name": "Gala", "starts_at": "2026-01-01T10:00:00"})
    assert not is_valid(
        document, "create", {"name": "Gala", "starts_at": "2026-01-01T10:00:00Z", "id": "x"}
    )
    assert is_valid(document, "update", {})
    assert not is_valid(document, "update", {"status": "Open"})  # enums are case-sensitive


@pytest.mark.parametrize("name", ["event", "event_session"])
def test_capacity_minimum_zero(name: str) -> None:
    document = doc(name)
    capacity = document["$defs"]["update"]["properties"]["capacity"]
    assert capacity["minimum"] == 0
    assert capacity["type"] == ["integer", "null"]
    assert is_valid(document, "update", {"capacity": 0})
    assert is_valid(document, "update", {"capacity": None})
    assert not is_valid(document, "update", {"capacity": -1})
    assert not is_valid(document, "update", {"capacity": 1.5})


def test_event_timezone_is_a_non_standard_format_kept_apart() -> None:
    timezone = doc("event")["properties"]["timezone"]
    assert timezone["x-format"] == "iana-timezone"
    assert "format" not in timezone
    assert timezone["default"] == "UTC"


@pytest.mark.parametrize(("value", "ok"), [(9.99, False), (10, True), (500, True), (500.01, False)])
def test_badge_width_bounds(value: float, ok: bool) -> None:
    document = doc("event_badge_template")
    body = {"event_id": "A" * 22, "name": "B", "width_mm": value, "height_mm": 50}
    assert is_valid(document, "create", body) is ok
    assert is_valid(document, "update", {"width_mm": value}) is ok


def test_badge_layout_embeds_the_model_schema() -> None:
    document = doc("event_badge_template")
    layout = document["$defs"]["create"]["properties"]["layout"]
    assert layout["required"] == ["elements"]
    assert layout["default"] == {"elements": []}
    element = {"field": "name", "x": 1, "y": 2, "font_size": 12}
    assert is_valid(document, "update", {"layout": {"elements": [element]}})
    assert not is_valid(document, "update", {"layout": {"elements": [{**element, "font_size": 0}]}})
    assert not is_valid(document, "update", {"layout": {"elements": [{"field": "name"}]}})
    assert not is_valid(document, "update", {"layout": {}})


def test_user_password_is_write_only() -> None:
    document = doc("user")
    assert "password" not in document["properties"]
    password = document["$defs"]["create"]["properties"]["password"]
    assert password["minLength"] == 12
    assert password["writeOnly"] is True
    assert "password" in document["$defs"]["update"]["properties"]
    assert not is_valid(document, "create", {"email": "a@example.com", "password": "short"})
    assert is_valid(document, "create", {"email": "a@example.com", "password": "long enough pw"})
    assert not is_valid(document, "create", {"email": "not an email"})


def test_parent_field_is_required_on_flat_create_and_says_so() -> None:
    document = doc("event_session")
    create = document["$defs"]["create"]
    assert "event_id" in create["required"]
    assert "nested POST" in create["properties"]["event_id"]["description"]
    assert create["properties"]["event_id"]["pattern"] == "^[A-Za-z0-9_-]{22}$"


def test_tenant_children_expose_account_id_read_only_and_account_does_not() -> None:
    assert "account_id" not in doc("account")["properties"]
    account_id = doc("event")["properties"]["account_id"]
    assert account_id["readOnly"] is True
    assert doc("event")["x-aether"]["parent"] == {"type": "account", "field": "account_id"}


def test_write_once_in_create_not_update() -> None:
    document = doc("account")
    assert "slug" in document["$defs"]["create"]["properties"]
    assert "slug" not in document["$defs"]["update"]["properties"]
    assert (
        document["$defs"]["create"]["properties"]["slug"]["pattern"] == "^[a-z0-9][a-z0-9-]{1,62}$"
    )


@pytest.mark.parametrize("name", ["file", "account", "api_key"])
def test_types_without_create_are_marked(name: str) -> None:
    document = doc(name)
    assert document["x-aether"]["create"] is False
    assert document["$defs"]["create"]["x-aether"]["create"] is False


def test_event_file_reference_is_described() -> None:
    x = doc("event_file")["x-aether"]
    assert x["references"] == [{"name": "file", "type": "file", "field": "file_id"}]
    assert x["relations"]["file"] == {"kind": "reference", "type": "file", "field": "file_id"}


def test_collection_paths_walk_every_ancestor_suffix() -> None:
    assert collection_paths(REGISTRY, "event_session") == [
        "/v3/crud/event_session",
        "/v3/crud/event/{event_id}/event_session",
        "/v3/crud/account/{account_id}/event/{event_id}/event_session",
    ]
    assert collection_paths(REGISTRY, "account") == ["/v3/crud/account"]


# -- field level --------------------------------------------------------------------------


def test_decimal_travels_as_a_pattern_checked_string() -> None:
    field = FieldInfo(name="price", column="price", kind="decimal", nullable=False, minimum=0)
    schema = field_schema(field)
    assert schema["type"] == "string"
    assert schema["x-minimum"] == 0 and "minimum" not in schema
    check = Draft202012Validator(schema)
    assert check.is_valid("-12.50") and check.is_valid("3")
    assert not check.is_valid("1e5") and not check.is_valid(12.5)


def test_nullable_enum_admits_null() -> None:
    field = FieldInfo(name="tier", column="tier", kind="enum", enum=("a", "b"))
    schema = field_schema(field)
    assert schema["type"] == ["string", "null"] and schema["enum"] == ["a", "b", None]


def test_array_items_and_date() -> None:
    tags = field_schema(
        FieldInfo(name="tags", column="tags", kind="array", items="string", nullable=False)
    )
    no_nul = {"type": "string", "pattern": NO_NUL_PATTERN}
    assert tags == {"type": "array", "items": no_nul, "title": "Tags"}
    day = field_schema(FieldInfo(name="day", column="day", kind="date", nullable=False))
    assert day["format"] == "date"


def test_embedded_fragment_with_refs_is_hoisted_and_rebased() -> None:
    tree = {
        "type": "object",
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            }
        },
        "properties": {"root": {"$ref": "#/$defs/node"}},
    }
    field = FieldInfo(name="tree", column="tree", kind="object", nullable=False, json_schema=tree)
    obj = ObjectType(
        name="thing",
        table="thing",
        title="Thing",
        tenant_owned=False,
        fields=(
            FieldInfo(name="id", column="id_random", kind="id", nullable=False, read_only=True),
            field,
        ),
    )
    registry = Registry(types={"thing": obj})
    document = type_schema(obj, registry)
    Draft202012Validator.check_schema(document)
    assert document["$defs"]["create"]["properties"]["tree"]["$ref"] == "#/$defs/tree"
    assert document["$defs"]["tree.node"]["properties"]["kids"]["items"] == {
        "$ref": "#/$defs/tree.node"
    }
    good = {"tree": {"root": {"kids": [{"kids": []}]}}}
    assert is_valid(document, "create", good)
    assert not is_valid(document, "create", {"tree": {"root": {"kids": [1]}}})
    standalone = create_schema(obj)
    assert "tree.node" in standalone["$defs"]
    assert jsonschema.Draft202012Validator(standalone).is_valid(good)
    assert update_schema(obj)["properties"]["tree"]["$ref"] == "#/$defs/tree"


@pytest.mark.parametrize(
    ("python", "ecma"),
    [
        (r"\A[a-z]+\Z", "^[a-z]+$"),
        (r"^(?P<y>[0-9]{4})-(?P=y)$", r"^(?<y>[0-9]{4})-\k<y>$"),
        (r"^\\A$", r"^\\A$"),
        (r"^(?:a|b)(?=c)(?<!d)$", r"^(?:a|b)(?=c)(?<!d)$"),
    ],
)
def test_ecma_pattern(python: str, ecma: str) -> None:
    assert ecma_pattern(python) == ecma


def test_ecma_pattern_refuses_inline_flags() -> None:
    with pytest.raises(ValueError, match="inline flag"):
        ecma_pattern("(?i)abc")


@given(st.from_regex(r"\A[A-Za-z0-9_-]{1,32}\Z"))
def test_event_code_schema_accepts_what_the_pattern_allows(code: str) -> None:
    assert is_valid(doc("event"), "update", {"code": code})


# -- search grammar -----------------------------------------------------------------------


@functools.cache
def _search_validator(name: str) -> Draft202012Validator:
    defs = {f"{o.name}.filter": filter_schema(o) for o in REGISTRY}
    return Draft202012Validator({"$defs": defs, **search_schema(REGISTRY[name], registry=REGISTRY)})


def test_filter_schema_accepts_the_spec_example() -> None:
    body = {
        "filter": {
            "status": {"_in": ["open", "draft"]},
            "_or": [
                {"name": {"_icontains": "gala"}},
                {"starts_at": {"_gte": "2026-01-01T00:00:00Z"}},
            ],
            "event_session": {"_some": {"room": "A1"}},
            "account": {"status": "active"},
        },
        "sort": ["-starts_at", "name"],
        "fields": ["id", "name"],
        "include": ["event_session"],
        "limit": 50,
        "after": None,
        "count": True,
    }
    check = _search_validator("event")
    assert list(check.iter_errors(body)) == []


@pytest.mark.parametrize(
    "body",
    [
        {"filter": {"nope": 1}},
        {"filter": {"status": {"_icontains": "x"}}},  # enums take no text operators
        {"filter": {"capacity": {"_gt": "ten"}}},
        {"filter": {"metadata": {"_eq": {}}}},
        {"filter": {"event_session": {"room": "A1"}}},  # a to-many needs _some/_none
        {"filter": {"_not": {"_or": [{"nope": 1}]}}},
        {"filter": {"name": {"_between": ["a"]}}},
        {"sort": ["metadata"]},
        {"limit": 0},
        {"unknown": True},
    ],
)
def test_filter_schema_refuses(body: dict[str, Any]) -> None:
    assert not _search_validator("event").is_valid(body)


# -- the schema says what the API checks (agreement without a database) ------------------------

#: Text with NUL and control characters, time zone names real and not, e-mail spellings.
ODD_TEXT = (
    *("UTC", "Europe/Paris", "America/Argentina/Buenos_Aires", "Etc/GMT+5", "Factory"),
    *("Mars/Olympus", "utc", "Europe/paris", "../etc/passwd", "", "Europe/Paris\x00"),
    *("ada@example.com", "a b@c.d", "x@y", "x\x00@y.z", "@b.c", "a@b.c"),
)
TEXTLIKE = (
    st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
    | st.sampled_from(ODD_TEXT)
    | st.builds(lambda a, b: f"{a}\x00{b}", st.text(max_size=3), st.text(max_size=3))
)
#: Every writable string (and string-array) field a PATCH may set, by type.
TEXT_FIELDS = [
    (o.name, f.name)
    for o in REGISTRY
    if o.permissions.update
    for f in o.fields
    if f.is_writable and not f.write_once and (f.kind == "string" or f.items == "string")
]


@functools.cache
def _update_validator(name: str) -> Draft202012Validator:
    return validator(doc(name), "update")


def _api_accepts_update(name: str, body: dict[str, Any]) -> bool:
    raw = {k: msgspec.Raw(msgspec.json.encode(v)) for k, v in body.items()}
    try:
        WriteDecoder(REGISTRY[name]).update(raw, current={})
    except WriteErrors:
        return False
    return True


def test_text_rules_have_fields_to_cover() -> None:
    names = {f for _, f in TEXT_FIELDS}
    assert {"name", "timezone", "email", "tags"} <= names, names


@pytest.mark.parametrize(("name", "field"), TEXT_FIELDS)
@given(value=TEXTLIKE)
def test_text_field_schema_decides_as_the_write_path(name: str, field: str, value: str) -> None:
    """NUL, IANA time zones and e-mail syntax: the schema refuses exactly what a write does."""
    # Python's `$` also matches before a final newline, ECMA-262's does not (tested above).
    assume(not value.endswith("\n"))
    prop = doc(name)["$defs"]["update"]["properties"][field]
    body = {field: [value] if "array" in prop["type"] else value}
    schema_ok = _update_validator(name).is_valid(body)
    assert schema_ok == _api_accepts_update(name, body), (name, body, schema_ok)


def test_time_zones_and_nul_are_patterns() -> None:
    props = doc("event")["$defs"]["create"]["properties"]
    zones = props["timezone"]["pattern"]
    assert re.search(zones, "Etc/GMT+1") and re.search(zones, "Europe/Paris")
    assert not re.search(zones, "Etc/GMT+1x") and not re.search(zones, "Mars/Olympus")
    assert props["name"]["pattern"] == NO_NUL_PATTERN
    assert {"pattern": NO_NUL_PATTERN} in props["code"]["allOf"]
    email = doc("user")["$defs"]["create"]["properties"]["email"]
    assert email["format"] == "email" and re.search(email["pattern"], "ada@example.com")


# -- the search body: schema decision equals the parser's ------------------------------------

SEARCH_TYPES = ["event", "event_session", "account"]


def _relation_names() -> list[str]:
    return sorted({r.name for o in REGISTRY for r in (o.parent, *o.references, *o.children) if r})


def _sort_keys(name: str) -> list[str]:
    """Two sortable fields both ways (so some lists name a field twice), one field that is
    not sortable, one unknown."""
    fields = REGISTRY[name].fields
    keys = [f.name for f in fields if f.is_readable and f.sortable][:2]
    plain = [f.name for f in fields if f.is_readable and not f.sortable][:1]
    return [*keys, *(f"-{k}" for k in keys), *plain, "nope"]


TEXT_VALUE = st.text(max_size=4) | st.just("a\x00b")


@st.composite
def search_body(draw: st.DrawFn, name: str) -> dict[str, Any]:
    filters = {
        "event": {
            "name": TEXT_VALUE | st.fixed_dictionaries({"_icontains": TEXT_VALUE}),
            "capacity": st.fixed_dictionaries(
                {"_gt": st.integers(-(2**70), 2**70) | st.sampled_from([1.5, 10.0])}
            ),
            "status": st.fixed_dictionaries(
                {"_in": st.lists(st.sampled_from(["open", "draft", "Open"]), max_size=2)}
            ),
            "ends_at": st.none(),
            "timezone": st.sampled_from(["UTC", "Mars/Olympus"]),
        },
        "event_session": {
            "room": st.none() | TEXT_VALUE,
            "title": st.fixed_dictionaries({"_startswith": TEXT_VALUE}),
        },
        "account": {
            "name": TEXT_VALUE,
            "slug": st.fixed_dictionaries({"_nin": st.lists(TEXT_VALUE, max_size=2)}),
        },
    }[name]
    relation = st.lists(st.sampled_from(_relation_names()), min_size=1, max_size=4).map(".".join)
    optional = {
        "filter": st.none() | st.fixed_dictionaries({}, optional=filters),
        "sort": st.none() | st.lists(st.sampled_from(_sort_keys(name)), max_size=3),
        "include": st.none() | st.lists(relation, max_size=2),
        "fields": st.none() | st.lists(st.sampled_from(["id", "name", "nope"]), max_size=2),
        "limit": st.sampled_from([None, 0, 1, 10.0, 1.5, 500, 501, 2**70, True, "5"]),
        "offset": st.sampled_from([None, 0, 5, 2**31 - 1, 2**31, -1]),
        "after": st.none() | st.just("opaque"),
        "count": st.sampled_from([None, True, "yes"]),
    }
    body: dict[str, Any] = draw(st.fixed_dictionaries({}, optional=optional))
    return body


@pytest.mark.parametrize("name", SEARCH_TYPES)
@given(data=st.data())
def test_search_schema_decides_as_the_parser(name: str, data: st.DataObject) -> None:
    body = data.draw(search_body(name), label="body")
    schema_ok = _search_validator(name).is_valid(body)
    try:
        parse_search(body, REGISTRY[name], REGISTRY, max_page_size=500)
        parser_ok = True
    except AetherError:
        parser_ok = False
    assert schema_ok == parser_ok, (body, schema_ok)


@pytest.mark.parametrize(
    "value", [10.0, -219.0, 2.0**53, 1.5, 2**63, -(2**63) - 1, 2.0**63, "5", True]
)
def test_integer_filter_values_decide_as_the_schema(value: Any) -> None:
    """JSON Schema's `integer` includes 10.0; so does a filter on an integer field."""
    for body in ({"filter": {"capacity": value}}, {"filter": {"version": {"_in": [1, value]}}}):
        schema_ok = _search_validator("event").is_valid(body)
        try:
            parse_search(body, REGISTRY["event"], REGISTRY, max_page_size=500)
            parser_ok = True
        except AetherError:
            parser_ok = False
        assert schema_ok == parser_ok, (body, schema_ok)
