"""The scenario's followers: BIOMERO's four read-model builders, with their state in the
database.

Each follower writes one of BIOMERO's read-model tables and keeps what it needs to fill it
(which user and group a workflow belongs to, which workflow a task is in, ...) in tables
of its own, read back inside the transaction that processes the notification: nothing is
kept in process memory, so whichever process wins a notification has the whole state, and
notifications another process processed need no replay here (``replay_processed_elsewhere``
is off: a replay would only cost a rolled-back transaction).
Every processing also appends an audit row (follower, notification id, process id), which
is how the test counts how often each notification was processed. Read-model inserts are
idempotent (ON CONFLICT DO NOTHING), as defensive view code usually is, so that on the
stock stack a notification processed twice shows in the audit rather than as a follower
stuck on a duplicate key.

``SCENARIO_STACK`` picks the stack when this module is imported:

* ``biomero``: followers derive from ``biomero_tracking.ProcessApplication`` and policies
  leave committing to it;
* ``biomero-url``: the same from ``SQLALCHEMY_URL`` without a scoped session: policies
  write with the follower's ``processing_session``;
* ``stock``: followers derive from ``eventsourcing.system.ProcessApplication`` and policies
  commit the scoped session, as BIOMERO's policies do today.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from eventsourcing.system import ProcessApplication as LibraryProcessApplication
from scenario_domain import Task, WorkflowRun
from sqlalchemy import text
from sqlalchemy.orm import Session, scoped_session

import biomero_tracking

STACK = os.environ.get("SCENARIO_STACK", "biomero")
COMMIT_IN_POLICY = STACK == "stock"
Base: Any = LibraryProcessApplication if STACK == "stock" else biomero_tracking.ProcessApplication

#: Set by the process before it builds the system.
SESSION: scoped_session[Session] | None = None


def get_scoped_session() -> scoped_session[Session]:
    """The topic of this function is SQLALCHEMY_SCOPED_SESSION_TOPIC."""
    assert SESSION is not None
    return SESSION


READ_MODEL_DDL = """
CREATE TABLE biomero_job_view (
    slurm_job_id integer PRIMARY KEY, "user" integer NOT NULL, "group" integer NOT NULL,
    task_id uuid);
CREATE TABLE biomero_job_progress_view (
    slurm_job_id integer PRIMARY KEY, status text NOT NULL, progress text);
CREATE TABLE biomero_workflow_progress_view (
    workflow_id uuid PRIMARY KEY, status text, progress text, "user" integer,
    "group" integer, name text, task text, start_time timestamptz NOT NULL);
CREATE TABLE biomero_task_execution (
    task_id uuid PRIMARY KEY, task_name text NOT NULL, task_version text, user_id integer,
    group_id integer, status text NOT NULL, start_time timestamptz NOT NULL,
    end_time timestamptz, error_type text);
CREATE TABLE scenario_ja_workflow (workflow_id uuid PRIMARY KEY, "user" integer, "group" integer);
CREATE TABLE scenario_ja_task (task_id uuid PRIMARY KEY, workflow_id uuid NOT NULL);
CREATE TABLE scenario_jp_task (task_id uuid PRIMARY KEY, slurm_job_id integer NOT NULL);
CREATE TABLE scenario_wp_task (
    task_id uuid PRIMARY KEY, workflow_id uuid NOT NULL, task_name text NOT NULL);
CREATE TABLE scenario_wa_workflow (workflow_id uuid PRIMARY KEY, "user" integer, "group" integer);
CREATE TABLE scenario_processed (
    follower text NOT NULL, notification_id bigint NOT NULL, pid integer NOT NULL,
    topic text NOT NULL);
