"""Realtime (SPEC 6.5): one change feed for every object type, over WebSocket and SSE.

changes (what writes note, published after commit) -> feed (memory or Redis streams, one log
per account) -> session (subscriptions, filters, bounded outbox) -> service (the routes,
`engine.realtime.service.Realtime`, plugged in by `create_app`). This module imports only
`changes`, which the repository needs, so importing it pulls in nothing else.
"""

from __future__ import annotations

from engine.realtime.changes import Change, bind_feed, note_change, publish_noted

__all__ = ["Change", "bind_feed", "note_change", "publish_noted"]
