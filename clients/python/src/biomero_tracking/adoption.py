"""Moving BIOMERO's applications from eventsourcing-sqlalchemy's tables onto the extension,
and back: the database steps of ``biomero-tracking check | adopt | status | rollback``.

Adopting imports every events and tracking table of BIOMERO's applications with
``biomero.import_eventsourcing``, all in one transaction, and renames each imported table
to ``<name>_eventsourcing_sqlalchemy``. The rename is what makes the switch complete: the
module creates a read-only view of the leader's notification log under the table's old
name (BIOMERO's analytics rebuild reads it), which it does only where no relation of that
name exists; and a stock process started by mistake finds no table to write behind the
module's back. Rolling back copies what the module stored since (events above the table's
highest id, and each follower's position as the module has it) into the renamed tables,
drops the module's views of their names and renames the tables back.

Every statement takes its values as parameters. DDL cannot, so its text is built by the
server with format('%I') from parameters, as the module builds its views.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, CursorResult, text

#: BIOMERO's applications: the leader, then its four views, which follow it.
LEADER = "WorkflowTracker"
FOLLOWERS = ("JobAccounting", "JobProgress", "WorkflowProgress", "WorkflowAnalytics")
APPLICATIONS = (LEADER, *FOLLOWERS)
#: What an imported table is renamed to: its name and this.
RENAMED = "_eventsourcing_sqlalchemy"

#: The functions the module calls for BIOMERO, by what needs them.
REQUIRED_FUNCTIONS = {
    "writing": ("biomero.record_events", "biomero.record_tracking", "biomero.claim"),
    "reading": (
        "biomero.select_notifications",
        "biomero.select_events",
        "biomero.max_notification_id",
        "biomero.max_tracking_id",
    ),
    "resetting (init_slurm)": ("biomero.reset_table_name", "biomero_internal.forget_positions"),
}


class AdoptionError(Exception):
    """A step refused: the message says why; the transaction was rolled back."""


@dataclass
class Check:
    ok: bool | None  # None: for information, decides nothing
    what: str


@dataclass
class Source:
    application: str
    table: str  # the relation's name in the current schema
    kind: str  # "events" or "tracking"
    state: str  # "table", "renamed", "both" (a half-done step), "view" (the module's) or ""


def _relation_kind(connection: Connection, name: str) -> str:
    """'r' for a table, 'v' for a view, '' for nothing of that name in the current schema."""
    kind = connection.execute(
        text(
            "SELECT c.relkind FROM pg_catalog.pg_class AS c "
            "WHERE c.relnamespace = pg_catalog.to_regnamespace(pg_catalog.current_schema()) "
            "AND c.relname = :name"
        ),
        {"name": name},
    ).scalar()
    return "" if kind is None else str(kind)


def sources(connection: Connection) -> list[Source]:
    """BIOMERO's eventsourcing-sqlalchemy tables in the current schema, and their state."""
    found = []
    for application in APPLICATIONS:
        kinds = ("events",) if application == LEADER else ("events", "tracking")
        for kind in kinds:
            table = f"{application.lower()}_{kind}"
            original = _relation_kind(connection, table)
            renamed = _relation_kind(connection, table + RENAMED) == "r"
            if original == "r":
                state = "both" if renamed else "table"
            elif renamed:
                state = "renamed"
            else:
                state = "view" if original == "v" else ""
            found.append(Source(application, table, kind, state))
    return found


def other_sessions(connection: Connection) -> list[str]:
    """Other client sessions on this database: BIOMERO's processes, while it runs."""
    rows = connection.execute(
        text(
            "SELECT pid, usename, coalesce(nullif(application_name, ''), '-'), "
            "coalesce(client_addr::text, 'local') FROM pg_catalog.pg_stat_activity "
            "WHERE datname = pg_catalog.current_database() AND pid <> pg_catalog.pg_backend_pid() "
            "AND backend_type = 'client backend' ORDER BY pid"
        )
    ).all()
    return [f"pid {pid} (role {role}, {name}, from {address})" for pid, role, name, address in rows]


