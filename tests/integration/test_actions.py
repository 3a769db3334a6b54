"""Upload and download actions (SPEC 6.1-6.3) over HTTP on every backend."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

import engine.actions.download as download_module
import engine.actions.upload as upload_module
from engine.app import create_app
from engine.blobs.filesystem import STORE_ID_FILE
from engine.errors import NotFoundError
from engine.runtime import Runtime, build_runtime
from tests.integration.conftest import Api, make_settings
from tests.integration.test_auth_http import sign
from tests.statements import count_statements

EVENT = {"name": "Spring Gala", "starts_at": "2027-03-14T09:00:00+01:00", "code": "GALA-1"}
PDF = b"%PDF-1.4\n" + b"slides " * 300
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
Files = list[tuple[str, tuple[str, bytes, str]]]


async def make_event(api: Api, tenant: str = "a", code: str = "GALA-1") -> dict[str, Any]:
    t = api.a if tenant == "a" else api.b
    r = await api.client.post("/v3/crud/event", json={**EVENT, "code": code}, headers=t.headers())
    assert r.status_code == 201, r.text
    return dict(r.json())


async def upload(
    api: Api,
    event_id: str,
    files: Files,
    meta: Any = None,
    headers: dict[str, str] | None = None,
    client: httpx.AsyncClient | None = None,
) -> httpx.Response:
    data = {} if meta is None else {"meta": json.dumps(meta)}
    return await (client or api.client).post(
        f"/v3/action/event/{event_id}/upload",
        files=files,
        data=data,
        headers=headers or api.a.headers("editor"),
    )


async def counts(rt: Runtime) -> tuple[int, int]:
    async with rt.engine.connect() as conn:
        files = await conn.execute(sa.select(sa.func.count()).select_from(rt.tables["file"]))
        n_files = files.scalar_one()
        efs = await conn.execute(sa.select(sa.func.count()).select_from(rt.tables["event_file"]))
        return int(n_files), int(efs.scalar_one())


@contextmanager
def engine_statements(rt: Runtime) -> Iterator[list[str]]:
    """Every SQL statement the runtime's engines send while the block runs."""
    with count_statements(rt) as seen:
        yield seen


async def account_pk_of(rt: Runtime, public_id: str) -> int:
    account = rt.tables["account"]
    async with rt.engine.connect() as conn:
        found = await conn.execute(sa.select(account.c.id).where(account.c.id_random == public_id))
        return int(found.scalar_one())


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def blob_files(rt: Runtime) -> set[Path]:
    """Blobs and temp files: everything in the store but its id."""
    root = Path(rt.settings.blob_dir)
    return {p for p in root.rglob("*") if p.is_file() and p.name != STORE_ID_FILE}