"""

Handler = Callable[[Session, Any], None]


class View(Base):  # type: ignore[misc,valid-type]
    """Common policy: audit, dispatch on the event class, and (stock only) commit."""

    replay_processed_elsewhere = False  # the state is in the database
    handlers: dict[type, Handler] = {}

    def policy(self, domain_event: Any, processing_event: Any) -> None:
        session = self.processing_session if STACK == "biomero-url" else get_scoped_session()
        tracking = processing_event.tracking
        session.execute(
            text(
                "INSERT INTO scenario_processed (follower, notification_id, pid, topic) "
                "VALUES (:follower, :notification_id, :pid, :topic)"
            ),
            {
                "follower": self.name,
                "notification_id": tracking.notification_id,
                "pid": os.getpid(),
                "topic": type(domain_event).__qualname__,
            },
        )
        handler = self.handlers.get(type(domain_event))
        if handler is not None:
            handler(session, domain_event)
        if COMMIT_IN_POLICY:
            session.commit()


def _run(session: Session, sql: str, **params: Any) -> Any:
    return session.execute(text(sql), params)


# --- JobAccounting -> biomero_job_view -------------------------------------------------


def _ja_workflow_initiated(session: Session, e: Any) -> None:
    _run(
        session,
        'INSERT INTO scenario_ja_workflow (workflow_id, "user", "group") VALUES (:w, :u, :g) '
        "ON CONFLICT DO NOTHING",
        w=e.originator_id,
        u=e.user,
        g=e.group,
    )


def _ja_task_added(session: Session, e: Any) -> None:
    _run(
        session,
        "INSERT INTO scenario_ja_task (task_id, workflow_id) VALUES (:t, :w) "
        "ON CONFLICT DO NOTHING",
        t=e.task_id,
        w=e.originator_id,
    )


def _ja_job_id_added(session: Session, e: Any) -> None:
    owner = _run(
        session,
        'SELECT w."user", w."group" FROM scenario_ja_task t '
        "JOIN scenario_ja_workflow w USING (workflow_id) WHERE t.task_id = :t",
        t=e.originator_id,
    ).one_or_none()
    if owner is None:
        # BIOMERO logs "task not found" and moves on; the test counts the missing row.
        return
    _run(
        session,
        'INSERT INTO biomero_job_view (slurm_job_id, "user", "group", task_id) '
        "VALUES (:j, :u, :g, :t) ON CONFLICT DO NOTHING",
        j=e.job_id,
        u=owner[0],
        g=owner[1],
        t=e.originator_id,
    )


class JobAccounting(View):
    handlers = {
        WorkflowRun.WorkflowInitiated: _ja_workflow_initiated,
        WorkflowRun.TaskAdded: _ja_task_added,
        Task.JobIdAdded: _ja_job_id_added,
    }


# --- JobProgress -> biomero_job_progress_view ------------------------------------------


def _jp_job_id_added(session: Session, e: Any) -> None:
    _run(
        session,
        "INSERT INTO scenario_jp_task (task_id, slurm_job_id) VALUES (:t, :j) "
        "ON CONFLICT DO NOTHING",
        t=e.originator_id,
        j=e.job_id,
    )
    _run(
        session,
        "INSERT INTO biomero_job_progress_view (slurm_job_id, status) VALUES (:j, 'PENDING') "
        "ON CONFLICT DO NOTHING",
        j=e.job_id,
    )


def _jp_status_updated(session: Session, e: Any) -> None:
    _run(
        session,
        "UPDATE biomero_job_progress_view SET status = :s WHERE slurm_job_id = "
        "(SELECT slurm_job_id FROM scenario_jp_task WHERE task_id = :t)",
        s=e.status,
        t=e.originator_id,
    )


def _jp_progress_updated(session: Session, e: Any) -> None:
    _run(
        session,
        "UPDATE biomero_job_progress_view SET progress = :p WHERE slurm_job_id = "
        "(SELECT slurm_job_id FROM scenario_jp_task WHERE task_id = :t)",
        p=e.progress,
        t=e.originator_id,
    )


class JobProgress(View):
    handlers = {
        Task.JobIdAdded: _jp_job_id_added,
        Task.StatusUpdated: _jp_status_updated,
        Task.ProgressUpdated: _jp_progress_updated,
    }


# --- WorkflowProgress -> biomero_workflow_progress_view --------------------------------


def _wp_workflow_initiated(session: Session, e: Any) -> None:
    _run(
        session,
        "INSERT INTO biomero_workflow_progress_view "
        '(workflow_id, status, progress, "user", "group", name, task, start_time) '
        "VALUES (:w, 'INITIALIZING', '0%', :u, :g, :n, NULL, :ts) ON CONFLICT DO NOTHING",
        w=e.originator_id,
        u=e.user,
        g=e.group,
        n=e.name,
        ts=e.timestamp,
    )


def _wp_task_created(session: Session, e: Any) -> None:
    _run(
        session,
        "INSERT INTO scenario_wp_task (task_id, workflow_id, task_name) VALUES (:t, :w, :n) "
        "ON CONFLICT DO NOTHING",
        t=e.originator_id,
        w=e.workflow_id,
        n=e.task_name,
    )


def _wp_task_added(session: Session, e: Any) -> None:
    _run(
        session,
        "UPDATE biomero_workflow_progress_view v SET task = t.task_name "
        "FROM scenario_wp_task t WHERE t.task_id = :t AND v.workflow_id = :w",
        t=e.task_id,
        w=e.originator_id,
    )


def _wp_status_updated(session: Session, e: Any) -> None:
    _run(
        session,
        "UPDATE biomero_workflow_progress_view v SET status = 'JOB_' || :s, progress = '50%' "
        "FROM scenario_wp_task t WHERE t.task_id = :t AND v.workflow_id = t.workflow_id",
        s=e.status,
        t=e.originator_id,
    )


def _wp_progress_updated(session: Session, e: Any) -> None:
    # Task progress p% maps into the workflow's 50%..90% band.
    task_progress = int(e.progress.rstrip("%"))
    _run(
        session,
        "UPDATE biomero_workflow_progress_view v SET progress = :p "
        "FROM scenario_wp_task t WHERE t.task_id = :t AND v.workflow_id = t.workflow_id",
        p=f"{50 + task_progress * 40 // 100}%",
        t=e.originator_id,
    )


def _wp_workflow_completed(session: Session, e: Any) -> None:
    _run(
        session,
        "UPDATE biomero_workflow_progress_view SET status = 'DONE', progress = '100%' "
        "WHERE workflow_id = :w",
        w=e.originator_id,
    )


def _wp_workflow_failed(session: Session, e: Any) -> None:
    _run(
        session,
        "UPDATE biomero_workflow_progress_view SET status = 'FAILED' WHERE workflow_id = :w",
        w=e.originator_id,
    )


class WorkflowProgress(View):
    handlers = {
        WorkflowRun.WorkflowInitiated: _wp_workflow_initiated,
        Task.TaskCreated: _wp_task_created,
        WorkflowRun.TaskAdded: _wp_task_added,
        Task.StatusUpdated: _wp_status_updated,
        Task.ProgressUpdated: _wp_progress_updated,
        WorkflowRun.WorkflowCompleted: _wp_workflow_completed,
        WorkflowRun.WorkflowFailed: _wp_workflow_failed,
    }


# --- WorkflowAnalytics -> biomero_task_execution ---------------------------------------


def _wa_workflow_initiated(session: Session, e: Any) -> None:
    _run(
        session,
        'INSERT INTO scenario_wa_workflow (workflow_id, "user", "group") VALUES (:w, :u, :g) '
        "ON CONFLICT DO NOTHING",
        w=e.originator_id,
        u=e.user,
        g=e.group,
    )


def _wa_task_created(session: Session, e: Any) -> None:
    _run(
        session,
        "INSERT INTO biomero_task_execution (task_id, task_name, task_version, user_id, "
        "group_id, status, start_time) "
        'SELECT :t, :n, :v, w."user", w."group", \'CREATED\', :ts '
        "FROM scenario_wa_workflow w WHERE w.workflow_id = :w ON CONFLICT DO NOTHING",
        t=e.originator_id,
        n=e.task_name,
        v=e.task_version,
        ts=e.timestamp,
        w=e.workflow_id,
    )


def _wa_set_status(status: str | None, *, ended: bool = False, error: bool = False) -> Handler:
    def handler(session: Session, e: Any) -> None:
        _run(
            session,
            "UPDATE biomero_task_execution SET status = coalesce(:s, status), "
            "end_time = CASE WHEN :ended THEN :ts ELSE end_time END, "
            "error_type = CASE WHEN :error THEN :message ELSE error_type END "
            "WHERE task_id = :t",
            s=status if status is not None else getattr(e, "status", None),
            ended=ended,
            ts=e.timestamp,
            error=error,
            message=getattr(e, "error_message", None),
            t=e.originator_id,
        )

    return handler


class WorkflowAnalytics(View):
    handlers = {
        WorkflowRun.WorkflowInitiated: _wa_workflow_initiated,
        Task.TaskCreated: _wa_task_created,
        Task.TaskStarted: _wa_set_status("RUNNING"),
        Task.StatusUpdated: _wa_set_status(None),
        Task.TaskCompleted: _wa_set_status("COMPLETED", ended=True),
        Task.TaskFailed: _wa_set_status("FAILED", ended=True, error=True),
    }


FOLLOWERS = (JobAccounting, JobProgress, WorkflowProgress, WorkflowAnalytics)
