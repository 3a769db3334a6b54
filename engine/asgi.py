"""The ASGI entry point for `aether serve` (one app per worker process)."""

from __future__ import annotations

from starlette.applications import Starlette

from engine.app import create_app
from engine.logging import configure_logging
from engine.settings import load_settings


def create() -> Starlette:
    """Build the app from the environment (uvicorn calls this with `factory=True`)."""
    settings = load_settings()
    configure_logging(settings)
    return create_app(settings)
