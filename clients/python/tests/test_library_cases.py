"""The recorder and application test cases shipped inside the eventsourcing wheel, run
against a real PostgreSQL server with the biomero_tracking extension.

The library's modules are imported as modules, not their classes by name: pytest collects
every TestCase class in a test module's namespace, the abstract bases included."""

from __future__ import annotations

import os
from typing import ClassVar

import support
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    ProcessRecorder,
    TrackingRecorder,
)
from eventsourcing.tests import application as library_application
from eventsourcing.tests import persistence as library_persistence
from eventsourcing.utils import Environment

from biomero_tracking import (
    BiomeroAggregateRecorder,
    BiomeroApplicationRecorder,
    BiomeroFactory,
    BiomeroProcessRecorder,
    BiomeroTrackingRecorder,
    Datastore,
)


class _SharedDatastore:
    """One engine per test class; every test gets an application of its own, so its
    notification ids start at 1 without deleting anything."""

    driver: ClassVar[str | None] = None
    datastore: ClassVar[Datastore]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()  # type: ignore[misc]
        cls.datastore = Datastore(url=support.url(driver=cls.driver), pool_size=12)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.datastore.close()
        super().tearDownClass()  # type: ignore[misc]

    def new_application_name(self) -> str:
        return support.unique_name(type(self).__name__)


class TestAggregateRecorder(_SharedDatastore, library_persistence.AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        return BiomeroAggregateRecorder(
            self.datastore, application_name=self.new_application_name()
        )


class TestApplicationRecorder(_SharedDatastore, library_persistence.ApplicationRecorderTestCase):
    def create_recorder(self) -> ApplicationRecorder:
        return BiomeroApplicationRecorder(
            self.datastore, application_name=self.new_application_name()
        )

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


class TestApplicationRecorderWithPsycopg3(TestApplicationRecorder):
    """The same cases through SQLAlchemy's psycopg (v3) driver."""

    driver = "psycopg"


class TestTrackingRecorder(_SharedDatastore, library_persistence.TrackingRecorderTestCase):
    def create_recorder(self) -> TrackingRecorder:
        return BiomeroTrackingRecorder(self.datastore, application_name=self.new_application_name())


class TestProcessRecorder(_SharedDatastore, library_persistence.ProcessRecorderTestCase):
    def create_recorder(self) -> ProcessRecorder:
        return BiomeroProcessRecorder(self.datastore, application_name=self.new_application_name())


class TestNonInterleavingNotificationIDs(
    _SharedDatastore, library_persistence.NonInterleavingNotificationIDsBaseCase
):
    def create_recorder(self) -> ApplicationRecorder:
        return BiomeroApplicationRecorder(
            self.datastore, application_name=self.new_application_name()
        )


class CustomTrackingRecorder(BiomeroTrackingRecorder):
    pass


class TestInfrastructureFactory(library_persistence.InfrastructureFactoryTestCase[BiomeroFactory]):
    def setUp(self) -> None:
        self.env = Environment(
            "InfrastructureFactoryTest",
            {"PERSISTENCE_MODULE": "biomero_tracking", "SQLALCHEMY_URL": support.url()},
        )
        super().setUp()

    def expected_factory_class(self) -> type[BiomeroFactory]:
        return BiomeroFactory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return BiomeroAggregateRecorder

    def expected_application_recorder_class(self) -> type[ApplicationRecorder]:
        return BiomeroApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[TrackingRecorder]:
        return BiomeroTrackingRecorder

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        return CustomTrackingRecorder

    def expected_process_recorder_class(self) -> type[ProcessRecorder]:
        return BiomeroProcessRecorder


class _ApplicationEnvironment:
    """Applications read PERSISTENCE_MODULE and SQLALCHEMY_URL from os.environ; their
    names are fixed by the test cases, so their rows are removed before each test."""

    names: ClassVar[tuple[str, ...]] = ()
    _saved: dict[str, str | None]

    def setUp(self) -> None:
        self._saved = {key: os.environ.get(key) for key in ("PERSISTENCE_MODULE", "SQLALCHEMY_URL")}
        os.environ["PERSISTENCE_MODULE"] = "biomero_tracking"
        os.environ["SQLALCHEMY_URL"] = support.url()
        support.delete_applications(*self.names)
        super().setUp()  # type: ignore[misc]

    def tearDown(self) -> None:
        super().tearDown()  # type: ignore[misc]
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class TestExampleApplication(
    _ApplicationEnvironment, library_application.ExampleApplicationTestCase
):
    names = ("BankAccounts", "BankAccounts.snapshots")
    expected_factory_topic = "biomero_tracking.factory:BiomeroFactory"


class TestApplication(_ApplicationEnvironment, library_application.ApplicationTestCase):
    names = ("Application", "Application.snapshots")