async def test_upload_then_download_every_way(api: Api) -> None:
    event = await make_event(api)
    meta = [
        {"role": "slides", "title": "Deck", "position": 2},
        {"role": "logo", "position": 5},
    ]
    files: Files = [
        ("file", ("deck.pdf", PDF, "application/pdf")),
        ("file", ("logo.png", PNG, "image/png")),
    ]
    r = await upload(api, event["id"], files, meta)
    assert r.status_code == 201, r.text
    body = r.json()
    assert [f["sha256"] for f in body["files"]] == [
        hashlib.sha256(PDF).hexdigest(),
        hashlib.sha256(PNG).hexdigest(),
    ]
    deck, logo = body["files"]
    assert deck["name"] == "deck.pdf" and deck["size"] == len(PDF)
    assert deck["mime_type"] == "application/pdf" and logo["mime_type"] == "image/png"
    h = api.a.headers("viewer")
    got = await api.client.get(f"/v3/crud/file/{deck['id']}", headers=h)
    assert got.status_code == 200 and got.json() == deck

    listed = await api.client.get(f"/v3/crud/event/{event['id']}/event_file", headers=h)
    assert listed.status_code == 200, listed.text
    rows = {row["id"]: row for row in listed.json()["data"]}
    ef_deck, ef_logo = body["event_files"]
    assert rows[ef_deck["id"]] == ef_deck and rows[ef_logo["id"]] == ef_logo
    assert (ef_deck["role"], ef_deck["title"], ef_deck["position"]) == ("slides", "Deck", 2)
    assert (ef_logo["role"], ef_logo["title"], ef_logo["position"]) == ("logo", None, 5)
    assert ef_deck["file_id"] == deck["id"] and ef_deck["event_id"] == event["id"]

    for ident, expected, name in [
        (deck["id"], PDF, "deck.pdf"),
        (logo["id"], PNG, "logo.png"),
        (ef_deck["id"], PDF, "deck.pdf"),
        (ef_logo["id"], PNG, "logo.png"),
        (event["id"], PDF, "deck.pdf"),  # lowest position
        (f"{event['id']}?role=logo", PNG, "logo.png"),
    ]:
        d = await api.client.get(f"/v3/action/download/{ident}", headers=h)
        assert d.status_code == 200, (ident, d.text)
        assert d.content == expected
        assert d.headers["content-disposition"].startswith("attachment")
        assert f'filename="{name}"' in d.headers["content-disposition"]
        sha = hashlib.sha256(expected).hexdigest()
        assert d.headers["content-location"] == f"/v3/action/blob/{sha}"

    none = await api.client.get(f"/v3/action/download/{event['id']}?role=banner", headers=h)
    assert none.status_code == 404 and "banner" in none.json()["detail"]
    bad_role = await api.client.get(f"/v3/action/download/{event['id']}?role=x", headers=h)
    assert bad_role.status_code == 422
    empty = await make_event(api, code="EMPTY")
    e = await api.client.get(f"/v3/action/download/{empty['id']}", headers=h)
    assert e.status_code == 404 and "no file" in e.json()["detail"]

    sha = deck["sha256"]
    blob = await api.client.get(f"/v3/action/blob/{sha}", headers=h)
    assert blob.status_code == 200 and blob.content == PDF
    assert (
        blob.headers["etag"] == f'"{sha}"' and blob.headers["x-content-type-options"] == "nosniff"
    )
    assert "immutable" in blob.headers["cache-control"]
    cached = await api.client.get(
        f"/v3/action/blob/{sha}", headers={**h, "If-None-Match": f'"{sha}"'}
    )
    assert cached.status_code == 304 and cached.content == b""
    part = await api.client.get(f"/v3/action/blob/{sha}", headers={**h, "Range": "bytes=5-20"})
    assert part.status_code == 206 and part.content == PDF[5:21]
    assert part.headers["content-range"] == f"bytes 5-20/{len(PDF)}"
    head = await api.client.head(f"/v3/action/blob/{sha}", headers=h)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(PDF))
    for missing in ["0" * 64, sha.upper(), "not-a-hash"]:
        assert (await api.client.get(f"/v3/action/blob/{missing}", headers=h)).status_code == 404

    # Tenant B sees neither the hash nor any of the ids.
    hb = api.b.headers()
    assert (await api.client.get(f"/v3/action/blob/{sha}", headers=hb)).status_code == 404
    for ident in (deck["id"], ef_deck["id"], event["id"]):
        other = await api.client.get(f"/v3/action/download/{ident}", headers=hb)
        missing = await api.client.get("/v3/action/download/AAAAAAAAAAAAAAAAAAAAAA", headers=hb)
        assert other.status_code == 404 and missing.status_code == 404
        assert set(other.json()) == set(missing.json())
        assert other.json()["detail"].replace(ident, "X") == missing.json()["detail"].replace(
            "AAAAAAAAAAAAAAAAAAAAAA", "X"
        )


