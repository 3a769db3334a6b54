"""List (`GET .../{type}`) and search (`POST .../{type}/search`) with keyset pages and include.

Both build the same `SearchSpec` (the list endpoint reads it from query parameters, its
`filter` as URL-encoded JSON) and run the same plan: one statement for the page, one for
`total` when asked, and one per include level (an `IN` on the page's keys), never one per
row. Every statement carries the account predicate.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response

from engine.errors import BadRequestError, ValidationError
from engine.paths import CrudPath
from engine.plans import PK_LABEL, ReadPlan
from engine.principal import Principal
from engine.replicas import direct_rows, read_for
from engine.repository import fetch_all
from engine.responses import json_response, public_row
from engine.runtime import Runtime
from engine.scoping import (
    account_public_id,
    ancestor_types,
    bind_params,
    resolve_parent,
    scope_account,
)
from engine.search import (
    SLOT_PREFIX,
    OrderColumn,
    compile_filter,
    compile_order,
    decode_cursor,
    default_sort,
    encode_cursor,
    filter_shape,
    keyset_predicate,
    order_by_clauses,
    parse_search,
    query_integer,
)
from engine.search.nodes import Include, SearchSpec
from registry.descriptors import ObjectType, Relation

logger = logging.getLogger(__name__)

#: Rows an include may add per relation level, whatever the page size.
MAX_INCLUDE_ROWS = 2_000
_LIST_PARAMS = ("limit", "offset", "after", "sort", "fields", "include", "count", "filter")
_DECODER = msgspec.json.Decoder()


def body_from_query(params: Mapping[str, str]) -> dict[str, Any]:
    """The search body equivalent to a list request's query parameters."""
    errors = []
    body: dict[str, Any] = {}
    for key in params:
        if key not in _LIST_PARAMS:
            errors.append({"path": key, "message": "unknown query parameter"})
    for key in ("limit", "offset"):
        if key in params:
            body[key] = query_integer(params[key])
    if "after" in params:
        body["after"] = params["after"]
    for key in ("sort", "fields", "include"):  # comma-separated, as parse_search reads them
        if key in params:
            body[key] = params[key]
    if "count" in params:
        raw = params["count"].lower()
        body["count"] = {"true": True, "1": True, "false": False, "0": False}.get(raw, raw)
    if "filter" in params:
        try:
            body["filter"] = _DECODER.decode(params["filter"].encode())
        except (msgspec.DecodeError, RecursionError) as exc:
            raise BadRequestError(f"filter: malformed JSON ({exc})") from exc
    if errors:
        raise ValidationError(errors)
    return body


async def run_list(request: Request, rt: Runtime, principal: Principal, path: CrudPath) -> Response:
    assert path.obj is not None
    body = body_from_query(request.query_params)
    spec = parse_search(
        body, path.obj, rt.registry, max_page_size=rt.settings.max_page_size, role=principal.role
    )
    return await execute_search(rt, principal, path, spec)


async def run_search(
    request: Request, rt: Runtime, principal: Principal, path: CrudPath, raw: bytes
) -> Response:
    assert path.obj is not None
    try:
        body = _DECODER.decode(raw) if raw.strip() else {}
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"malformed JSON: {exc}") from exc
    spec = parse_search(
        body, path.obj, rt.registry, max_page_size=rt.settings.max_page_size, role=principal.role
    )
    return await execute_search(rt, principal, path, spec)


