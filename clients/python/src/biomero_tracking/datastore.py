"""Connections and transactions: a SQLAlchemy engine or an application's scoped session.

Two ways to reach the database, chosen by the factory from the environment:

* ``SQLALCHEMY_URL``: the datastore owns an engine. A recorder call outside a transaction
  is one statement in autocommit mode (one round trip); inside one (a follower's
  processing, or :meth:`Datastore.transaction`) it joins it.
* ``SQLALCHEMY_SCOPED_SESSION_TOPIC``: the application supplies a scoped session and owns the
  unit of work. Recorders run their statements in it and never commit it; the application
  commits (for example once per command). Follower processing is the exception: it commits
  each processed notification itself (see :meth:`Datastore.processing_transaction`).
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
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
    from collections.abc import Callable, Iterator

    from sqlalchemy.engine import Engine

# SQLAlchemy's wrappers of the DB-API exceptions, most specific first, and the library's
# exception each becomes. psycopg2 and psycopg choose the DB-API class from the SQLSTATE
# class: 23 (23505, the extension's only unique violation: a duplicate aggregate version)
# is an IntegrityError, 22 (22004, 22023: bad input) a DataError, 40001 (serialization
# failure), 55P03 (lock timeout) and 57014 (statement timeout) OperationalErrors.
_EXCEPTIONS: tuple[tuple[type[Exception], type[PersistenceError]], ...] = (
    (sqlalchemy.exc.IntegrityError, IntegrityError),
    (sqlalchemy.exc.DataError, DataError),
    (sqlalchemy.exc.OperationalError, OperationalError),
    (sqlalchemy.exc.ProgrammingError, ProgrammingError),
    (sqlalchemy.exc.InternalError, InternalError),
    (sqlalchemy.exc.NotSupportedError, NotSupportedError),
    (sqlalchemy.exc.InterfaceError, InterfaceError),
    (sqlalchemy.exc.DatabaseError, DatabaseError),
)


def persistence_error(error: sqlalchemy.exc.SQLAlchemyError) -> PersistenceError:
    """The eventsourcing exception for a SQLAlchemy (DB-API) error, with the server's
    message (first line) as its text."""
    library_class = next(
        (library for wrapper, library in _EXCEPTIONS if isinstance(error, wrapper)),
        PersistenceError,
    )
    original = getattr(error, "orig", None)
    message = str(original if original is not None else error).strip()
    return library_class(message)


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a psycopg2 or psycopg error wrapped by SQLAlchemy, if any."""
    original = getattr(error, "orig", error)
    return getattr(original, "pgcode", None) or getattr(original, "sqlstate", None)


@dataclass
class _Transaction:
    session: Session
    commit: bool
    owned: bool


