"""``biomero-tracking``: an operator's command, run with BIOMERO's own interpreter.

    biomero-tracking check     the database and this interpreter's BIOMERO are ready
    biomero-tracking patch     apply the BIOMERO patch (``--revert`` takes it out)
    biomero-tracking adopt     import BIOMERO's eventsourcing-sqlalchemy tables, then patch
    biomero-tracking status    followers' positions and lag
    biomero-tracking rollback  back to eventsourcing-sqlalchemy's tables, then unpatch

The database is ``--url`` or ``SQLALCHEMY_URL``, as BIOMERO's. A step that refuses changes
nothing: database steps run in one transaction, and the patch is checked before either.
Exit status: 0 done, 1 refused or a check failed, 2 the database cannot be reached.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy.exc
from sqlalchemy import Connection, create_engine

from biomero_tracking import __version__, adoption
from biomero_tracking.biomero_patch import InstalledBiomero, PatchError, apply, installed_biomero
from biomero_tracking.biomero_patch import state as patch_state

REFUSED, UNREACHABLE = 1, 2


class Refused(Exception):
    def __init__(self, message: str, status: int = REFUSED) -> None:
        super().__init__(message)
        self.status = status


def _say(message: str) -> None:
    print(message, flush=True)


@contextmanager
def _transaction(url: str | None) -> Iterator[Connection]:
    """One transaction on the database; any database error becomes a Refused, rolled back."""
    if not url:
        raise Refused("no database: pass --url or set SQLALCHEMY_URL", UNREACHABLE)
    try:
        engine = create_engine(url, pool_pre_ping=False)
    except (sqlalchemy.exc.ArgumentError, ImportError) as error:
        raise Refused(f"not a database URL BIOMERO can use: {error}", UNREACHABLE) from None
    try:
        try:
            connection = engine.connect()
        except sqlalchemy.exc.DBAPIError as error:
            first_line = str(error.orig).strip().splitlines()[0]
            msg = f"cannot connect to {engine.url.render_as_string()}: {first_line}"
            raise Refused(msg, UNREACHABLE) from None
        with connection, connection.begin():
            try:
                yield connection
            except sqlalchemy.exc.DBAPIError as error:
                orig = error.orig
                code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
                first_line = str(orig).strip().splitlines()[0]
                msg = f"{first_line} (SQLSTATE {code}); nothing was changed"
                raise Refused(msg) from None
            except adoption.AdoptionError as error:
                raise Refused(f"{error}; nothing was changed") from None
    finally:
        engine.dispose()


def _biomero() -> tuple[InstalledBiomero, str]:
    """This interpreter's BIOMERO and the patch's state in it; refuses an unknown one."""
    try:
        biomero = installed_biomero()
        patched = patch_state(biomero.site, biomero.patch())
    except PatchError as error:
        raise Refused(str(error)) from None
    if patched == "changed":
        msg = f"biomero {biomero.version} at {biomero.package} is not as released: "
        msg += "its files differ where the patch goes; nothing was changed"
        raise Refused(msg)
    return biomero, patched


def _patch(biomero: InstalledBiomero, *, reverse: bool) -> None:
    try:
        changed = apply(biomero.site, biomero.patch(), reverse=reverse)
    except (PatchError, OSError) as error:
        raise Refused(str(error)) from None
    done = "reverted" if reverse else "applied"
    _say(
        f"patch {done} to biomero {biomero.version} at {biomero.package}: "
        + (", ".join(changed) if changed else f"already {done}, nothing to change")
    )


def check(url: str | None) -> int:
    failed = False
    try:
        biomero, patched = _biomero()
        _say(f"ok    biomero {biomero.version} at {biomero.package}: patch {patched}")
    except Refused as error:
        _say(f"FAIL  {error}")
        failed = True
    with _transaction(url) as connection:
        for found in adoption.check(connection, __version__):
            _say({True: "ok    ", False: "FAIL  ", None: "note  "}[found.ok] + found.what)
            failed = failed or found.ok is False
        for source in adoption.sources(connection):
            if source.state:
                _say(f"note  {source.table}: {_STATES[source.state]}")
    return REFUSED if failed else 0


_STATES = {
    "table": "eventsourcing-sqlalchemy's table, not adopted",
    "renamed": f"adopted (the table is {adoption.RENAMED})",
    "both": f"both the table and a {adoption.RENAMED} copy: a step was done by hand",
    "view": "the module's view",
}


def adopt(url: str | None) -> int:
    biomero, _ = _biomero()
    with _transaction(url) as connection:
        failed = [c.what for c in adoption.check(connection, __version__) if c.ok is False]
        if failed:
            raise Refused("the database is not ready: " + "; ".join(failed))
        imported = adoption.adopt(connection, _say)
    _say(
        f"imported {sum(i[1] for i in imported)} events and "
        f"{sum(i[2] for i in imported)} positions of {len(imported)} applications"
    )
    _patch(biomero, reverse=False)
    _say("set PERSISTENCE_MODULE=biomero_tracking for BIOMERO's processes, then start them")
    return 0


def rollback(url: str | None) -> int:
    biomero, _ = _biomero()
    with _transaction(url) as connection:
        adoption.rollback(connection, _say)
    _patch(biomero, reverse=True)
    _say("set PERSISTENCE_MODULE=eventsourcing_sqlalchemy for BIOMERO's processes, then start them")
    return 0


def status(url: str | None) -> int:
    with _transaction(url) as connection:
        rows = adoption.status(connection)
    _say(f"{'follower':<20} {'upstream':<20} {'position':>10} {'head':>10} {'lag':>8}")
    for follower, upstream, position, head, lag in rows:
        _say(f"{follower:<20} {upstream:<20} {position!s:>10} {head!s:>10} {lag!s:>8}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="biomero-tracking", description="Moves BIOMERO onto biomero_tracking and back."
    )
    parser.add_argument(
        "--url", default=os.environ.get("SQLALCHEMY_URL"), help="BIOMERO's database"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="the database and this interpreter's BIOMERO are ready")
    patch = commands.add_parser(
        "patch", help="apply the BIOMERO patch to this interpreter's BIOMERO"
    )
    patch.add_argument("--revert", action="store_true", help="take the patch out")
    commands.add_parser(
        "adopt", help="import BIOMERO's eventsourcing-sqlalchemy tables, then patch"
    )
    commands.add_parser("status", help="followers' positions and lag")
    commands.add_parser("rollback", help="back to eventsourcing-sqlalchemy's tables, then unpatch")
    arguments = parser.parse_args(argv)
    try:
        if arguments.command == "patch":
            _patch(_biomero()[0], reverse=arguments.revert)
            return 0
        run = {"check": check, "adopt": adopt, "status": status, "rollback": rollback}
        return run[arguments.command](arguments.url)
    except Refused as error:
        print(f"biomero-tracking {arguments.command}: {error}", file=sys.stderr)
        return error.status


if __name__ == "__main__":
    sys.exit(main())
