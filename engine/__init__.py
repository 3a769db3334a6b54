"""Aether's HTTP engine: the app factory, CRUD, search, auth, actions and the CLI."""

from engine.app import create_app
from engine.settings import Settings, load_settings

__all__ = ["Settings", "create_app", "load_settings"]