def check(connection: Connection, package_version: str) -> list[Check]:
    """What BIOMERO needs of the database, as the connecting role sees it."""
    checks = []
    row = connection.execute(
        text(
            "SELECT a.default_version, e.extversion FROM pg_catalog.pg_available_extensions AS a "
            "LEFT JOIN pg_catalog.pg_extension AS e ON e.extname = a.name "
            "WHERE a.name = 'biomero_tracking'"
        )
    ).first()
    if row is None:
        checks.append(Check(False, "the server has no biomero_tracking library: install it"))
        return checks
    available, installed = row
    if installed is None:
        checks.append(Check(False, "extension not created here: CREATE EXTENSION biomero_tracking"))
        return checks
    if installed != available:
        checks.append(
            Check(
                False,
                f"extension {installed}, library {available}: "
                "ALTER EXTENSION biomero_tracking UPDATE",
            )
        )
    else:
        checks.append(Check(True, f"extension biomero_tracking {installed}"))
    if installed != package_version:
        checks.append(Check(None, f"this Python package is {package_version}"))
    preload = connection.execute(
        text("SELECT setting FROM pg_catalog.pg_settings WHERE name = 'shared_preload_libraries'")
    ).scalar()
    if preload is None:
        checks.append(Check(None, "shared_preload_libraries: this role may not read it"))
    else:
        loaded = "biomero_tracking" in [p.strip().strip('"') for p in str(preload).split(",")]
        checks.append(
            Check(
                None,
                "shared_preload_libraries has biomero_tracking: concurrent append mode possible"
                if loaded
                else "shared_preload_libraries lacks biomero_tracking: serialized mode only "
                "(the default, and what BIOMERO needs)",
            )
        )
    for need, functions in REQUIRED_FUNCTIONS.items():
        missing = connection.execute(
            text(
                "SELECT pg_catalog.string_agg(f, ', ' ORDER BY f) FROM pg_catalog.unnest("
                "CAST(:functions AS text[])) AS f WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_proc"
                " AS p WHERE p.pronamespace = pg_catalog.to_regnamespace(split_part(f, '.', 1)) "
                "AND p.proname = split_part(f, '.', 2) "
                "AND pg_catalog.has_function_privilege(p.oid, 'EXECUTE'))"
            ),
            {"functions": list(functions)},
        ).scalar()
        checks.append(
            Check(True, f"EXECUTE for {need}")
            if missing is None
            else Check(False, f"no EXECUTE on {missing}, needed for {need}: GRANT it to this role")
        )
    creates = connection.execute(
        text("SELECT pg_catalog.has_schema_privilege(pg_catalog.current_schema(), 'CREATE')")
    ).scalar()
    checks.append(
        Check(True, "CREATE on the current schema (BIOMERO's view tables)")
        if creates
        else Check(False, "no CREATE on the current schema: BIOMERO creates its view tables there")
    )
    return checks


def _execute_formatted(
    connection: Connection, template: str, **params: object
) -> CursorResult[Any]:
    """Runs the statement the server formats from ``template`` and parameters."""
    statement = connection.execute(text(f"SELECT format({template})"), params).scalar_one()
    return connection.exec_driver_sql(str(statement))


def _refuse_if_running(connection: Connection) -> None:
    sessions = other_sessions(connection)
    if sessions:
        msg = (
            "other sessions are connected to this database; stop BIOMERO's processes "
            "(and close other clients) first: " + "; ".join(sessions)
        )
        raise AdoptionError(msg)


def _refuse_half_done(found: list[Source]) -> None:
    both = [s.table for s in found if s.state == "both"]
    if both:
        msg = (
            f"both {', '.join(both)} and their {RENAMED} copies exist: a step was done by "
            "hand; keep one of each and run again"
        )
        raise AdoptionError(msg)


def _sources_to_move(connection: Connection) -> list[Source]:
    """What adopt and rollback start with: BIOMERO stopped and no step half done."""
    connection.execute(text("SET LOCAL lock_timeout = '10s'"))
    _refuse_if_running(connection)
    found = sources(connection)
    _refuse_half_done(found)
    return found


def adopt(connection: Connection, progress: Callable[[str], None]) -> list[tuple[str, int, int]]:
    """Imports every table of BIOMERO's applications and renames it, in the caller's
    transaction. Returns (application, events imported, positions advanced)."""
    found = _sources_to_move(connection)
    by_application = {a: {s.kind: s for s in found if s.application == a} for a in APPLICATIONS}
    if not any(s.state == "table" for s in found):
        adopted = [s.table for s in found if s.state == "renamed"]
        if adopted:
            raise AdoptionError(f"already adopted: {', '.join(adopted)} renamed; nothing to do")
        raise AdoptionError(
            "no eventsourcing-sqlalchemy tables of BIOMERO's applications in schema "
            f"{connection.execute(text('SELECT current_schema()')).scalar()}: nothing to import"
        )
    imported = []
    for application, kinds in by_application.items():
        events, tracking = kinds["events"], kinds.get("tracking")
        if events.state != "table":
            continue
        started = time.monotonic()
        rows = connection.execute(
            text(
                "SELECT * FROM biomero.import_eventsourcing(:application, "
                "CAST(:events AS regclass), CAST(:tracking AS regclass))"
            ),
            {
                "application": application,
                "events": _qualified(connection, events.table),
                "tracking": None
                if tracking is None or tracking.state != "table"
                else _qualified(connection, tracking.table),
            },
        ).one()
        for source in (events, tracking):
            if source is not None and source.state == "table":
                _execute_formatted(
                    connection,
                    "'ALTER TABLE %s RENAME TO %I', CAST(:table AS regclass), :renamed",
                    table=_qualified(connection, source.table),
                    renamed=source.table + RENAMED,
                )
        progress(
            f"{application}: {rows.events_imported} events imported, "
            f"{rows.events_already_present} already present, "
            f"{rows.positions_advanced} positions advanced "
            f"({time.monotonic() - started:.1f} s)"
        )
        imported.append((application, int(rows.events_imported), int(rows.positions_advanced)))
    return imported


