"""The README's quick start and its "Adding a model", run as printed.

The quick start's shell commands run against a real server on a fresh SQLite database,
set up as `make run` does (migrate, demo, serve); every `curl` must get a 2xx. "Adding a
model" runs in a copy of the repository (no virtualenv, no `.git`, the interpreter of this
one on `PYTHONPATH`): the README's module goes into `models/`, passes the linters, becomes
a non-empty migration, is migrated and is served.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO_ROOT, aether_env, single_json, sqlite_url, wait_healthy

pytestmark = pytest.mark.e2e

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
DEFAULT_ORIGIN = "http://127.0.0.1:8000"
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "var", "__pycache__", "*.egg-info", ".*_cache", ".hypothesis", "*.db"
)
#: Every curl in the quick start fails the script on a non-2xx answer.
STRICT_CURL = 'curl() { command curl -sS --fail-with-body "$@"; }\n'


def code_block(language: str, containing: str, *, after: str = "") -> str:
    """The first README code block in `language` (after heading `after`) with `containing`."""
    text = README[README.index(after) :] if after else README
    for block in re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.S | re.M):
        if containing in block:
            return str(block)
    raise AssertionError(f"no ```{language} block with {containing!r} in README.md")


def test_the_quick_start_runs_as_printed(tmp_path: Path) -> None:
    script = code_block("sh", "var/demo-api-key.txt")
    assert "Content-Type: application/json" in script  # JSON is declared as such
    with aether_env(sqlite_url(tmp_path), tmp_path / "work") as env:
        server = env.launch()
        env.cli("migrate")
        env.cli("demo")
        shutil.copy(REPO_ROOT / "README.md", env.workdir / "README.md")  # run from the root
        assert wait_healthy(server), server.describe()
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", STRICT_CURL + script.replace(
                DEFAULT_ORIGIN, server.base_url
            )],
            cwd=env.workdir,
            env=env.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        assert '"total":' in done.stdout  # the search asked for a count
        downloaded = env.workdir / "var" / "README.md"
        assert downloaded.read_bytes() == (REPO_ROOT / "README.md").read_bytes()


def clean_copy(target: Path) -> Path:
    shutil.copytree(REPO_ROOT, target, ignore=COPY_IGNORE)
    assert not (target / "models" / "sponsor.py").exists()
    return target


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_adding_a_model_as_the_readme_says(tmp_path: Path) -> None:
    repo = clean_copy(tmp_path / "repo")
    versions = repo / "migrations" / "versions"
    packaged = set(versions.glob("*.py"))
    with aether_env(sqlite_url(tmp_path), repo) as env:
        env = env.with_env(PYTHONPATH=str(repo), AE_LOG_LEVEL="WARNING")
        argv = [sys.executable, "-m", "engine.cli"]
        assert run([*argv, "migrate"], repo, env.env).returncode == 0

        (repo / "models" / "sponsor.py").write_text(
            code_block("python", "class Sponsor", after="## Adding a model"), encoding="utf-8"
        )
        tools = Path(sys.executable).parent
        lint = [
            [str(tools / "ruff"), "check", "models/sponsor.py"],
            [str(tools / "ruff"), "format", "--check", "models/sponsor.py"],
            [str(tools / "mypy"), "models/sponsor.py"],
        ]
        procs = [subprocess.Popen(a, cwd=repo, env=env.env, stdout=subprocess.PIPE, text=True)
                 for a in lint]  # fmt: skip
        made = run([*argv, "makemigrations", "-m", "add sponsor"], repo, env.env)
        assert made.returncode == 0, made.stderr
        revision = Path(made.stdout.strip())
        assert revision.parent == versions and revision not in packaged, made.stdout
        text = revision.read_text(encoding="utf-8")
        assert re.search(r"op\.create_table\(\s*['\"]sponsor['\"]", text), text
        upgrade = text[text.index("def upgrade") : text.index("def downgrade")]
        assert "pass" not in upgrade.split(), upgrade

        assert run([*argv, "migrate"], repo, env.env).returncode == 0
        again = run([*argv, "makemigrations", "-m", "nothing"], repo, env.env)
        assert again.returncode == 0, again.stderr
        assert again.stdout == "" and "no changes" in again.stderr, again
        assert set(versions.glob("*.py")) == packaged | {revision}

        for args, proc in zip(lint, procs, strict=True):
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"{' '.join(args)}:\n{out}"

        server = env.serve([*argv, "serve", "--port", "{port}"], cwd=repo)
        account = single_json(
            run(
                [*argv, "create-account", "--name", "Acme", "--slug", "acme",
                 "--owner-email", "owner@acme.test", "--json"],
                repo, env.env,
            ).stdout
        )  # fmt: skip
        headers = {"X-API-Key": account["api_key"]}
        with server.client(headers=headers) as client:
            ready = client.get("/readyz")  # the database is at the new head
            assert ready.status_code == 200, ready.text
            event = client.post(
                "/v3/crud/event", json={"name": "Gala", "starts_at": "2027-03-14T09:00:00Z"}
            )
            assert event.status_code == 201, event.text
            nested = f"/v3/crud/event/{event.json()['id']}/sponsor"
            sponsor = client.post(nested, json={"name": "Acme"})
            assert sponsor.status_code == 201, sponsor.text
            listed = client.get("/v3/crud/sponsor")
            assert listed.status_code == 200 and listed.json()["data"] == [sponsor.json()]
            assert client.get(nested).json()["data"] == [sponsor.json()]
            found = client.post("/v3/crud/sponsor/search", json={"filter": {"name": "Acme"}})
            assert found.status_code == 200 and len(found.json()["data"]) == 1, found.text
            schema = client.get("/v3/crud/sponsor/schema")
            assert schema.status_code == 200 and schema.json()["title"] == "Sponsor"
            assert client.get("/v3/crud/schema").status_code == 200
            paths = client.get("/openapi.json").json()["paths"]
            assert "/v3/crud/event/{event_id}/sponsor/{id}" in paths
