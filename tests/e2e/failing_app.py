"""A test-only ASGI factory: the normal app plus `/v3/action/boom`, which always raises.

Start it with `python -m uvicorn tests.e2e.failing_app:create --factory --port N` from the
repository root; the e2e suite checks that the 500 hides the error and the log keeps it.
"""

from __future__ import annotations

from typing import cast

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

import engine.actions
from engine.actions.base import Action, ActionContext, action
from engine.app import create_app
from engine.logging import configure_logging
from engine.settings import load_settings

SECRET_MESSAGE = "secret internals"


async def _boom(ctx: ActionContext, request: Request) -> Response:
    raise RuntimeError(SECRET_MESSAGE)


# FunctionAction's frozen fields read as read-only to mypy, unlike the Protocol's attributes.
BOOM_ACTIONS = cast("list[Action]", [action("GET", "/boom")(_boom), action("POST", "/boom")(_boom)])


def create() -> Starlette:
    """The app from the environment, with the failing actions added."""
    settings = load_settings()
    configure_logging(settings)
    return create_app(settings, actions=[*engine.actions.DEFAULT_ACTIONS, *BOOM_ACTIONS])