async def execute_search(
    rt: Runtime, principal: Principal, path: CrudPath, spec: SearchSpec
) -> Response:
    obj = path.obj
    assert obj is not None
    plan = rt.plans[obj.name]
    fields = None if spec.fields is None else needed_fields(obj, list(spec.fields), spec.include)
    names = plan.names_for(fields)
    order = compile_order(spec.sort, obj, plan.table, dialect=rt.dialect)
    width = len(names)
    # Where each ORDER BY value sits in a row: a selected field's own column, the internal key
    # for the tie-breaker, or an extra column only when the field is not selected.
    positions: list[int] = []
    extra: list[OrderColumn] = []
    for key, oc in zip(spec.sort, order, strict=False):
        if key.field.name in names:
            positions.append(names.index(key.field.name))
        else:
            positions.append(width + 2 + len(extra))
            extra.append(oc)
    positions.append(width)
    # Columns only encoded into the answer (not read back for the next page's cursor).
    encoded = frozenset(range(width)).difference(positions)
    after = (
        None
        if spec.after is None
        else decode_cursor(spec.after, sort_signature=spec.signature, key=rt.cursor_key)
    )

    def page_params(account_id: int | None) -> dict[str, Any]:
        params = bind_params(path, account_id)
        params[LIMIT_PARAM] = spec.limit + 1
        params[OFFSET_PARAM] = spec.offset
        if after is not None:
            params.update((f"k{i}", v) for i, v in enumerate(after) if v is not None)
        return params

    def envelope_of(
        rows: Sequence[Sequence[Any]], account_id: int | None, *, records: bool = False
    ) -> dict[str, Any]:
        has_more = len(rows) > spec.limit
        rows = rows[: spec.limit]
        next_cursor = None
        if has_more and rows:
            last = rows[-1]
            next_cursor = encode_cursor(
                [last[i] for i in positions], sort_signature=spec.signature, key=rt.cursor_key
            )
        owner = account_public_id(principal, path) if account_id is not None else None
        if records:  # only encoded: Structs (see ReadPlan.record)
            return {"data": [plan.record(row, names, owner) for row in rows], "next": next_cursor}
        return {"data": [plan.public(row, names, owner) for row in rows], "next": next_cursor}

    async def work(conn: AsyncConnection) -> dict[str, Any]:
        account_id = await scope_account(conn, rt, principal, path)
        page = page_statement(rt, path, spec, fields, order, extra, after, account_id)
        stmt, where = page.stmt, page.where
        params = page_params(account_id) | page.values
        rows = (await conn.execute(stmt, params)).all()
        if not rows and path.ancestors:
            await resolve_parent(conn, rt, path, account_id)  # a missing parent is a 404
        envelope = envelope_of(rows, account_id)
        if spec.include:
            pks = [int(row[width]) for row in rows[: spec.limit]]
            tree = include_tree(spec.include)
            await attach_includes(conn, rt, obj, envelope["data"], pks, tree, account_id)
        envelope["data"] = only_asked(envelope["data"], spec.fields, spec.include)
        if spec.count:
            total_stmt = sa.select(sa.func.count()).select_from(plan.table).where(*where)
            envelope["total"] = int((await conn.execute(total_stmt, params)).scalar_one())
        return envelope

    # A page that needs nothing more than its statement (no includes, no count, a caller
    # scoped to its own account) goes straight to the driver (`DirectReader`).
    if not spec.include and not spec.count and not principal.is_system:
        account_id = principal.account_id
        page = page_statement(rt, path, spec, fields, order, extra, after, account_id)
        rows = await direct_rows(
            rt,
            principal,
            page.stmt,
            page_params(account_id) | page.values,
            prebuilt=page.prebuilt,
            encoded=encoded,
        )
        if rows is not None and (rows or not path.ancestors):
            # Without includes the selected names are exactly those asked for: nothing to cut.
            return json_response(envelope_of(rows, account_id, records=True))
    return json_response(await read_for(rt, principal, work, obj))


LIMIT_PARAM, OFFSET_PARAM = "lim", "off"
#: Page statements kept per type (the shapes a client can ask for are many; the common ones few).
MAX_CACHED_PAGES = 256


class Page(NamedTuple):
    """A page's SELECT, its WHERE (for a count), the filter's values (`:v0`…) and whether
    the statement is kept for the life of the process (the direct reader then knows it by
    identity)."""

    stmt: sa.Select[Any]
    where: list[sa.ColumnElement[bool]]
    values: dict[str, Any]
    prebuilt: bool


def page_statement(
    rt: Runtime,
    path: CrudPath,
    spec: SearchSpec,
    fields: list[str] | None,
    order: list[OrderColumn],
    extra: list[OrderColumn],
    after: list[Any] | None,
    account_id: int | None,
) -> Page:
    """The page's SELECT and its WHERE, with every value a bind parameter (`:acct`, `:anc0`…,
    `:lim`, `:off`, cursor values `:k0`…, the filter's values `:v0`…).

    The statement depends only on the request's shape (the filter's included, see
    `filter_shape`), so it is built once per shape and reused: SQLAlchemy then neither
    rebuilds nor re-keys it. A filter whose structure depends on its values (relations,
    lists) is compiled with its values into a statement built for this request.
    """
    obj = path.obj
    assert obj is not None
    plan = rt.plans[obj.name]
    scoped = account_id is not None
    ancestors = ancestor_types(path)
    shaped = filter_shape(spec.filter, plan.table, dialect=rt.dialect)
    key = (
        tuple(a.name for a in ancestors),
        scoped,
        None if fields is None else tuple(fields),
        tuple((k.field.name, k.descending) for k in spec.sort),
        None if after is None else tuple(v is None for v in after),
        spec.offset > 0,
        None if shaped is None else shaped[0],
    )
    if shaped is not None and key in plan.pages:
        stmt, where = plan.pages[key]
        return Page(stmt, where, _slot_params(shaped[1]), True)

    def clause(slots: list[Any] | None) -> sa.ColumnElement[bool]:
        return compile_filter(
            spec.filter, obj, rt.registry, rt.tables,
            account_id=account_id, dialect=rt.dialect, table=plan.table, slots=slots,
        )  # fmt: skip

    slots: list[Any] | None = None if shaped is None else []
    found = clause(slots)
    if shaped is not None and slots != shaped[1]:  # the two walks disagree: never guess
        logger.error("filter shape of %s does not match its statement; not kept", obj.name)
        shaped, found = None, clause(None)
    where = [
        plan.account_param() if scoped else sa.true(),
        plan.under(ancestors, scoped=scoped),
        found,
    ]
    stmt = plan.select(fields, in_account=scoped)
    stmt = stmt.add_columns(*(oc.column.label(oc.label) for oc in extra)).where(*where)
    if after is not None:
        bound: list[Any] = [
            None if v is None else sa.bindparam(f"k{i}") for i, v in enumerate(after)
        ]
        stmt = stmt.where(keyset_predicate(order, bound))
    stmt = stmt.order_by(*order_by_clauses(order, dialect=rt.dialect))
    stmt = stmt.limit(sa.bindparam(LIMIT_PARAM, type_=sa.Integer))
    if spec.offset:
        stmt = stmt.offset(sa.bindparam(OFFSET_PARAM, type_=sa.Integer))
    if shaped is None:
        return Page(stmt, where, {}, False)
    kept = len(plan.pages) < MAX_CACHED_PAGES
    if kept:
        plan.pages[key] = (stmt, where)
    return Page(stmt, where, _slot_params(shaped[1]), kept)


