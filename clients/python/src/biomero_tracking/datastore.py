"""Connections and transactions: a SQLAlchemy engine or an application's scoped session.

Two ways to reach the database, chosen by the factory from the environment:

* ``SQLALCHEMY_URL``: the datastore owns an engine. A recorder call is one statement in
  autocommit mode (one round trip).
* ``SQLALCHEMY_SCOPED_SESSION_TOPIC``: the application supplies a scoped session and owns the
  unit of work. Recorders run their statements in it and never commit it; the application
  commits (for example once per command).

Either way a follower processes each notification in a :class:`Processing` transaction of
its own, on a connection of the engine: the recorders' statements run on that connection,
and the policy gets a session joined to it with savepoints, which is also what the scoped
session's registry returns while the policy runs. Commits, rollbacks and closes the policy
makes on it stay inside the processing transaction, which commits once, at the end.
"""

from __future__ import annotations

import itertools
import time
from contextlib import contextmanager
from contextvars import ContextVar
from threading import Lock
from typing import TYPE_CHECKING, Any

import sqlalchemy.exc
from eventsourcing.persistence import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    PersistenceError,
    ProgrammingError,
)
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from sqlalchemy.engine import Connection, Engine, Row

#: How often a statement is tried when its connection turns out to be dropped (a server
#: restart, an idle connection cut by a firewall), and the pause between tries. Only
#: statements that were first in their transaction are tried again: nothing else was lost.
RECONNECT_ATTEMPTS = 5
RECONNECT_PAUSE = 0.2

# The library's exception for each DB-API exception class, by the PEP 249 names that
# psycopg2, psycopg and SQLAlchemy's wrappers all use, most specific first. The drivers
# choose the class from the SQLSTATE: 23505 (a duplicate aggregate version, the
# extension's only unique violation) is an IntegrityError, 22004/22023 (bad input) a
# DataError, 40001, 55P03, 57014 and dropped connections OperationalErrors.
_LIBRARY_EXCEPTIONS: dict[str, type[PersistenceError]] = {
    "IntegrityError": IntegrityError,
    "DataError": DataError,
    "OperationalError": OperationalError,
    "ProgrammingError": ProgrammingError,
    "InternalError": InternalError,
    "NotSupportedError": NotSupportedError,
    "InterfaceError": InterfaceError,
    "DatabaseError": DatabaseError,
}


def persistence_error(error: BaseException) -> PersistenceError:
    """The eventsourcing exception for a SQLAlchemy or DB-API driver error, with the
    server's message as its text."""
    library_class = next(
        (
            _LIBRARY_EXCEPTIONS[cls.__name__]
            for cls in type(error).__mro__
            if cls.__name__ in _LIBRARY_EXCEPTIONS
        ),
        PersistenceError,
    )
    original = getattr(error, "orig", None)
    message = str(original if original is not None else error).strip()
    return library_class(message)


_PRESENT = text("SELECT to_regclass(:relation) IS NOT NULL")
_COMMENT_ON_TABLE = text("SELECT format('COMMENT ON TABLE %I IS %L', :relation, :comment)")
_COMMENT_ON_VIEW = text("SELECT format('COMMENT ON VIEW %I IS %L', :relation, :comment)")
#: What creating a relation raises when another session created it meanwhile:
#: duplicate_table, or unique_violation on the catalog's type name.
_CREATED_CONCURRENTLY = {"42P07", "23505"}


def _sqlstate(error: sqlalchemy.exc.DBAPIError) -> str | None:
    # psycopg2 names it pgcode, psycopg 3 sqlstate.
    original = error.orig
    return getattr(original, "pgcode", None) or getattr(original, "sqlstate", None)


def _is_dropped_connection(error: sqlalchemy.exc.DBAPIError) -> bool:
    return bool(error.connection_invalidated)


