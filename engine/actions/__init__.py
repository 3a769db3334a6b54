"""Hand-written action plugins served under `/v3/action` beside the generated CRUD."""

from __future__ import annotations

from engine.actions.api_key import CreateApiKey
from engine.actions.base import Action, ActionContext, FunctionAction, action
from engine.actions.download import Download, GetBlob
from engine.actions.upload import UploadToEvent

DEFAULT_ACTIONS: tuple[Action, ...] = (CreateApiKey(), UploadToEvent(), GetBlob(), Download())

__all__ = ["DEFAULT_ACTIONS", "Action", "ActionContext", "FunctionAction", "action"]