def _slot_params(values: list[Any]) -> dict[str, Any]:
    """A shaped filter's values as the parameters its statement binds (`:v0`, `:v1`…)."""
    return {f"{SLOT_PREFIX}{i}": v for i, v in enumerate(values)}


def only_asked(
    items: list[dict[str, Any]], fields: Sequence[str] | None, includes: Sequence[Include]
) -> list[dict[str, Any]]:
    """`items` cut to what `fields` asked for, with `id` and the included relations; what
    `needed_fields` added for the includes goes. All of them when `fields` is None."""
    if fields is None:
        return items
    wanted = {"id", *fields, *(inc.relations[0].name for inc in includes)}
    return [{k: v for k, v in item.items() if k in wanted} for item in items]


def needed_fields(obj: ObjectType, fields: list[str], includes: Sequence[Include]) -> list[str]:
    """The selected fields plus what includes need to match on (a to-one include's
    reference field), whatever `fields` says."""
    names = list(fields)
    for inc in includes:
        first = inc.relations[0]
        if first.kind != "child" and first.field not in names:
            names.append(first.field)
    return names


IncludeTree = dict[str, tuple[Relation, "IncludeTree"]]


def include_tree(includes: Sequence[Include]) -> IncludeTree:
    tree: IncludeTree = {}
    for inc in includes:
        level = tree
        for rel in inc.relations:
            if rel.name not in level:
                level[rel.name] = (rel, {})
            level = level[rel.name][1]
    return tree


async def attach_includes(
    conn: AsyncConnection,
    rt: Runtime,
    obj: ObjectType,
    items: list[dict[str, Any]],
    pks: list[int],
    tree: IncludeTree,
    account_id: int | None,
    prefix: str = "",
) -> None:
    """Fetch each included relation for all `items` at once and attach it to each item.

    Children come as arrays under the child type's name, to-one relations as an object (or
    null) under the relation's name; nested levels recurse on the fetched rows. A level
    with more than `MAX_INCLUDE_ROWS` children is refused (422), never cut silently.
    """
    if not items:
        return
    for name, (rel, subtree) in tree.items():
        target = rt.registry[rel.target]
        plan = rt.plans[target.name]
        if rel.kind == "child":
            stmt = plan.scoped(plan.select(), account_id).where(plan.table.c[rel.field].in_(pks))
            stmt = stmt.order_by(*_default_order(plan, rt)).limit(MAX_INCLUDE_ROWS + 1)
            rows = await fetch_all(conn, stmt)
            if len(rows) > MAX_INCLUDE_ROWS:
                raise ValidationError.single(
                    "include",
                    f"{prefix}{name} has more than {MAX_INCLUDE_ROWS} rows for this page: "
                    "ask for fewer items (a smaller limit) or a narrower filter",
                )
            children = [public_row(r) for r in rows]
            grouped: dict[str, list[dict[str, Any]]] = {}
            for child in children:
                grouped.setdefault(child[rel.field], []).append(child)
            for item in items:
                item[name] = grouped.get(item["id"], [])
        else:
            wanted = sorted({item[rel.field] for item in items if item.get(rel.field)})
            rows = []
            if wanted:
                stmt = plan.scoped(plan.select(), account_id).where(
                    plan.table.c.id_random.in_(wanted)
                )
                rows = await fetch_all(conn, stmt)
            children = [public_row(r) for r in rows]
            by_id = {child["id"]: child for child in children}
            for item in items:
                item[name] = by_id.get(item.get(rel.field) or "")
        if subtree and rows:
            await attach_includes(
                conn,
                rt,
                target,
                children,
                [int(r[PK_LABEL]) for r in rows],
                subtree,
                account_id,
                f"{prefix}{name}.",
            )


def _default_order(plan: ReadPlan, rt: Runtime) -> list[Any]:
    order = compile_order(default_sort(plan.obj), plan.obj, plan.table, dialect=rt.dialect)
    return order_by_clauses(order, dialect=rt.dialect)
