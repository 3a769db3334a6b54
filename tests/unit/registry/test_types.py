"""Write validation (`WriteDecoder`): the error cap bounds both the answer and the work."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

import registry.hints
from models.base import Base
from registry import introspect
from registry.hints import MAX_ERRORS
from registry.types import WriteDecoder, WriteErrors

EVENT = introspect(Base)["event"]


@pytest.fixture
def hint_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = registry.hints.difflib.get_close_matches

    def counted(word: str, *args: Any, **kwargs: Any) -> list[str]:
        calls.append(word)
        return real(word, *args, **kwargs)

    monkeypatch.setattr(registry.hints.difflib, "get_close_matches", counted)
    return calls


def raw(body: dict[str, Any]) -> dict[str, msgspec.Raw]:
    return WriteDecoder(EVENT).decode_object(msgspec.json.encode(body))


@pytest.mark.parametrize("creating", [True, False])
def test_thousands_of_unknown_keys_stop_at_the_cap(hint_calls: list[str], creating: bool) -> None:
    body = raw({f"unknown_{i}": 1 for i in range(60_000)})
    decoder = WriteDecoder(EVENT)
    with pytest.raises(WriteErrors) as exc:
        if creating:
            decoder.create(body, supplied={})
        else:
            decoder.update(body, current={})
    assert len(exc.value.errors) == MAX_ERRORS
    assert len(hint_calls) <= MAX_ERRORS
    assert len(str(exc.value)) < 1000


def test_a_few_mistakes_are_all_reported_with_a_hint() -> None:
    with pytest.raises(WriteErrors) as exc:
        WriteDecoder(EVENT).create(raw({"nmae": "x", "capacity": -1}), supplied={})
    messages = {e.path: e.message for e in exc.value.errors}
    assert messages["nmae"] == 'unknown field (did you mean "name"?)'
    assert {"nmae", "capacity", "name", "starts_at"} <= set(messages)


def test_a_long_unknown_key_is_not_echoed_whole() -> None:
    with pytest.raises(WriteErrors) as exc:
        WriteDecoder(EVENT).update(raw({"x" * 100_000: 1}), current={})
    assert [len(e.path) for e in exc.value.errors] == [100]
