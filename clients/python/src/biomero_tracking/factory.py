"""The infrastructure factory eventsourcing constructs for
``PERSISTENCE_MODULE=biomero_tracking``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import InfrastructureFactory, ProgrammingError
from eventsourcing.utils import resolve_topic, strtobool

from biomero_tracking.datastore import Datastore
from biomero_tracking.recorders import (
    BiomeroAggregateRecorder,
    BiomeroApplicationRecorder,
    BiomeroProcessRecorder,
    BiomeroTrackingRecorder,
)

if TYPE_CHECKING:
    from eventsourcing.persistence import (
        AggregateRecorder,
        ApplicationRecorder,
        ProcessRecorder,
    )
    from eventsourcing.utils import Environment


class BiomeroFactory(InfrastructureFactory[BiomeroTrackingRecorder]):
    """Reads the same variables as eventsourcing-sqlalchemy (each may be prefixed with
    the upper-cased application name, as eventsourcing does for every variable):

    ``SQLALCHEMY_URL``
        a PostgreSQL URL (``postgresql://`` with psycopg2, or ``postgresql+psycopg://``);
    ``SQLALCHEMY_SCOPED_SESSION_TOPIC``
        topic of a callable returning the application's scoped session (takes precedence);
    ``SQLALCHEMY_CONNECTION_CREATOR_TOPIC``, ``SQLALCHEMY_AUTOFLUSH``
        passed to SQLAlchemy as eventsourcing-sqlalchemy does;
    ``CREATE_TABLE``
        when true (the default) recorders check that the extension is installed.

    Refused at start, rather than ignored: ``SQLALCHEMY_SCHEMA`` (the rows live in the
    extension's tables, schema ``biomero``, kept apart by application name) and
    ``ORIGINATOR_ID_TYPE=text`` (the extension stores originator ids as uuid).

    Rows belong to the application named by the environment (the application class's
    ``name``); snapshots to ``<name>.snapshots``.
    """

    SQLALCHEMY_URL = "SQLALCHEMY_URL"
    SQLALCHEMY_SCOPED_SESSION_TOPIC = "SQLALCHEMY_SCOPED_SESSION_TOPIC"
    SQLALCHEMY_CONNECTION_CREATOR_TOPIC = "SQLALCHEMY_CONNECTION_CREATOR_TOPIC"
    SQLALCHEMY_AUTOFLUSH = "SQLALCHEMY_AUTOFLUSH"
    SQLALCHEMY_SCHEMA = "SQLALCHEMY_SCHEMA"
    ORIGINATOR_ID_TYPE = "ORIGINATOR_ID_TYPE"
    CREATE_TABLE = "CREATE_TABLE"

    #: Used when the environment names no application.
    DEFAULT_APPLICATION_NAME = "default"

    aggregate_recorder_class = BiomeroAggregateRecorder
    application_recorder_class = BiomeroApplicationRecorder
    tracking_recorder_class = BiomeroTrackingRecorder
    process_recorder_class = BiomeroProcessRecorder

    def __init__(self, env: Environment) -> None:
        super().__init__(env)
        self._refuse_unsupported_settings()
        scoped_session = None
        scoped_session_topic = self.env.get(self.SQLALCHEMY_SCOPED_SESSION_TOPIC)
        if scoped_session_topic:
            scoped_session = resolve_topic(scoped_session_topic)()
        engine_kwargs: dict[str, Any] = {}
        creator_topic = self.env.get(self.SQLALCHEMY_CONNECTION_CREATOR_TOPIC)
        if creator_topic:
            engine_kwargs["creator"] = resolve_topic(creator_topic)
        self.datastore = Datastore(
            url=self.env.get(self.SQLALCHEMY_URL),
            scoped_session=scoped_session,
            autoflush=strtobool(self.env.get(self.SQLALCHEMY_AUTOFLUSH) or "yes"),
            **engine_kwargs,
        )

    def _refuse_unsupported_settings(self) -> None:
        schema = self.env.get(self.SQLALCHEMY_SCHEMA)
        if schema:
            msg = (
                f"{self.SQLALCHEMY_SCHEMA}={schema!r} does not apply to biomero_tracking: "
                "every application's rows live in the extension's tables (schema "
                "biomero), kept apart by application name; unset it"
            )
            raise ProgrammingError(msg)
        id_type = self.env.get(self.ORIGINATOR_ID_TYPE)
        if id_type and id_type.lower() != "uuid":
            msg = (
                f"{self.ORIGINATOR_ID_TYPE}={id_type!r} is not supported: biomero_tracking "
                "stores originator ids as uuid"
            )
            raise ProgrammingError(msg)

    @property
    def application_name(self) -> str:
        return self.env.name or self.DEFAULT_APPLICATION_NAME

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        name = self.application_name
        if purpose != "events":
            name = f"{name}.{purpose}"
        recorder = type(self).aggregate_recorder_class(
            datastore=self.datastore, application_name=name
        )
        self._maybe_check(recorder)
        return recorder

    def application_recorder(self) -> ApplicationRecorder:
        recorder_class: type[BiomeroApplicationRecorder] = type(self).application_recorder_class
        topic = self.env.get(self.APPLICATION_RECORDER_TOPIC)
        if topic:
            recorder_class = resolve_topic(topic)
            assert issubclass(recorder_class, BiomeroApplicationRecorder)
        recorder = recorder_class(datastore=self.datastore, application_name=self.application_name)
        self._maybe_check(recorder)
        return recorder

    def tracking_recorder(
        self, tracking_recorder_class: type[BiomeroTrackingRecorder] | None = None
    ) -> BiomeroTrackingRecorder:
        if tracking_recorder_class is None:
            topic = self.env.get(self.TRACKING_RECORDER_TOPIC)
            if topic:
                tracking_recorder_class = resolve_topic(topic)
            else:
                tracking_recorder_class = type(self).tracking_recorder_class
        assert tracking_recorder_class is not None
        assert issubclass(tracking_recorder_class, BiomeroTrackingRecorder)
        recorder = tracking_recorder_class(
            datastore=self.datastore, application_name=self.application_name
        )
        self._maybe_check(recorder)
        return recorder

    def process_recorder(self) -> ProcessRecorder:
        recorder_class: type[BiomeroProcessRecorder] = type(self).process_recorder_class
        topic = self.env.get(self.PROCESS_RECORDER_TOPIC)
        if topic:
            recorder_class = resolve_topic(topic)
            assert issubclass(recorder_class, BiomeroProcessRecorder)
        # Process recorders serve followers; those derived from eventsourcing's own
        # ProcessApplication process without a claim (see BiomeroProcessRecorder).
        recorder = recorder_class(
            datastore=self.datastore,
            application_name=self.application_name,
            tolerate_recorded_positions=True,
        )
        self._maybe_check(recorder)
        return recorder

    def env_create_table(self) -> bool:
        return bool(strtobool(self.env.get(self.CREATE_TABLE) or "yes"))

    def _maybe_check(self, recorder: BiomeroAggregateRecorder | BiomeroTrackingRecorder) -> None:
        if self.env_create_table():
            recorder.create_table()

    def close(self) -> None:
        self.datastore.close()
