"""Rules stated once and used everywhere: the public-id pattern and the role lists."""

from __future__ import annotations

import msgspec
import pytest

import models  # noqa: F401  # registers every model on Base
from engine.actions.specs import API_KEY
from engine.errors import NotFoundError
from engine.paths import parse_crud_path
from engine.search.values import parse_scalar
from models.base import Base
from registry import introspect
from registry.descriptors import ROLE_ORDER, TENANT_ROLES, is_public_id
from registry.jsonschema import type_schema
from registry.types import WriteDecoder, WriteErrors

REG = introspect(Base)
GOOD = "A" * 21 + "-"


@pytest.mark.parametrize("bad", [GOOD + "\n", GOOD[:-1], GOOD + "x", "A" * 21 + "+", "\n"])
def test_one_public_id_rule_for_paths_filters_and_bodies(bad: str) -> None:
    assert is_public_id(GOOD) and not is_public_id(bad)
    assert parse_crud_path(["event", GOOD], REG).public_id == GOOD
    with pytest.raises(NotFoundError):
        parse_crud_path(["event", bad], REG)
    event_id = REG["event_session"].field("event_id")
    assert event_id is not None
    assert parse_scalar(event_id, GOOD) == GOOD and parse_scalar(event_id, bad) == ""
    decoder = WriteDecoder(REG["event_session"])
    with pytest.raises(WriteErrors) as exc:
        decoder.update(decoder.decode_object(msgspec.json.encode({"event_id": bad})), current={})
    assert [e.path for e in exc.value.errors] == ["event_id"]


def test_one_role_list() -> None:
    assert (*TENANT_ROLES, "system") == ROLE_ORDER
    for type_name in ("user", "api_key"):
        schema = type_schema(REG[type_name], REG)
        assert schema["properties"]["role"]["enum"] == list(TENANT_ROLES)
    assert API_KEY.request_schema is not None
    assert API_KEY.request_schema["properties"]["role"]["enum"] == list(TENANT_ROLES)
