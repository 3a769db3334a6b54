"""A client generated from the served OpenAPI document works against the real server (SPEC 7).

Fetches `/openapi.json` from a running `aether serve`, generates a Python client with
openapi-python-client, imports it and creates, reads and searches `event` with an API key.
A generation failure or warning is a defect of our document.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fuzz.server import BIN, Server, running_server

pytestmark = pytest.mark.e2e
GENERATOR = shutil.which("openapi-python-client", path=str(BIN)) or shutil.which(
    "openapi-python-client"
)
PACKAGE = "aether_client"


@pytest.fixture
def generator() -> str:
    if GENERATOR is None:
        pytest.skip("openapi-python-client is not installed (pip install openapi-python-client)")
    return GENERATOR


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with running_server(tmp_path / "server") as srv:
        yield srv


def generate(generator: str, server: Server, out: Path) -> str:
    spec = out.parent / "spec.json"
    with urllib.request.urlopen(f"{server.url}/openapi.json", timeout=10) as response:
        spec.write_bytes(response.read())
    # ruff on PATH lets the generator's post-hooks run instead of warning about them.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [generator, "generate", "--path", str(spec), "--output-path", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-4000:]
    return report


@pytest.fixture
def client_package(generator: str, server: Server, tmp_path: Path) -> Iterator[Any]:
    out = tmp_path / "generated"
    report = generate(generator, server, out)
    assert "Warning" not in report, report[-4000:]
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def test_generated_client_creates_reads_and_searches_events(
    client_package: Any, server: Server
) -> None:
    create = importlib.import_module(f"{PACKAGE}.api.event.event_create")
    get = importlib.import_module(f"{PACKAGE}.api.event.event_get")
    search = importlib.import_module(f"{PACKAGE}.api.event.event_search")
    models = importlib.import_module(f"{PACKAGE}.models")
    api = client_package.Client(
        base_url=server.url,
        headers={"X-API-Key": server.api_key},
        raise_on_unexpected_status=True,
    )
    with api as client:
        check_event_round_trip(client, create, get, search, models)


def check_event_round_trip(client: Any, create: Any, get: Any, search: Any, models: Any) -> None:
    body = models.EventCreate.from_dict(
        {"name": "Generated Gala", "starts_at": "2027-03-14T09:00:00+01:00", "code": "GEN-1"}
    )
    made = create.sync_detailed(client=client, body=body)
    assert made.status_code == 201, made.content
    event = made.parsed
    assert isinstance(event, models.Event), made.content
    assert event.name == "Generated Gala" and event.code == "GEN-1"
    assert event.starts_at.isoformat() == "2027-03-14T08:00:00+00:00"

    read = get.sync_detailed(event.id, client=client)
    assert read.status_code == 200 and isinstance(read.parsed, models.Event), read.content
    assert read.parsed.to_dict() == event.to_dict()

    query = models.EventSearch.from_dict({"filter": {"code": "GEN-1"}, "count": True})
    found = search.sync_detailed(client=client, body=query)
    assert found.status_code == 200, found.content
    page = found.parsed
    assert isinstance(page, models.EventList), found.content
    assert [e.id for e in page.data] == [event.id]
    assert page.total == 1

    missing = get.sync_detailed("A" * 22, client=client)
    assert missing.status_code == 404
    assert isinstance(missing.parsed, models.ProblemRFC9457), missing.content