class Datastore:
    """Runs the recorders' statements in transactions on one database."""

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
        if scoped_session is not None:
            # Anything that behaves like sqlalchemy.orm.scoped_session (BIOMERO passes an
            # adapter object whose attributes are the scoped session's).
            self.engine: Engine = scoped_session.get_bind()
            self.session_maker: sessionmaker[Session] | None = None
        elif url:
            self.engine = create_engine(url, **engine_kwargs)
            self._owns_engine = True
            # Same pool; a single statement outside a transaction runs in autocommit mode.
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
        # One context variable per datastore: nested calls join this datastore's
        # transaction only, never a transaction on another engine.
        self._current: ContextVar[_Transaction | None] = ContextVar(
            f"biomero_tracking_transaction_{next(self._counter)}", default=None
        )
        self._checked = False
        self._check_lock = Lock()

    @property
    def is_scoped(self) -> bool:
        return self.scoped_session is not None

    def current_session(self) -> Session | None:
        """The session of the transaction this thread is in on this datastore, if any."""
        transaction = self._current.get()
        return None if transaction is None else transaction.session

    @contextmanager
    def transaction(self, *, commit: bool) -> Iterator[Session]:
        """A transaction, or the one this thread is already in on this datastore.

        With a URL the outermost call commits (``commit=True``) or rolls back at the end.
        With a scoped session it does neither: the application owns the unit of work.
        On a database error the transaction is rolled back (PostgreSQL has aborted it
        anyway), in both modes.
        """
        current = self._current.get()
        if current is not None:
            if commit and not current.commit:
                msg = "Transaction already started with commit=False"
                raise ProgrammingError(msg)
            yield current.session
            return
        if self.scoped_session is not None:
            transaction = _Transaction(self._scoped_thread_session(), commit, owned=False)
        else:
            assert self.session_maker is not None
            transaction = _Transaction(self.session_maker(), commit, owned=True)
        token = self._current.set(transaction)
        session = transaction.session
        try:
            try:
                yield session
            except BaseException as error:
                if transaction.owned or _is_database_error(error):
                    _rollback_quietly(session)
                raise
            if transaction.owned:
                if commit:
                    self._commit(session)
                else:
                    session.rollback()
        finally:
            self._current.reset(token)
            if transaction.owned:
                session.close()

    @contextmanager
    def processing_transaction(self) -> Iterator[Session]:
        """The transaction in which a follower processes one notification: it claims,
        runs the policy, records new events with the tracking position, and commits.

        With a scoped session, work the application left pending in the session (for
        example the leader's events saved by the command that prompted this processing)
        is committed first, as :meth:`Application.save` commits with a URL. The policy
        must neither commit nor close the session: that would release the claim before
        the tracking position is recorded.
        """
        if self._current.get() is not None:
            msg = (
                "a follower processes each notification in a transaction of its own, but "
                "this thread is already in a biomero_tracking transaction"
            )
            raise ProgrammingError(msg)
        if self.scoped_session is not None:
            session = self._scoped_thread_session()
            if session.in_transaction():
                self._commit(session)
            transaction = _Transaction(session, commit=True, owned=False)
        else:
            assert self.session_maker is not None
            session = self.session_maker()
            transaction = _Transaction(session, commit=True, owned=True)
        token = self._current.set(transaction)
        try:
            try:
                yield session
            except BaseException:
                _rollback_quietly(session)
                raise
            self._commit(session)
        finally:
            self._current.reset(token)
            if transaction.owned:
                session.close()

    def _scoped_thread_session(self) -> Session:
        """This thread's session of the application's scoped session."""
        scoped = self.scoped_session
        registry = getattr(scoped, "registry", None)
        if registry is not None:
            return registry()
        return scoped() if callable(scoped) else scoped

    def run(self, statement: Any, params: dict[str, Any]) -> list[Any]:
        """Runs one statement and returns its rows: in this thread's transaction on this
        datastore if there is one, else in the scoped session, else as a transaction of
        its own (autocommit: one round trip, the extension's functions being atomic)."""
        current = self._current.get()
        if current is not None:
            return list(self.execute(current.session, statement, params))
        if self.scoped_session is not None:
            with self.transaction(commit=True) as session:
                return list(self.execute(session, statement, params))
        try:
            with self._autocommit.connect() as connection:
                return list(connection.execute(statement, params))
        except sqlalchemy.exc.DBAPIError as error:
            raise persistence_error(error) from error

    def execute(self, session: Session, statement: Any, params: dict[str, Any]) -> Any:
        """Runs one statement, translating database errors into the library's."""
        try:
            return session.execute(statement, params)
        except sqlalchemy.exc.DBAPIError as error:
            raise persistence_error(error) from error

    @staticmethod
    def _commit(session: Session) -> None:
        try:
            session.commit()
        except sqlalchemy.exc.DBAPIError as error:
            _rollback_quietly(session)
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

    def raw_connection_factory(self) -> Callable[[], Any]:
        return self.engine.raw_connection

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()


def _is_database_error(error: BaseException) -> bool:
    if isinstance(error, sqlalchemy.exc.DBAPIError):
        return True
    cause = error.__cause__
    return isinstance(error, PersistenceError) and isinstance(cause, sqlalchemy.exc.DBAPIError)


def _rollback_quietly(session: Session) -> None:
    try:
        session.rollback()
    except sqlalchemy.exc.SQLAlchemyError:
        pass