def _qualified(connection: Connection, name: str) -> str:
    return str(
        connection.execute(
            text("SELECT format('%I.%I', pg_catalog.current_schema(), CAST(:name AS text))"),
            {"name": name},
        ).scalar_one()
    )


def rollback(connection: Connection, progress: Callable[[str], None]) -> None:
    """Copies what the module stored since adoption into the renamed tables and renames them
    back, in the caller's transaction."""
    found = _sources_to_move(connection)
    renamed = [s for s in found if s.state == "renamed"]
    if not renamed:
        raise AdoptionError(f"nothing to roll back: no table named *{RENAMED}")
    for source in renamed:
        table = _qualified(connection, source.table + RENAMED)
        if source.kind == "events":
            copied = connection.execute(
                text(
                    "SELECT count(*) FROM biomero.events WHERE application_name = :application "
                    "AND notification_id > :highest"
                ),
                {"application": source.application, "highest": _highest_id(connection, table)},
            ).scalar_one()
            _execute_formatted(
                connection,
                "'INSERT INTO %1$s (id, originator_id, originator_version, topic, state) "
                "SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, "
                "e.state FROM biomero.events AS e WHERE e.application_name = %2$L "
                "AND e.notification_id > (SELECT coalesce(max(id), 0) FROM %1$s) "
                "ORDER BY e.notification_id', CAST(:table AS regclass), :application",
                table=table,
                application=source.application,
            )
            connection.execute(
                text(
                    "SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence(:table, 'id'), "
                    "greatest(:highest, 1), :highest > 0)"
                ),
                {"table": table, "highest": _highest_id(connection, table)},
            )
            progress(f"{source.application}: {copied} events copied back")
        else:
            position = connection.execute(
                text(
                    "SELECT notification_id FROM biomero.tracking WHERE application_name = "
                    ":application AND upstream_application_name = :upstream"
                ),
                {"application": source.application, "upstream": LEADER},
            ).scalar()
            # The read model is as the module left it, so the position is the module's.
            _execute_formatted(
                connection,
                "'DELETE FROM %s WHERE application_name = %L', CAST(:table AS regclass), :leader",
                table=table,
                leader=LEADER,
            )
            if position is not None:
                _execute_formatted(
                    connection,
                    "'INSERT INTO %s (application_name, notification_id) VALUES (%L, %s)', "
                    "CAST(:table AS regclass), :leader, CAST(:position AS bigint)",
                    table=table,
                    leader=LEADER,
                    position=position,
                )
            progress(f"{source.application}: position {position} after {LEADER}")
        if _relation_kind(connection, source.table) == "v":
            _refuse_foreign_view(connection, source.table)
            _execute_formatted(
                connection,
                "'DROP VIEW %s', CAST(:view AS regclass)",
                view=_qualified(connection, source.table),
            )
        _execute_formatted(
            connection,
            "'ALTER TABLE %s RENAME TO %I', CAST(:table AS regclass), :original",
            table=table,
            original=source.table,
        )


def _refuse_foreign_view(connection: Connection, name: str) -> None:
    ours = connection.execute(
        text(
            "SELECT pg_catalog.obj_description(CAST(:view AS regclass), 'pg_class') "
            "LIKE '%(biomero_tracking)%'"
        ),
        {"view": _qualified(connection, name)},
    ).scalar()
    if not ours:
        msg = f"a view {name} that biomero_tracking did not create is in the way: drop it first"
        raise AdoptionError(msg)


def _highest_id(connection: Connection, table: str) -> int:
    return int(
        _execute_formatted(
            connection,
            "'SELECT coalesce(max(id), 0) FROM %s', CAST(:table AS regclass)",
            table=table,
        ).scalar_one()
    )


def status(connection: Connection) -> list[tuple[str, str, int | None, int | None, int | None]]:
    """Each follower's position after each upstream, the upstream's head and the lag."""
    rows = connection.execute(
        text(
            "SELECT application_name, upstream_application_name, position, upstream_head, lag "
            "FROM biomero.followers ORDER BY application_name, upstream_application_name"
        )
    ).all()
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]
