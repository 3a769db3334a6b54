"""`aether demo`: a demo account with events, sessions, people and files, made once."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from engine.blob_binding import bind_blob_store
from engine.blobs import BlobStore, create_blob_store
from engine.db import create_engine
from engine.provisioning import find_account, insert_account, insert_api_key
from engine.settings import Settings
from models.base import Base, new_public_id, utcnow

DEMO_SLUG = "demo"
DEMO_KEY_FILE = "demo-api-key.txt"


async def _chunks(data: bytes) -> Any:
    yield data


def _stamp() -> dict[str, Any]:
    now = utcnow()
    return {"id_random": new_public_id(), "created_at": now, "updated_at": now, "version": 1}


async def _insert(conn: AsyncConnection, table: str, **values: Any) -> int:
    result = await conn.execute(Base.metadata.tables[table].insert().values(**_stamp(), **values))
    pk = result.inserted_primary_key
    assert pk is not None
    return int(pk[0])


async def load_demo(settings: Settings) -> tuple[str, bool]:
    """The demo account's API key, and whether this call created the account.

    The key is kept in `<blob dir>/../demo-api-key.txt` so later runs can print it again;
    when that file is gone, a fresh owner key is made.
    """
    import models  # noqa: F401  # registers every table

    tables = dict(Base.metadata.tables)
    key_file = Path(settings.blob_dir).resolve().parent / DEMO_KEY_FILE  # noqa: ASYNC240  # CLI, once
    engine = create_engine(settings)
    store = create_blob_store(settings)
    try:
        await bind_blob_store(engine, tables["system_setting"], store)  # before any blob
        async with engine.begin() as conn:
            found = await find_account(conn, tables, DEMO_SLUG)
            if found is not None:
                if key_file.is_file():
                    return key_file.read_text().strip(), False
                made = await insert_api_key(
                    conn, tables, account_id=found[0], name="demo", role="owner"
                )
                key = made.key
                created = False
            else:
                account = await insert_account(
                    conn,
                    tables,
                    name="Demo Events Ltd",
                    slug=DEMO_SLUG,
                    owner_email="owner@demo.example",
                    owner_password="demo-password-123",
                )
                await _demo_data(conn, store, account.pk)
                key, created = account.api_key, True
    finally:
        await engine.dispose()
        await store.close()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    return key, created


async def _demo_data(conn: AsyncConnection, store: BlobStore, account: int) -> None:
    start = dt.datetime(2027, 3, 14, 9, 0, tzinfo=dt.UTC)
    files = []
    for name, data, mime in (
        ("welcome.txt", b"Welcome to the Aether demo.\n", "text/plain"),
        ("programme.csv", b"time,title\n09:00,Opening\n10:00,Keynote\n", "text/csv"),
    ):
        blob = await store.put(_chunks(data))
        files.append(
            await _insert(
                conn,
                "file",
                account_id=account,
                name=name,
                sha256=blob.sha256,
                size=blob.size,
                mime_type=mime,
            )
        )
    for index, (name, code) in enumerate((("Spring Gala", "GALA27"), ("Tech Summit", "TS27"))):
        starts = start + dt.timedelta(days=30 * index)
        event = await _insert(
            conn,
            "event",
            account_id=account,
            name=name,
            code=code,
            status="open",
            starts_at=starts,
            ends_at=starts + dt.timedelta(hours=10),
            timezone="Europe/Paris",
            venue="Grand Hall",
            capacity=500,
            metadata={"demo": True},
        )
        for n, room in enumerate(("A1", "B2", "C3")):
            await _insert(
                conn,
                "event_session",
                account_id=account,
                event_id=event,
                title=f"Session {n + 1}",
                starts_at=starts + dt.timedelta(hours=n + 1),
                ends_at=starts + dt.timedelta(hours=n + 2),
                room=room,
                capacity=100,
            )
        for first, last in (("Ada", "Lovelace"), ("Alan", "Turing"), ("Grace", "Hopper")):
            await _insert(
                conn,
                "event_person",
                account_id=account,
                event_id=event,
                first_name=first,
                last_name=last,
                email=f"{first.lower()}@example.com",
                company="Demo",
                tags=["vip"],
            )
        await _insert(
            conn,
            "event_badge_template",
            account_id=account,
            event_id=event,
            name="Default",
            width_mm=90,
            height_mm=55,
            is_default=True,
            layout={"elements": [{"field": "first_name", "x": 5, "y": 5, "font_size": 12}]},
        )
        for position, file_pk in enumerate(files):
            await _insert(
                conn,
                "event_file",
                account_id=account,
                event_id=event,
                file_id=file_pk,
                role="attachment",
                title=None,
                position=position,
            )
