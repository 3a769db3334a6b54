"""Object-type descriptors built from SQLAlchemy metadata, and what is generated from them."""

from registry.descriptors import FieldInfo, ObjectType, Permissions, Registry, Relation
from registry.introspect import RegistryError, introspect, load_models

__all__ = [
    "FieldInfo",
    "ObjectType",
    "Permissions",
    "Registry",
    "RegistryError",
    "Relation",
    "introspect",
    "load_models",
]
