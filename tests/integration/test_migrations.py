"""Migrations on SQLite, MariaDB and PostgreSQL: the packaged history equals the models.

Upgrade, downgrade and upgrade again; then Alembic's autogenerate must find nothing to do.
A model added through `model_modules` is turned into a revision by `make_migration`, in a
subprocess so its table never joins this process's shared metadata.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from pprint import pformat

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from engine import migrate
from engine.db import create_engine
from engine.settings import Settings
from models.base import MARIADB_TABLE_OPTIONS, Base

ROOT = Path(__file__).resolve().parents[2]

SPONSOR_MODULE = '''
"""A model added by a deployment: sponsors of an event."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigIntKey, PublicIdMixin, TenantMixin, TimestampMixin


class Sponsor(PublicIdMixin, TenantMixin, TimestampMixin, Base):
    __tablename__ = "sponsor"

    event_id: Mapped[int] = mapped_column(
        BigIntKey, ForeignKey("event.id", ondelete="CASCADE"), nullable=False,
        info={"parent": True},
    )
    name: Mapped[str] = mapped_column(String(100), nullable=False)
'''

SPONSOR_SCRIPT = """
import asyncio, json, sys
sys.path.insert(0, {module_dir!r})
from engine import migrate
from engine.settings import Settings

settings = Settings(database_url={url!r}, model_modules=("models", "aether_test_sponsor"))
asyncio.run(migrate.upgrade(settings))
before = asyncio.run(migrate.autogenerate_diff(settings))
path = migrate.make_migration(settings, "add sponsor", versions_dir={versions_dir!r})
asyncio.run(migrate.upgrade(settings, versions_dir={versions_dir!r}))
after = asyncio.run(migrate.autogenerate_diff(settings))
print(json.dumps({{"before": [repr(d) for d in before], "after": [repr(d) for d in after],
                   "path": path}}))
"""


@pytest.fixture
async def engine_on(empty_database_url: str):
    engine = create_engine(Settings(database_url=empty_database_url), autocommit=True)
    try:
        yield engine
    finally:
        await engine.dispose()


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))


async def test_upgrade_downgrade_upgrade_leaves_no_difference(
    empty_database_url: str, engine_on: AsyncEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(database_url=empty_database_url)
    head = migrate.head_revision(settings)

    assert await migrate.current_revision(engine_on) is None
    assert not await migrate.is_at_head(engine_on, settings)

    await migrate.upgrade(settings)
    assert await migrate.current_revision(engine_on) == head
    assert await migrate.is_at_head(engine_on, settings)
    assert await table_names(engine_on) >= set(Base.metadata.tables)

    await migrate.downgrade(settings, "base")
    assert await table_names(engine_on) <= {"alembic_version"}
    assert await migrate.current_revision(engine_on) is None
    assert not await migrate.is_at_head(engine_on, settings)

    await migrate.upgrade(settings, "head")
    await migrate.upgrade(settings)  # already there: a no-op
    assert await migrate.current_revision(engine_on) == head
    assert await migrate.is_at_head(engine_on, settings)

    diff = await migrate.autogenerate_diff(settings)
    assert diff == [], "autogenerate found differences:\n" + pformat(diff)
    # commands print nothing: the CLI's stdout carries only results
    assert capsys.readouterr().out == ""


async def test_migrated_schema_keeps_foreign_key_rules_and_names(
    empty_database_url: str, engine_on: AsyncEngine, backend: str
) -> None:
    await migrate.upgrade(Settings(database_url=empty_database_url))

    def reflect(conn: sa.Connection) -> dict[str, list[dict[str, object]]]:
        inspector = sa.inspect(conn)
        return {name: inspector.get_foreign_keys(name) for name in Base.metadata.tables}

    def rule(value: object) -> str:
        spelled = str(value or "NO ACTION").upper()
        # InnoDB treats NO ACTION as RESTRICT, and SHOW CREATE TABLE omits either
        return "RESTRICT" if backend == "mariadb" and spelled == "NO ACTION" else spelled

    async with engine_on.connect() as conn:
        reflected = await conn.run_sync(reflect)
    for table in Base.metadata.tables.values():
        expected = {
            (fk.constraint.name, fk.parent.name, rule(fk.ondelete)) for fk in table.foreign_keys
        }
        found = {
            (fk["name"], fk["constrained_columns"][0], rule(fk["options"].get("ondelete")))
            for fk in reflected[table.name]
        }
        assert found == expected, table.name


async def test_mariadb_tables_are_utf8mb4(
    empty_database_url: str, engine_on: AsyncEngine, backend: str
) -> None:
    if backend != "mariadb":
        pytest.skip("table options are MariaDB's")
    async with engine_on.connect() as conn:  # a server default the revision must override
        await conn.execute(sa.text("ALTER DATABASE CHARACTER SET latin1 COLLATE latin1_swedish_ci"))
    await migrate.upgrade(Settings(database_url=empty_database_url))
    async with engine_on.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT table_name, table_collation FROM information_schema.tables "
                    "WHERE table_schema = DATABASE()"
                )
            )
        ).all()
    collations = {name: collation for name, collation in rows if name != "alembic_version"}
    assert set(collations) == set(Base.metadata.tables)
    assert set(collations.values()) == {MARIADB_TABLE_OPTIONS["collate"]}


async def test_is_at_head_costs_one_query(empty_database_url: str, engine_on: AsyncEngine) -> None:
    settings = Settings(database_url=empty_database_url)
    await migrate.upgrade(settings)
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    sa.event.listen(engine_on.sync_engine, "before_cursor_execute", count)
    try:
        assert await migrate.is_at_head(engine_on, settings)
        assert await migrate.is_at_head(engine_on, settings)
    finally:
        sa.event.remove(engine_on.sync_engine, "before_cursor_execute", count)
    assert [s for s in statements if "alembic_version" in s] == statements
    assert len(statements) == 2


async def test_is_at_head_is_false_on_an_older_revision(
    empty_database_url: str, engine_on: AsyncEngine
) -> None:
    settings = Settings(database_url=empty_database_url)
    await migrate.upgrade(settings)
    async with engine_on.begin() as conn:
        await conn.execute(sa.text("UPDATE alembic_version SET version_num = '000000000000'"))
    assert await migrate.current_revision(engine_on) == "000000000000"
    assert not await migrate.is_at_head(engine_on, settings)


async def test_upgrade_creates_the_sqlite_directory(tmp_path: Path) -> None:
    database = tmp_path / "not" / "yet" / "aether.db"
    settings = Settings(database_url=f"sqlite+aiosqlite:///{database}")
    await migrate.upgrade(settings)
    assert database.is_file()
    engine = create_engine(settings)
    try:
        assert await migrate.is_at_head(engine, settings)
    finally:
        await engine.dispose()


async def test_sqlite_migrations_run_with_foreign_keys_off_and_checked(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'fk.db'}")
    await migrate.upgrade(settings)

    def pragma(conn: sa.Connection) -> int:
        return int(conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one())

    def run(conn: sa.Connection) -> list[int]:
        seen = [pragma(conn)]
        with migrate.sqlite_foreign_keys_off(conn):
            seen.append(pragma(conn))
        seen.append(pragma(conn))
        with (
            pytest.raises(migrate.MigrationError, match="dangling"),
            migrate.sqlite_foreign_keys_off(conn),
        ):
            conn.exec_driver_sql(
                "INSERT INTO event (id_random, account_id, name, status, starts_at, "
                "timezone, metadata, created_at, updated_at, version) VALUES ('e', 999, "
                "'x', 'draft', '2025-01-01', 'UTC', '{}', '2025-01-01', '2025-01-01', 1)"
            )
            conn.commit()
        seen.append(pragma(conn))
        return seen

    engine = migrate.migration_engine(settings)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(run) == [1, 0, 1, 1]
    finally:
        await engine.dispose()


async def test_upgrade_to_an_unknown_revision_fails_clearly(empty_database_url: str) -> None:
    with pytest.raises(migrate.MigrationError, match="nope"):
        await migrate.upgrade(Settings(database_url=empty_database_url), "nope")


def test_a_new_model_module_becomes_a_revision(empty_database_url: str, tmp_path: Path) -> None:
    module_dir = tmp_path / "extra"
    module_dir.mkdir()
    (module_dir / "aether_test_sponsor.py").write_text(SPONSOR_MODULE, encoding="utf-8")
    versions_dir = tmp_path / "versions"
    script = SPONSOR_SCRIPT.format(
        module_dir=str(module_dir), url=empty_database_url, versions_dir=str(versions_dir)
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # stdout holds our one line and nothing from Alembic

    assert result["before"], "the new model should differ from the database"
    assert any("add_table" in d and "sponsor" in d for d in result["before"])
    assert result["after"] == [], "the generated revision left differences:\n" + pformat(
        result["after"]
    )

    path = Path(result["path"])
    assert path.parent == versions_dir.resolve()
    assert path.name.endswith("_add_sponsor.py")
    assert not (ROOT / "migrations" / "versions" / path.name).exists()
    text = path.read_text(encoding="utf-8")
    head = migrate.head_revision(Settings())
    assert f"down_revision: str | Sequence[str] | None = {head!r}" in text
    assert "op.create_table('sponsor'" in text or 'op.create_table("sponsor"' in text
    assert "import models.base" in text
    assert "models.base.UTCDateTime()" in text
    assert "fk_sponsor_event_id_event" in text
    assert "ondelete='CASCADE'" in text
    assert "mysql_charset='utf8mb4'" in text
    assert "sponsor" not in Base.metadata.tables  # the shared metadata here stayed clean


async def test_migrations_run_without_the_request_time_limit(
    empty_database_url: str, backend: str
) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite has no statement time limit")
    settings = Settings(database_url=empty_database_url, db_statement_timeout_ms=1500)
    if backend == "mariadb":
        query, limited, unlimited = "SELECT @@max_statement_time", "1.5", "0.0"
    else:
        query, limited, unlimited = "SHOW statement_timeout", "1500ms", "0"
    ordinary, migrating = create_engine(settings), migrate.migration_engine(settings)
    try:
        async with ordinary.connect() as conn:
            assert str((await conn.exec_driver_sql(query)).scalar_one()) == limited
        async with migrating.connect() as conn:
            assert str((await conn.exec_driver_sql(query)).scalar_one()) == unlimited
    finally:
        await ordinary.dispose()
        await migrating.dispose()


def test_no_model_change_writes_no_revision(empty_database_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=empty_database_url)
    versions_dir = tmp_path / "versions"
    asyncio.run(migrate.upgrade(settings))
    assert migrate.make_migration(settings, "nothing", versions_dir=versions_dir) is None
    assert list(versions_dir.glob("*")) == []