async def test_same_bytes_share_one_file_row(api: Api) -> None:
    event = await make_event(api)
    one = await upload(api, event["id"], [("file", ("a.pdf", PDF, "application/pdf"))])
    two = await upload(
        api,
        event["id"],
        [("file", ("b.pdf", PDF, "application/pdf")), ("file", ("c.pdf", PDF, "application/pdf"))],
        {"role": "photo"},
    )
    assert one.status_code == 201 and two.status_code == 201, two.text
    assert len(two.json()["files"]) == 1
    assert two.json()["files"][0]["id"] == one.json()["files"][0]["id"]
    assert two.json()["files"][0]["name"] == "a.pdf"
    assert [ef["role"] for ef in two.json()["event_files"]] == ["photo", "photo"]
    assert await counts(api.runtime) == (1, 3)
    # Tenant B uploading the same bytes gets its own row, and learns nothing.
    other = await make_event(api, tenant="b")
    b = await upload(
        api, other["id"], [("file", ("a.pdf", PDF, "application/pdf"))], headers=api.b.headers()
    )
    assert b.status_code == 201 and b.json()["files"][0]["id"] != one.json()["files"][0]["id"]
    assert set(b.json()) == {"files", "event_files"}
    assert await counts(api.runtime) == (2, 4)


async def test_upload_refusals(api: Api) -> None:
    event = await make_event(api)
    other = await make_event(api, tenant="b")
    files: Files = [("file", ("a.pdf", PDF, "application/pdf"))]
    before = blob_files(api.runtime)
    cross = await upload(api, other["id"], files)
    assert cross.status_code == 404
    viewer = await upload(api, event["id"], files, headers=api.a.headers("viewer"))
    assert viewer.status_code == 403
    system = await upload(api, event["id"], files, headers={"X-API-Key": api.system_key})
    assert system.status_code == 403
    for meta, path in [
        ({"role": "poster"}, "meta.role"),
        ({"title": "x" * 201}, "meta.title"),
        ([{"position": "one"}], "meta[0].position"),
        ([{}, {}], "meta"),
        ({"colour": "red"}, "meta"),
    ]:
        r = await upload(api, event["id"], files, meta)
        assert r.status_code == 422, (meta, r.text)
        assert r.json()["errors"][0]["path"].startswith(path), (meta, r.json())
    assert await counts(api.runtime) == (0, 0)
    assert blob_files(api.runtime) == before


async def test_upload_over_limit_keeps_nothing(api: Api, database_url: str, tmp_path: Path) -> None:
    event = await make_event(api)
    settings = make_settings(database_url, tmp_path, upload_max_bytes=1000)
    app = create_app(settings)
    small: Runtime = app.state.runtime
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://aether.test") as client:
            before = blob_files(small)
            ok = await upload(
                api, event["id"], [("file", ("s.txt", b"small", "text/plain"))], client=client
            )
            assert ok.status_code == 201, ok.text
            mid = blob_files(small)
            assert len(mid) == len(before) + 1
            big = await upload(
                api,
                event["id"],
                [
                    ("file", ("a.bin", b"\x00" * 600, "application/octet-stream")),
                    ("file", ("b.bin", b"\x01" * 600, "application/octet-stream")),
                ],
                client=client,
            )
            assert big.status_code == 413, big.text
            assert await counts(small) == (1, 1)
            assert blob_files(small) == mid
    finally:
        await small.close()


async def test_idempotency_key_replays_without_writing(api: Api) -> None:
    event = await make_event(api)
    files: Files = [("file", ("a.pdf", PDF, "application/pdf"))]
    h = {**api.a.headers("editor"), "Idempotency-Key": "retry-1"}
    first = await upload(api, event["id"], files, headers=h)
    assert first.status_code == 201
    snapshot = await counts(api.runtime)
    again = await upload(api, event["id"], files, headers=h)
    assert again.status_code == 201 and again.json() == first.json()
    assert await counts(api.runtime) == snapshot
    different = await upload(api, event["id"], [("file", ("b.png", PNG, "image/png"))], headers=h)
    assert different.status_code == 422
    renamed = await upload(
        api, event["id"], [("file", ("b.pdf", PDF, "application/pdf"))], headers=h
    )
    assert renamed.status_code == 422
    other_meta = await upload(api, event["id"], files, meta={"role": "logo"}, headers=h)
    assert other_meta.status_code == 422
    assert await counts(api.runtime) == snapshot
    assert len(blob_files(api.runtime)) == 1  # a refused retry stores nothing
    # The key is scoped by principal: another key of the account starts afresh.
    fresh = await upload(
        api, event["id"], files, headers={**api.a.headers("owner"), "Idempotency-Key": "retry-1"}
    )
    assert fresh.status_code == 201
    assert fresh.json()["event_files"][0]["id"] != first.json()["event_files"][0]["id"]


