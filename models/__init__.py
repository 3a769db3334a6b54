"""Aether's domain models (SPEC section 3). Importing this package registers every type."""

from models import accounts, events, files, system
from models.base import Base

__all__ = ["Base", "accounts", "events", "files", "system"]
