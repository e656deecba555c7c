"""The scenario's leader: a workflow tracker with BIOMERO's aggregates and events.

WorkflowRun and Task start at version 0 and carry the events BIOMERO records; the
tracker's commands save and then commit the application's scoped session, as BIOMERO's
commands do. Unlike BIOMERO, ids are derived from names (``workflow_id``, ``task_id``), so
that a process can go on with a workflow whose creating command raised after its events
were committed, and every process issues all of its commands on either stack.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event


def workflow_id(name: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"/scenario/workflows/{name}")


def task_id(workflow: UUID, task_name: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"/scenario/workflows/{workflow}/tasks/{task_name}")


class WorkflowRun(Aggregate):
    INITIAL_VERSION = 0

    @staticmethod
    def create_id(name: str, **_: Any) -> UUID:
        return workflow_id(name)

    class WorkflowInitiated(Aggregate.Created):
        name: str
        description: str
        user: int
        group: int

    @event(WorkflowInitiated)
    def __init__(self, name: str, description: str, user: int, group: int) -> None:
        self.name = name
        self.description = description
        self.user = user
        self.group = group
        self.tasks: list[UUID] = []
        self.state = "INITIALIZING"

    class TaskAdded(Aggregate.Event):
        task_id: UUID

    @event(TaskAdded)
    def add_task(self, task_id: UUID) -> None:
        self.tasks.append(task_id)

    class WorkflowStarted(Aggregate.Event):
        pass

    @event(WorkflowStarted)
    def start(self) -> None:
        self.state = "RUNNING"

    class WorkflowCompleted(Aggregate.Event):
        pass

    @event(WorkflowCompleted)
    def complete(self) -> None:
        self.state = "DONE"

    class WorkflowFailed(Aggregate.Event):
        error_message: str

    @event(WorkflowFailed)
    def fail(self, error_message: str) -> None:
        self.state = "FAILED"


class Task(Aggregate):
    INITIAL_VERSION = 0

    @staticmethod
    def create_id(workflow_id: UUID, task_name: str, **_: Any) -> UUID:
        return task_id(workflow_id, task_name)

    class TaskCreated(Aggregate.Created):
        workflow_id: UUID
        task_name: str
        task_version: str
        input_data: dict[str, Any]
        params: dict[str, Any]

    @event(TaskCreated)
    def __init__(
        self,
        workflow_id: UUID,
        task_name: str,
        task_version: str,
        input_data: dict[str, Any],
        params: dict[str, Any],
    ) -> None:
        self.workflow_id = workflow_id
        self.task_name = task_name
        self.task_version = task_version
        self.input_data = input_data
        self.params = params
        self.job_ids: list[int] = []
        self.results: list[dict[str, Any]] = []
        self.status: str | None = None
        self.progress: str | None = None
        self.result_message: str | None = None

    class JobIdAdded(Aggregate.Event):
        job_id: int

    @event(JobIdAdded)
    def add_job_id(self, job_id: int) -> None:
        self.job_ids.append(job_id)

    class StatusUpdated(Aggregate.Event):
        status: str

    @event(StatusUpdated)
    def update_status(self, status: str) -> None:
        self.status = status

    class ProgressUpdated(Aggregate.Event):
        progress: str

    @event(ProgressUpdated)
    def update_progress(self, progress: str) -> None:
        self.progress = progress

    class ResultAdded(Aggregate.Event):
        result: dict[str, Any]

    @event(ResultAdded)
    def add_result(self, result: dict[str, Any]) -> None:
        self.results.append(result)

    class TaskStarted(Aggregate.Event):
        pass

    @event(TaskStarted)
    def start(self) -> None:
        self.status = "STARTED"

    class TaskCompleted(Aggregate.Event):
        result: str

    @event(TaskCompleted)
    def complete(self, result: str) -> None:
        self.result_message = result

    class TaskFailed(Aggregate.Event):
        error_message: str

    @event(TaskFailed)
    def fail(self, error_message: str) -> None:
        self.result_message = error_message


class WorkflowTracker(Application):
    """One command per method; each saves and then commits (``commit`` is set by the
    process that runs it, to its scoped session's commit)."""

    commit: Callable[[], None] = staticmethod(lambda: None)

    def initiate_workflow(self, name: str, description: str, user: int, group: int) -> UUID:
        workflow = WorkflowRun(name, description, user, group)
        self.save(workflow)
        self.commit()
        return workflow.id

    def add_task_to_workflow(
        self,
        workflow_id: UUID,
        task_name: str,
        task_version: str,
        input_data: dict[str, Any],
        params: dict[str, Any],
    ) -> UUID:
        task = Task(workflow_id, task_name, task_version, input_data, params)
        self.save(task)
        self.commit()
        workflow: WorkflowRun = self.repository.get(workflow_id)
        workflow.add_task(task.id)
        self.save(workflow)
        self.commit()
        return task.id

    def start_workflow(self, workflow_id: UUID) -> None:
        self._change(workflow_id, "start")

    def complete_workflow(self, workflow_id: UUID) -> None:
        self._change(workflow_id, "complete")

    def fail_workflow(self, workflow_id: UUID, error_message: str) -> None:
        self._change(workflow_id, "fail", error_message)

    def start_task(self, task_id: UUID) -> None:
        self._change(task_id, "start")

    def add_job_id(self, task_id: UUID, job_id: int) -> None:
        self._change(task_id, "add_job_id", job_id)

    def update_task_status(self, task_id: UUID, status: str) -> None:
        self._change(task_id, "update_status", status)

    def update_task_progress(self, task_id: UUID, progress: str) -> None:
        self._change(task_id, "update_progress", progress)

    def add_result(self, task_id: UUID, result: dict[str, Any]) -> None:
        self._change(task_id, "add_result", result)

    def complete_task(self, task_id: UUID, result: str) -> None:
        self._change(task_id, "complete", result)

    def fail_task(self, task_id: UUID, error_message: str) -> None:
        self._change(task_id, "fail", error_message)

    def _change(self, aggregate_id: UUID, method: str, *args: Any) -> None:
        aggregate = self.repository.get(aggregate_id)
        getattr(aggregate, method)(*args)
        self.save(aggregate)
        self.commit()