class Processing:
    """The transaction in which a follower processes one notification.

    Recorder statements run on its connection (:meth:`execute`); the policy runs with
    :meth:`policy_session`, a session joined to the same connection with savepoints
    (``join_transaction_mode="create_savepoint"``): its ``commit()`` releases a savepoint,
    its ``rollback()`` and ``close()`` roll back to one, so nothing the policy does on it
    ends this transaction. The datastore commits it once, or rolls it back, at the end.
    """

    def __init__(self, datastore: Datastore) -> None:
        self._datastore = datastore
        self._connection: Connection | None = None
        self._session: Session | None = None
        self._statements = 0
        self._attempts = 0
        self.discarded = False

    def discard(self) -> None:
        """Roll back at the end instead of committing."""
        self.discarded = True

    def _connect(self) -> Connection:
        if self._connection is None:
            self._connection = self._datastore.engine.connect()
            self._connection.begin()
        return self._connection

    def execute(self, statement: Any, params: dict[str, Any]) -> Any:
        while True:
            connection = self._connect()
            try:
                result = connection.execute(statement, params)
            except sqlalchemy.exc.DBAPIError as error:
                # The first statement may retry on a new connection: nothing is lost yet.
                self._attempts += 1
                if (
                    _is_dropped_connection(error)
                    and self._statements == 0
                    and self._session is None
                    and self._attempts < RECONNECT_ATTEMPTS
                ):
                    self._close_connection()
                    time.sleep(RECONNECT_PAUSE)
                    continue
                raise persistence_error(error) from error
            self._statements += 1
            return result

    @contextmanager
    def policy_session(self) -> Iterator[Session]:
        """The policy's session, also installed in the application's scoped session
        registry while the block runs; at its end pending ORM changes are flushed and
        the last savepoint released."""
        if self._session is None:
            self._session = self._datastore.joined_session(self._connect())
        session = self._session
        with self._datastore.installed_in_registry(session):
            yield session
            session.commit()

    @property
    def session(self) -> Session | None:
        return self._session

    def finish(self) -> None:
        """Commits, unless discarded (then :meth:`close` rolls back)."""
        if self._connection is None or self.discarded:
            return
        try:
            self._connection.commit()
        except sqlalchemy.exc.DBAPIError as error:
            raise persistence_error(error) from error

    def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            try:
                session.close()
            except sqlalchemy.exc.SQLAlchemyError:
                pass  # the connection's rollback below ends everything anyway
        self._close_connection()

    def _close_connection(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            try:
                connection.close()  # rolls back anything not committed
            except sqlalchemy.exc.SQLAlchemyError:
                connection.invalidate()


class _RegistrySessionFactory:
    """Replaces a scoped session registry's ``createfunc`` (once per registry): while a
    policy runs in this context the registry's "new" session is the processing session,
    so even ``remove()`` inside a policy cannot lead it to a session of its own outside
    the processing transaction. Otherwise it is the application's factory."""

    def __init__(self, createfunc: Callable[[], Any]) -> None:
        self.createfunc = createfunc
        self.override: ContextVar[Session | None] = ContextVar(
            "biomero_tracking_policy_session", default=None
        )

    def __call__(self) -> Any:
        session = self.override.get()
        return session if session is not None else self.createfunc()


_registry_lock = Lock()


class Datastore:
    """Runs the recorders' statements on one database."""

    _counter = itertools.count()

    def __init__(
        self,
        *,
        url: str | None = None,
        scoped_session: Any = None,
        autoflush: bool = True,
        **engine_kwargs: Any,
    ) -> None:
        self.scoped_session = scoped_session
        self._owns_engine = False
        self.session_maker: sessionmaker[Session] | None = None
        if scoped_session is not None:
            # Anything that behaves like sqlalchemy.orm.scoped_session (BIOMERO passes an
            # adapter object whose attributes are the scoped session's): its registry is
            # where a policy's session is installed.
            if getattr(scoped_session, "registry", None) is None:
                msg = (
                    "SQLALCHEMY_SCOPED_SESSION_TOPIC must name a callable returning a "
                    "sqlalchemy.orm.scoped_session (an object with a registry)"
                )
                raise ProgrammingError(msg)
            self.engine: Engine = scoped_session.get_bind()
        elif url:
            self.engine = create_engine(url, **engine_kwargs)
            self._owns_engine = True
            # Same pool; a single statement runs in autocommit mode: one round trip.
            self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
            self.session_maker = sessionmaker(bind=self.engine, autoflush=autoflush)
        else:
            msg = (
                "biomero_tracking needs SQLALCHEMY_URL or SQLALCHEMY_SCOPED_SESSION_TOPIC "
                "in the environment"
            )
            raise OSError(msg)
        if self.engine.dialect.name != "postgresql":
            msg = (
                "biomero_tracking works only with PostgreSQL (with the biomero_tracking "
                f"extension); got dialect {self.engine.dialect.name!r}"
            )
            raise ProgrammingError(msg)
        # One context variable per datastore: recorder calls join this datastore's
        # processing only, never a transaction on another engine.
        self._current: ContextVar[Processing | None] = ContextVar(
            f"biomero_tracking_transaction_{next(self._counter)}", default=None
        )
        self._checked = False
        self._check_lock = Lock()

    def current_processing(self) -> Processing | None:
        """The processing transaction this thread is in on this datastore, if any."""
        return self._current.get()

    @contextmanager
    def processing_transaction(self) -> Iterator[Processing]:
        """A follower's processing of one notification (see :class:`Processing`).

        With a scoped session, work the application left pending in it (for example the
        leader's events saved by the command that prompted this processing) is committed
        first, as :meth:`Application.save` commits with a URL: the notification must be
        committed before anyone can process it.
        """
        if self._current.get() is not None:
            msg = (
                "a follower processes each notification in a transaction of its own, but "
                "this thread is already in a biomero_tracking processing transaction"
            )
            raise ProgrammingError(msg)
        self.commit_pending()
        processing = Processing(self)
        token = self._current.set(processing)
        try:
            yield processing
            processing.finish()
        finally:
            self._current.reset(token)
            processing.close()

    def commit_pending(self) -> None:
        """Commits the work the application left pending in this thread's scoped session
        (none without one, or inside a processing transaction)."""
        if self.scoped_session is None or self._current.get() is not None:
            return
        session = self._scoped_thread_session()
        if session.in_transaction():
            self._commit(session)

    def joined_session(self, connection: Connection) -> Session:
        """A session on ``connection`` that nests its transactions in savepoints, made by
        the application's session factory when there is one (its settings kept)."""
        factory = (
            self.scoped_session.session_factory
            if self.scoped_session is not None
            else self.session_maker
        )
        if isinstance(factory, sessionmaker):
            session: Session = factory(bind=connection, join_transaction_mode="create_savepoint")
            return session
        return Session(bind=connection, join_transaction_mode="create_savepoint")

    @contextmanager
    def installed_in_registry(self, session: Session) -> Iterator[None]:
        """Makes ``session`` what the scoped session returns in this thread for the
        duration of the block, then puts back what was there."""
        if self.scoped_session is None:
            yield
            return
        registry = self.scoped_session.registry
        with _registry_lock:
            factory = registry.createfunc
            if not isinstance(factory, _RegistrySessionFactory):
                factory = _RegistrySessionFactory(factory)
                registry.createfunc = factory
        previous = registry() if registry.has() else None
        token = factory.override.set(session)
        registry.set(session)
        try:
            yield
        finally:
            factory.override.reset(token)
            if previous is not None:
                registry.set(previous)
            else:
                registry.clear()

    def _scoped_thread_session(self) -> Session:
        """This thread's session of the application's scoped session."""
        session: Session = self.scoped_session.registry()
        return session

    def run(self, statement: Any, params: dict[str, Any]) -> Sequence[Row[Any]]:
        """Runs one statement and returns its rows: in this thread's processing on this
        datastore if there is one, else in the scoped session, else as a transaction of
        its own (autocommit: one round trip, the extension's functions being atomic)."""
        processing = self._current.get()
        if processing is not None:
            return list(processing.execute(statement, params))
        if self.scoped_session is not None:
            return self._run_in_scoped_session(statement, params, commit=False)
        return self._run_autocommit(statement, params)

    def run_and_commit(self, statement: Any, params: dict[str, Any]) -> Sequence[Row[Any]]:
        """Like :meth:`run`, but outside a processing transaction the statement is
        committed at once: with a scoped session, together with whatever the session
        holds, so that no lock it takes stays held until the application commits."""
        processing = self._current.get()
        if processing is not None:
            return list(processing.execute(statement, params))
        if self.scoped_session is not None:
            return self._run_in_scoped_session(statement, params, commit=True)
        return self._run_autocommit(statement, params)

    def _run_autocommit(self, statement: Any, params: dict[str, Any]) -> Sequence[Row[Any]]:
        for attempt in itertools.count(1):
            try:
                with self._autocommit.connect() as connection:
                    return list(connection.execute(statement, params))
            except sqlalchemy.exc.DBAPIError as error:
                if not _is_dropped_connection(error) or attempt >= RECONNECT_ATTEMPTS:
                    raise persistence_error(error) from error
                time.sleep(RECONNECT_PAUSE)
        raise AssertionError  # pragma: no cover - the loop returns or raises

    def _run_in_scoped_session(
        self, statement: Any, params: dict[str, Any], *, commit: bool
    ) -> Sequence[Row[Any]]:
        session = self._scoped_thread_session()
        # A dropped connection can be retried only when this statement opened the
        # session's transaction: then none of the application's work was lost with it.
        first_in_transaction = not session.in_transaction()
        for attempt in itertools.count(1):
            try:
                rows = list(session.execute(statement, params))
            except sqlalchemy.exc.DBAPIError as error:
                if (
                    _is_dropped_connection(error)
                    and first_in_transaction
                    and attempt < RECONNECT_ATTEMPTS
                ):
                    _rollback_quietly(session)
                    time.sleep(RECONNECT_PAUSE)
                    continue
                _roll_back_innermost(session, error)
                raise persistence_error(error) from error
            if commit:
                self._commit(session)
            return rows
        raise AssertionError  # pragma: no cover - the loop returns or raises

    @staticmethod
    def _commit(session: Session) -> None:
        try:
            session.commit()
        except sqlalchemy.exc.DBAPIError as error:
            _rollback_quietly(session)
            raise persistence_error(error) from error

    def create_unless_present(
        self, relation: Any, create: Any, params: dict[str, Any], *, view: bool, comment: str
    ) -> str:
        """Creates the relation that the query ``relation`` names, in the current schema,
        with the DDL that the query ``create`` returns for it (given the name as
        ``relation``; the server quotes it) and
        ``comment`` (a view's if ``view``), unless a relation of that name is on the search
        path; returns the name. It commits on a connection of its own, so the relation
        exists whatever the application's unit of work does next; a concurrent creator's
        counts as present."""
        comment_on = _COMMENT_ON_VIEW if view else _COMMENT_ON_TABLE
        try:
            with self.engine.connect() as connection, connection.begin():
                # Never wait for ever on a lock this thread's own session may hold.
                connection.execute(text("SET LOCAL lock_timeout = '10s'"))
                name = str(connection.execute(relation, params).scalar())
                if connection.execute(_PRESENT, {"relation": name}).scalar():
                    return name
                try:
                    with connection.begin_nested():
                        for ddl in (
                            connection.execute(create, {**params, "relation": name}).scalar(),
                            connection.execute(
                                comment_on, {"relation": name, "comment": comment}
                            ).scalar(),
                        ):
                            connection.execute(text(str(ddl)))
                except sqlalchemy.exc.DBAPIError as error:
                    if _sqlstate(error) not in _CREATED_CONCURRENTLY:
                        raise
                return name
        except sqlalchemy.exc.DBAPIError as error:
            raise persistence_error(error) from error

    def check_extension(self) -> None:
        """Raises a clear error when the database lacks the biomero_tracking extension."""
        if self._checked:
            return
        with self._check_lock:
            if self._checked:
                return
            try:
                with self.engine.connect() as connection:
                    installed = connection.execute(
                        text("SELECT to_regproc('biomero.record_events') IS NOT NULL")
                    ).scalar()
            except sqlalchemy.exc.DBAPIError as error:
                raise persistence_error(error) from error
            if not installed:
                msg = (
                    "the database has no biomero_tracking extension: run "
                    "CREATE EXTENSION biomero_tracking as its owner"
                )
                raise ProgrammingError(msg)
            self._checked = True

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()


def _roll_back_innermost(session: Session, error: sqlalchemy.exc.DBAPIError) -> None:
    """After a failed statement PostgreSQL has aborted the transaction up to the innermost
    savepoint: roll back that savepoint when the application has one open (its outer unit
    of work stays usable), else the session's transaction."""
    nested = session.get_nested_transaction()
    if nested is not None and not _is_dropped_connection(error):
        try:
            nested.rollback()
        except sqlalchemy.exc.SQLAlchemyError:
            _rollback_quietly(session)
        return
    _rollback_quietly(session)


def _rollback_quietly(session: Session) -> None:
    try:
        session.rollback()
    except sqlalchemy.exc.SQLAlchemyError:
        pass
