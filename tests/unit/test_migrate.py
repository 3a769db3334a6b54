"""engine.migrate without a database: configuration, rendering and the packaged history."""

from __future__ import annotations

import ast
import logging
import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate.api import AutogenContext
from alembic.runtime.migration import MigrationContext

from engine import migrate
from engine.settings import Settings
from models.base import MARIADB_TABLE_OPTIONS, Base, UTCDateTime


def revision_files() -> list[Path]:
    return sorted(migrate.VERSIONS_DIR.glob("*.py"))


def autogen_context() -> AutogenContext:
    context = MigrationContext.configure(dialect_name="sqlite")
    return AutogenContext(context)


def test_utc_datetime_renders_by_import_path_with_its_import() -> None:
    autogen = autogen_context()
    assert migrate.render_item("type", UTCDateTime(), autogen) == "models.base.UTCDateTime()"
    assert "import models.base" in autogen.imports


@pytest.mark.parametrize("obj", [sa.String(10), sa.Integer(), sa.JSON()])
def test_other_types_render_the_default_way(obj: sa.types.TypeEngine[object]) -> None:
    autogen = autogen_context()
    assert migrate.render_item("type", obj, autogen) is False
    assert not autogen.imports


def test_context_options_compare_types_and_render_batches() -> None:
    options = migrate.context_options(Settings())
    assert options["target_metadata"] is Base.metadata
    assert options["compare_type"] is True
    assert options["compare_server_default"] is False
    assert options["render_as_batch"] is True


def test_config_points_at_the_package_and_installs_no_logging() -> None:
    root_handlers = list(logging.getLogger().handlers)
    config = migrate.alembic_config(Settings())
    assert Path(config.get_main_option("script_location") or "") == migrate.MIGRATIONS_DIR
    assert not {"loggers", "handlers", "formatters"} & set(config.file_config.sections())
    assert config.messaging_opts["quiet"] is True
    assert logging.getLogger().handlers == root_handlers


def test_config_with_a_versions_dir_keeps_the_packaged_history(tmp_path: Path) -> None:
    config = migrate.alembic_config(Settings(), versions_dir=tmp_path)
    locations = (config.get_main_option("version_locations") or "").split(os.pathsep)
    assert locations == [str(migrate.VERSIONS_DIR), str(tmp_path.resolve())]


def revision_ids() -> dict[str, str | None]:
    """Each packaged revision's id and the one it revises, read from its source."""
    found: dict[str, str | None] = {}
    for path in revision_files():
        values: dict[str, object] = {}
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(node.value, ast.Constant)
            ):
                values[node.target.id] = node.value.value
        assert isinstance(values["revision"], str), path
        assert path.name.startswith(values["revision"] + "_"), path
        down = values.get("down_revision")
        found[values["revision"]] = down if isinstance(down, str) else None
    return found


def test_head_revision_ends_the_single_line_of_packaged_revisions() -> None:
    ids = revision_ids()
    roots = [rev for rev, down in ids.items() if down is None]
    assert len(roots) == 1, ids
    assert any(p.name == f"{roots[0]}_initial.py" for p in revision_files())
    line = [roots[0]]
    children = {down: rev for rev, down in ids.items() if down is not None}
    assert len(children) == len(ids) - 1, "two revisions revise the same one"
    while line[-1] in children:
        line.append(children[line[-1]])
    assert len(line) == len(ids), ids
    assert migrate.head_revision(Settings()) == line[-1]


def test_revisions_create_every_table_for_utf8mb4() -> None:
    created: dict[str, set[str]] = {}
    trees = [ast.parse(p.read_text(encoding="utf-8")) for p in revision_files()]
    for node in (node for tree in trees for node in ast.walk(tree)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "create_table"
        ):
            name = node.args[0]
            assert isinstance(name, ast.Constant)
            created[str(name.value)] = {
                f"{k.arg}={k.value.value}"
                for k in node.keywords
                if k.arg and isinstance(k.value, ast.Constant)
            }
    assert set(created) == set(Base.metadata.tables)
    expected = {f"mysql_{key}={value}" for key, value in MARIADB_TABLE_OPTIONS.items()}
    for table, options in created.items():
        assert expected <= options, table


@pytest.mark.parametrize(
    ("url", "made"),
    [
        ("sqlite+aiosqlite:///./var/aether.db", "var"),
        ("sqlite+aiosqlite:///deep/er/a.db", "deep/er"),
        ("sqlite+aiosqlite://", None),
        ("sqlite+aiosqlite:///:memory:", None),
        ("postgresql+asyncpg://u@h/db", None),
    ],
)
def test_sqlite_directory_is_made_only_for_file_databases(
    url: str, made: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    migrate.ensure_sqlite_directory(url)
    if made is None:
        assert list(tmp_path.iterdir()) == []
    else:
        assert (tmp_path / made).is_dir()


def test_sqlite_directory_for_an_absolute_path(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    migrate.ensure_sqlite_directory(f"sqlite+aiosqlite:///{target / 'x.db'}")
    assert target.is_dir()
    migrate.ensure_sqlite_directory(f"sqlite+aiosqlite:///{target / 'x.db'}")  # idempotent


def test_make_migration_needs_a_message() -> None:
    with pytest.raises(migrate.MigrationError, match="message"):
        migrate.make_migration(Settings(), "  ")


def test_mariadb_primary_key_note_is_dropped_and_others_kept() -> None:
    note_filter = migrate._PrimaryKeyNameNote()

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("asyncmy", logging.WARNING, __file__, 1, message, None, None)

    assert not note_filter.filter(record("Name 'pk_account' ignored for PRIMARY key."))
    assert note_filter.filter(record("Data truncated for column 'name' at row 1"))
