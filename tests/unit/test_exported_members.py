"""The public surface of `engine` and `registry` is what their `__all__` says, and it imports."""

from __future__ import annotations

import engine
import registry


def test_engine_exports() -> None:
    assert sorted(engine.__all__) == ["Settings", "create_app", "load_settings"]
    for name in engine.__all__:
        assert getattr(engine, name) is not None


def test_registry_exports() -> None:
    assert sorted(registry.__all__) == [
        "FieldInfo",
        "ObjectType",
        "Permissions",
        "Registry",
        "RegistryError",
        "Relation",
        "introspect",
        "load_models",
    ]
    for name in registry.__all__:
        assert getattr(registry, name) is not None
