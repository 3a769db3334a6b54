"""`GET /v3/realtime` (WebSocket) and `GET /v3/realtime/sse` (Server-Sent Events), SPEC 6.5.

`Realtime` is what `create_app` plugs in: it chooses the feed (Redis streams when
`AE_REDIS_URL` is set, else this process's memory), binds it to the runtime's engines so
committed writes are published, and serves both routes from the same `Session` logic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from engine.auth.api_keys import extract_credentials
from engine.authenticate import authenticate, verify_credentials
from engine.errors import (
    AetherError,
    ServiceUnavailableError,
    UnauthorizedError,
    ValidationError,
)
from engine.principal import Principal
from engine.realtime.changes import bind_feed, unbind_feed
from engine.realtime.feed import (
    Feed,
    FeedUnavailableError,
    MemoryFeed,
    Seq,
    format_seq,
    parse_seq,
)
from engine.realtime.redis_feed import RedisFeed
from engine.realtime.session import MAX_BACKLOG, Session, encode_message, error_message
from engine.runtime import Runtime

logger = logging.getLogger(__name__)

WS_PATH = "/v3/realtime"
SSE_PATH = "/v3/realtime/sse"
PING_SECONDS = 20.0
AUTH_SECONDS = 5.0
RECHECK_SECONDS = 20.0  # how often a live connection's credentials are verified again
MAX_CLIENT_MESSAGE = 64 * 1024
CLOSE_SECONDS = 5.0  # how long a close frame may wait for a client that reads nothing
CLOSE_UNAUTHORIZED = 4401
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
PING = encode_message({"type": "ping"}).decode()
SSE_PARAMS = frozenset({"object", "filter", "since", "access_token"})


class Subscribe(msgspec.Struct, forbid_unknown_fields=True, tag="subscribe", tag_field="type"):
    id: str
    object: str
    filter: dict[str, Any] | None = None
    since: str | None = None


class Unsubscribe(msgspec.Struct, forbid_unknown_fields=True, tag="unsubscribe", tag_field="type"):
    id: str


class Auth(msgspec.Struct, forbid_unknown_fields=True, tag="auth", tag_field="type"):
    token: str


ClientMessage = Subscribe | Unsubscribe | Auth
_CLIENT = msgspec.json.Decoder(ClientMessage)


def decode_client_message(data: str | bytes) -> Subscribe | Unsubscribe | Auth:
    """A client message; `ValidationError` (422) naming what is wrong."""
    if len(data) > MAX_CLIENT_MESSAGE:
        raise ValidationError.single("", f"messages are at most {MAX_CLIENT_MESSAGE} bytes")
    try:
        message: Subscribe | Unsubscribe | Auth = _CLIENT.decode(data)
        return message
    except msgspec.ValidationError as exc:
        path = str(exc).rpartition(" - at `$")[2].rstrip("`").lstrip(".")
        raise ValidationError.single(path, str(exc).partition(" - at ")[0]) from None
    except msgspec.DecodeError:
        raise ValidationError.single("", "expected a JSON object") from None


def parse_since(value: str | None, path: str) -> Seq | None:
    if value is None:
        return None
    try:
        return parse_seq(value)
    except ValueError:
        raise ValidationError.single(path, "expected a seq from a change message") from None


def token_headers(token: str) -> list[tuple[bytes, bytes]]:
    """A token from a message or a query parameter as the header it would have come in."""
    value = token.strip().encode("latin-1", "replace")
    if token.startswith("ae_"):
        return [(b"x-api-key", value)]
    return [(b"authorization", b"Bearer " + value)]


class Credentialed:
    """How a connection authenticates, again and again: the same credentials each time."""

    def __init__(self, conn: HTTPConnection, token: str | None = None) -> None:
        if token is not None:
            headers = [
                (k, v)
                for k, v in conn.scope["headers"]
                if k not in (b"authorization", b"x-api-key")
            ]
            conn = HTTPConnection({**conn.scope, "headers": headers + token_headers(token)})
        self.conn = conn

    def present(self) -> bool:
        return extract_credentials(self.conn.headers.items()) is not None

    async def verify(self, rt: Runtime, *, again: bool = False) -> tuple[Principal, float | None]:
        """The principal, and when (time.monotonic()) its token expires (None: a key).

        The first time counts against the rate limit like any request; `again` (a live
        connection's periodic check) does not.
        """
        credentials = extract_credentials(self.conn.headers.items())
        if again and credentials is not None:
            principal = await verify_credentials(rt, credentials)
        else:
            principal = await authenticate(self.conn)
        expires = None
        if credentials is not None and credentials.kind == "jwt":
            left = rt.jwt.verify(credentials.value).exp - time.time()
            expires = time.monotonic() + max(left, 0.0)
        return principal, expires


class Realtime:
    """The change feed of one app and its two routes."""

    def __init__(self, rt: Runtime, feed: Feed | None = None) -> None:
        self.rt = rt
        url = rt.settings.redis_url
        cluster = rt.settings.redis_cluster
        self.feed: Feed = feed or (RedisFeed(url, cluster=cluster) if url else MemoryFeed())
        bind_feed(rt.engines, self.feed)

    async def start(self) -> None:
        await self.feed.start()

    async def close(self) -> None:
        unbind_feed(self.rt.engines)
        await self.feed.close()

    def routes(self) -> list[BaseRoute]:
        return [
            WebSocketRoute(WS_PATH, self.websocket),
            Route(SSE_PATH, self.sse, methods=["GET"]),
        ]

    def session(self, principal: Principal, instance: str) -> Session:
        return Session(self.feed, self.rt.registry, principal, self.rt.dialect, instance)

    # -- WebSocket --------------------------------------------------------------------------

    async def websocket(self, ws: WebSocket) -> None:
        await ws.accept()
        try:
            auth = await self._ws_credentials(ws)
            principal, expires = await auth.verify(self.rt)
            session = self.session(principal, WS_PATH)
        except WebSocketDisconnect:
            return
        except AetherError as exc:
            code = CLOSE_UNAUTHORIZED if exc.status == 401 else CLOSE_POLICY
            with contextlib.suppress(Exception):
                await ws.send_text(error_message(exc, None, WS_PATH).decode())
                await ws.close(code)
            return
        try:
            await self._ws_serve(ws, session, auth, expires)
        finally:
            session.close()

    async def _ws_credentials(self, ws: WebSocket) -> Credentialed:
        auth = Credentialed(ws)
        if auth.present():
            return auth
        try:
            async with asyncio.timeout(AUTH_SECONDS):
                data = await _receive(ws)
        except TimeoutError:
            raise UnauthorizedError(
                'Send credentials, or {"type": "auth", "token": ...} first'
            ) from None
        try:
            message = decode_client_message(data)
        except ValidationError:
            message = None
        if not isinstance(message, Auth):
            raise UnauthorizedError('The first message must be {"type": "auth", "token": ...}')
        return Credentialed(ws, message.token)

    async def _ws_serve(
        self, ws: WebSocket, session: Session, auth: Credentialed, expires: float | None
    ) -> None:
        reader = asyncio.create_task(self._ws_read(ws, session))
        writer = asyncio.create_task(self._ws_write(ws, session, auth, expires))
        behind = asyncio.create_task(session.overflow.wait())
        tasks = (reader, writer, behind)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if session.overflowed:  # the writer may be stuck on a client that reads nothing
            logger.warning("closed a realtime connection more than %d messages behind", MAX_BACKLOG)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_SECONDS):
                    await ws.close(CLOSE_POLICY, "more than 1000 messages behind")

    async def _ws_read(self, ws: WebSocket, session: Session) -> None:
        while True:
            data = await _receive(ws)
            try:
                await self._handle(session, decode_client_message(data))
            except AetherError as exc:
                sid = _message_id(data)
                session.push(None, error_message(exc, sid, WS_PATH))
            except FeedUnavailableError:
                down = ServiceUnavailableError("Changes cannot be read now; retry shortly")
                session.push(None, error_message(down, _message_id(data), WS_PATH))

    async def _handle(self, session: Session, message: Subscribe | Unsubscribe | Auth) -> None:
        if isinstance(message, Subscribe):
            since = parse_since(message.since, "since")
            sub = session.check(message.id, message.object, message.filter)
            await session.subscribe(sub, since)
        elif isinstance(message, Unsubscribe):
            if not session.unsubscribe(message.id):
                raise ValidationError.single("id", "no subscription with this id")
        else:
            raise ValidationError.single("type", "already authenticated")

    async def _ws_write(
        self, ws: WebSocket, session: Session, auth: Credentialed, expires: float | None
    ) -> None:
        now = time.monotonic()
        next_ping, next_check = now + PING_SECONDS, now + RECHECK_SECONDS
        while True:
            now = time.monotonic()
            if expires is not None and now >= expires:
                await _ws_refuse(ws, UnauthorizedError("The token expired"))
                return
            if now >= next_check:
                next_check = now + RECHECK_SECONDS
                try:
                    principal, expires = await auth.verify(self.rt, again=True)
                except AetherError as exc:
                    await _ws_refuse(ws, exc)
                    return
                if principal.role != session.principal.role:
                    await _ws_refuse(ws, UnauthorizedError("The credentials' role changed"))
                    return
            if now >= next_ping:
                next_ping = now + PING_SECONDS
                await ws.send_text(PING)
            wait = min(next_ping, next_check, expires or next_ping) - time.monotonic()
            found = await session.next_message(max(wait, 0.0))
            if session.overflowed:
                return
            if found is not None:
                await ws.send_text(found[1].decode())

    # -- Server-Sent Events -------------------------------------------------------------------

    async def sse(self, request: Request) -> Response:
        token = request.query_params.get("access_token")
        auth = Credentialed(
            request, token if token and not Credentialed(request).present() else None
        )
        principal, expires = await auth.verify(self.rt)
        params = request.query_params
        unknown = [k for k in params if k not in SSE_PARAMS]
        if unknown:
            raise ValidationError(
                [{"path": k, "message": "unknown query parameter"} for k in unknown]
            )
        if "object" not in params:
            raise ValidationError.single("object", "name the object type to follow")
        raw_filter: Any = None
        if "filter" in params:
            try:
                raw_filter = msgspec.json.decode(params["filter"])
            except msgspec.DecodeError:
                raise ValidationError.single("filter", "expected URL-encoded JSON") from None
        last = request.headers.get("last-event-id")
        since = (
            parse_since(last, "Last-Event-ID")
            if last
            else parse_since(params.get("since"), "since")
        )
        session = self.session(principal, SSE_PATH)
        sub = session.check(None, params["object"], raw_filter)
        try:
            await session.subscribe(sub, since)
        except FeedUnavailableError:
            session.close()
            raise ServiceUnavailableError("Changes cannot be read now; retry shortly") from None
        except BaseException:
            session.close()
            raise
        session.outbox.popleft()  # `subscribed`: the response itself says so
        return StreamingResponse(
            self._sse_stream(session, auth, expires),
            media_type="text/event-stream",
            headers={
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
                "Vary": "Authorization, X-API-Key",
            },
        )

    async def _sse_stream(
        self, session: Session, auth: Credentialed, expires: float | None
    ) -> AsyncIterator[bytes]:
        try:
            yield b": connected\n\n"
            now = time.monotonic()
            next_ping, next_check = now + PING_SECONDS, now + RECHECK_SECONDS
            while True:
                now = time.monotonic()
                if expires is not None and now >= expires:
                    return
                if now >= next_check:
                    next_check = now + RECHECK_SECONDS
                    try:
                        principal, expires = await auth.verify(self.rt, again=True)
                    except AetherError:
                        return
                    if principal.role != session.principal.role:
                        return
                if now >= next_ping:
                    next_ping = now + PING_SECONDS
                    yield b": ping\n\n"
                wait = min(next_ping, next_check, expires or next_ping) - time.monotonic()
                found = await session.next_message(max(wait, 0.0))
                if session.overflowed:
                    return
                if found is not None:
                    seq, message = found
                    head = b"id: " + format_seq(seq).encode() + b"\n" if seq else b""
                    yield head + b"data: " + message + b"\n\n"
                    if not session.subscriptions:  # ended (a gap): the client must resync
                        return
        finally:
            session.close()


async def _receive(ws: WebSocket) -> str | bytes:
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if text is not None:
        return str(text)
    return bytes(message.get("bytes") or b"")


def _message_id(data: str | bytes) -> str | None:
    try:
        value = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None
    found = value.get("id") if isinstance(value, dict) else None
    return found if isinstance(found, str) else None


async def _ws_refuse(ws: WebSocket, exc: AetherError) -> None:
    await ws.send_text(error_message(exc, None, WS_PATH).decode())
    await ws.close(CLOSE_UNAUTHORIZED)