async def test_hostile_names_and_active_content(api: Api) -> None:
    event = await make_event(api)
    html = b"<html><script>alert(1)</script></html>"
    r = await upload(
        api,
        event["id"],
        [
            ("file", ("../../etc/passwd", b"root:x:0:0", "text/plain")),
            ("file", ("page.html", html, "text/html")),
        ],
    )
    assert r.status_code == 201, r.text
    passwd, page = r.json()["files"]
    assert "/" not in passwd["name"] and ".." not in passwd["name"] and passwd["name"]
    d = await api.client.get(f"/v3/action/download/{page['id']}", headers=api.a.headers("viewer"))
    assert d.status_code == 200 and d.content == html
    assert d.headers["content-disposition"].startswith("attachment")
    assert "sandbox" in d.headers["content-security-policy"]
    assert d.headers["x-content-type-options"] == "nosniff"
    blob = await api.client.get(f"/v3/action/blob/{page['sha256']}", headers=api.a.headers())
    assert blob.headers["content-disposition"].startswith("attachment")
    assert "sandbox" in blob.headers["content-security-policy"]


async def test_database_failure_leaves_no_rows_and_no_blob(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = await make_event(api)
    before = blob_files(api.runtime)

    async def broken(*args: object, **kwargs: object) -> list[int]:
        raise sa_exc.OperationalError(
            "INSERT", {}, Exception("connection lost"), connection_invalidated=True
        )

    monkeypatch.setattr(upload_module, "insert_event_files", broken)
    r = await upload(api, event["id"], [("file", ("a.pdf", PDF, "application/pdf"))])
    assert r.status_code == 503, r.text  # a lost connection is "retry", not a server bug
    assert r.headers["retry-after"]
    assert r.headers["content-type"].startswith("application/problem+json")
    assert await counts(api.runtime) == (0, 0)
    assert blob_files(api.runtime) == before
    monkeypatch.undo()
    ok = await upload(api, event["id"], [("file", ("a.pdf", PDF, "application/pdf"))])
    assert ok.status_code == 201


async def test_concurrent_same_content_uploads_share_one_row(api: Api) -> None:
    event = await make_event(api)
    content = b"same bytes raced " * 64
    results = await asyncio.gather(
        *(
            upload(api, event["id"], [("file", (f"r{i}.txt", content, "text/plain"))])
            for i in range(4)
        )
    )
    assert [r.status_code for r in results] == [201] * 4, [r.text for r in results]
    assert len({r.json()["files"][0]["id"] for r in results}) == 1
    assert await counts(api.runtime) == (1, 4)


# SQLite has one writer: B's commit would wait for A's open transaction.
@pytest.mark.parametrize("backend", ["mariadb", "postgresql"])
async def test_a_failed_upload_keeps_a_blob_another_upload_committed_meanwhile(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tenant A's upload creates the blob and fails; tenant B's upload of the same bytes
    (which found the blob present) commits in between: the blob must stay for B."""
    event_a = await make_event(api)
    event_b = await make_event(api, tenant="b")
    real = upload_module.insert_event_files

    async def commit_b_then_fail(*args: object, **kwargs: object) -> list[int]:
        monkeypatch.setattr(upload_module, "insert_event_files", real)
        r = await upload(
            api,
            event_b["id"],
            [("file", ("b.pdf", PDF, "application/pdf"))],
            headers=api.b.headers("editor"),
        )
        assert r.status_code == 201, r.text
        lost = Exception("connection lost")  # as SQLAlchemy flags a real disconnect
        raise sa_exc.OperationalError("INSERT", {}, lost, connection_invalidated=True)

    monkeypatch.setattr(upload_module, "insert_event_files", commit_b_then_fail)
    r = await upload(api, event_a["id"], [("file", ("a.pdf", PDF, "application/pdf"))])
    assert r.status_code == 503, r.text
    sha = hashlib.sha256(PDF).hexdigest()
    assert any(p.name == sha for p in blob_files(api.runtime)), "B's blob was deleted"
    got = await api.client.get(f"/v3/action/blob/{sha}", headers=api.b.headers())
    assert got.status_code == 200 and got.content == PDF


async def test_downloads_of_another_account_answer_like_missing_ones(api: Api) -> None:
    """B's file, event_file, event and hash (bytes only B holds) are 404s to A, shaped
    exactly like a random id or hash; the same bytes uploaded by A are then A's own."""
    only_b = b"bytes only tenant B has\n"
    event_b = await make_event(api, tenant="b")
    r = await upload(
        api,
        event_b["id"],
        [("file", ("b.txt", only_b, "text/plain"))],
        headers=api.b.headers("editor"),
    )
    assert r.status_code == 201, r.text
    file_b, link_b = r.json()["files"][0], r.json()["event_files"][0]
    sha = hashlib.sha256(only_b).hexdigest()
    h = api.a.headers("owner")

    def shape(resp: httpx.Response) -> tuple[int, str, str, str]:
        body = resp.json()
        return resp.status_code, resp.headers["content-type"], body["type"], body["title"]

    missing_id = await api.client.get("/v3/action/download/" + "Q" * 22, headers=h)
    missing_hash = await api.client.get("/v3/action/blob/" + "0" * 64, headers=h)
    for ident in (file_b["id"], link_b["id"], event_b["id"]):
        got = await api.client.get(f"/v3/action/download/{ident}", headers=h)
        assert shape(got) == shape(missing_id), (ident, got.text)
        assert only_b not in got.content
    got = await api.client.get(f"/v3/action/blob/{sha}", headers=h)
    assert shape(got) == shape(missing_hash)
    assert (await api.client.head(f"/v3/action/blob/{sha}", headers=h)).status_code == 404

    event_a = await make_event(api)
    mine = await upload(api, event_a["id"], [("file", ("a.txt", only_b, "text/plain"))])
    assert mine.status_code == 201
    assert mine.json()["files"][0]["id"] != file_b["id"]
    assert set(mine.json()["files"][0]) == set(file_b)  # no "already existed" hint
    got = await api.client.get(f"/v3/action/blob/{sha}", headers=h)
    assert got.status_code == 200 and got.content == only_b


async def test_download_resolves_any_public_id_in_one_statement(api: Api) -> None:
    """file, event_file, event (with and without a role), an empty event and an unknown id:
    each is told apart by a single statement, and every branch carries the account."""
    event = await make_event(api)
    files: Files = [
        ("file", ("deck.pdf", PDF, "application/pdf")),
        ("file", ("logo.png", PNG, "image/png")),
    ]
    meta = [{"role": "slides", "position": 2}, {"role": "logo", "position": 5}]
    r = await upload(api, event["id"], files, meta)
    assert r.status_code == 201, r.text
    deck, logo = r.json()["files"]
    ef_deck, _ = r.json()["event_files"]
    empty = await make_event(api, code="EMPTY")
    rt = api.runtime
    account_pk = await account_pk_of(rt, api.a.account_id)
    other_pk = await account_pk_of(rt, api.b.account_id)
    cases: list[tuple[str, str | None, str | None]] = [
        (deck["id"], None, "deck.pdf"),
        (logo["id"], "logo", "logo.png"),  # a role only narrows an event's files
        (ef_deck["id"], None, "deck.pdf"),
        (event["id"], None, "deck.pdf"),
        (event["id"], "logo", "logo.png"),
        (event["id"], "banner", None),
        (empty["id"], None, None),
        ("Q" * 22, None, None),
    ]
    for public_id, role, expected in cases:
        for account in (account_pk, other_pk):
            with engine_statements(rt) as seen:
                async with rt.reader.connect() as conn:
                    try:
                        row = await download_module.resolve_download(
                            conn, rt, account, public_id, role
                        )
                        name: str | None = str(row["name"])
                    except NotFoundError:
                        name = None
            assert len(seen) == 1, (public_id, role, seen)
            assert name == (expected if account == account_pk else None), (public_id, role)


TENANT_READ = re.compile(r"\b(?:FROM|UPDATE|JOIN)\s+[`\"]?(file|event_file|event|api_key)\b")


async def test_upload_and_api_key_statements_carry_the_account(api: Api) -> None:
    """No statement these actions send reads or updates a tenant's table by its internal
    key alone. A JWT signs in (its look-up reads `account` only), so every statement seen
    is the actions' own."""
    event = await make_event(api)
    token = sign(
        {"sub": "Q" * 22, "acct": api.a.account_id, "role": "admin", "exp": time.time() + 600},
        api.runtime.settings.jwt_key,
    )
    h = {"Authorization": f"Bearer {token}"}
    with engine_statements(api.runtime) as seen:
        r = await upload(api, event["id"], [("file", ("a.pdf", PDF, "application/pdf"))], None, h)
        assert r.status_code == 201, r.text
        k = await api.client.post("/v3/action/api_key", json={"name": "ci"}, headers=h)
        assert k.status_code == 201, k.text
    checked = [s for s in seen if TENANT_READ.search(s) and not s.lstrip().startswith("INSERT")]
    assert checked, seen
    for statement in checked:
        _, _, where = statement.partition("WHERE")
        assert "account_id" in where, statement


async def test_a_body_that_fails_after_a_file_keeps_a_blob_another_upload_committed(
    api: Api,
) -> None:
    """A's first part is stored (A created the blob); before A's body ends, B uploads the same
    bytes and commits. A's body is then cut short: A's cleanup must leave B's blob."""
    event_a = await make_event(api)
    event_b = await make_event(api, tenant="b")
    content = b"shared by a failing body and tenant B\n" * 40
    sha = hashlib.sha256(content).hexdigest()
    boundary = "b0undary"
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    second = f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="b"\r\n'

    async def body() -> AsyncIterator[bytes]:
        yield head + content + second.encode()
        b = await upload(
            api,
            event_b["id"],
            [("file", ("b.txt", content, "text/plain"))],
            headers=api.b.headers("editor"),
        )
        assert b.status_code == 201, b.text
        yield b"\r\n\r\ntruncated"  # no closing boundary: 400

    r = await api.client.post(
        f"/v3/action/event/{event_a['id']}/upload",
        content=body(),
        headers={
            **api.a.headers("editor"),
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    assert r.status_code == 400, r.text
    assert any(p.name == sha for p in blob_files(api.runtime)), "B's blob was deleted"
    got = await api.client.get(f"/v3/action/blob/{sha}", headers=api.b.headers())
    assert got.status_code == 200 and got.content == content


@pytest.mark.parametrize("backend", ["mariadb", "postgresql"])  # SQLite has no pool to drain
async def test_blobs_stay_when_the_reference_check_cannot_answer(
    api: Api, database_url: str, tmp_path: Path
) -> None:
    """A failed upload deletes a blob it created only once the database has said that no row
    names it. A pool that times out is no answer: B's committed row must keep its blob."""
    event_b = await make_event(api, tenant="b")
    content = b"referenced by tenant B\n" * 30
    b = await upload(
        api,
        event_b["id"],
        [("file", ("b.txt", content, "text/plain"))],
        headers=api.b.headers("editor"),
    )
    assert b.status_code == 201, b.text
    referenced = hashlib.sha256(content).hexdigest()
    orphan = (await api.runtime.blobs.put(chunks(b"nobody names these bytes"))).sha256

    settings = make_settings(database_url, tmp_path, db_pool_size=1, db_pool_timeout=0.3)
    small = build_runtime(settings)
    try:
        async with small.engine.connect() as busy:
            await busy.execute(sa.text("SELECT 1"))  # the one pooled connection (no overflow)
            await upload_module.discard_unreferenced(small, [referenced, orphan])
        assert await small.blobs.exists(referenced), "deleted while the check had no answer"
        assert await small.blobs.exists(orphan), "deleted while the check had no answer"
        await upload_module.discard_unreferenced(small, [referenced, orphan])
        assert await small.blobs.exists(referenced)
        assert not await small.blobs.exists(orphan)
    finally:
        await small.close()
