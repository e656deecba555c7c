"""One OS process running BIOMERO's own analytics code, as a SlurmClient runs it.

    python biomero_worker.py STACK SQLALCHEMY_URL PROCESS_INDEX WORKFLOWS

STACK is ``biomero_tracking`` or ``eventsourcing_sqlalchemy`` (PERSISTENCE_MODULE); which
copy of BIOMERO is imported (patched or not) is PYTHONPATH's business. The process builds a
real ``SlurmClient`` (``config_only``: nothing connects to SLURM) and calls BIOMERO's own
``initialize_analytics_system()``: the System of WorkflowTracker and its four views,
``EngineManager.create_scoped_session()``, the SingleThreadedRunner, ``get_listeners()``.
With BIOMERO_WORKER_NO_REPLAY set, the module's followers do not replay (a baseline for the
command benchmark, not a correct BIOMERO). It prints ``ready``, waits for a line on
standard input, runs WORKFLOWS workflows through ``client.workflowTracker`` (11 commands
each: BIOMERO's own retries included, nothing added), and prints one JSON line with what it
did, each command's wall time included.

With WORKFLOWS = ``reference`` it runs no command: it brings the four views up to date from
the leader events already in the database, in this one process, and exits; with
``reference:N`` it does so from ``start=N``, as BIOMERO's rebuild passes it. With WORKFLOWS =
``reset`` it runs what ``SlurmClient(init_slurm=True)`` runs after validating the SLURM
setup: ``initialize_analytics_system(reset_tables=True)``, which drops the views' tables and
their followers' tracking tables, starts the system again and brings every view up to date
from ``_find_analytics_start_id()`` (the cutoff ``BIOMERO_REBUILD_START_TIME``, when set).

Every policy run is audited: a row in ``biomero_test_processed`` is written and committed
with ``EngineManager`` just before BIOMERO's policy runs. On the module that is inside the
processing transaction, so it commits exactly when the processing does (rolled back with a
replay or a failed processing); on the stock stack it commits at once, like the policy's
own writes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import Counter
from typing import Any

from commands import Commands, wait_for_go


class Collector(logging.Handler):
    """Counts the warnings and errors BIOMERO and biomero_tracking log."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def summary(self) -> dict[str, Any]:
        messages = [r.getMessage() for r in self.records]
        return {
            "unknown_workflow": sum("unknown workflow" in m for m in messages),
            "retries": sum(m.startswith("Database conflict on attempt") for m in messages),
            "unclaimed": [m.split("'")[1] for m in messages if "Logged once per follower" in m],
            "unclaimed_names_base": all(
                "biomero_tracking.ProcessApplication" in m
                for m in messages
                if "Logged once per follower" in m
            ),
            "replay_failures": sum("the replay of notification" in m for m in messages),
            "rebuild_start_unknown": sum(
                "Could not determine analytics rebuild" in m for m in messages
            ),
            "by_kind": Counter(m.splitlines()[0][:90] for m in messages).most_common(6),
        }


def analytics_client(url: str, *, reset: bool = False) -> Any:
    from biomero.slurm_client import SlurmClient

    if os.environ.get("BIOMERO_WORKER_NO_REPLAY"):
        # The benchmark's baseline: claimed processing without replaying into memory.
        import biomero_tracking

        biomero_tracking.ProcessApplication.replay_processed_elsewhere = False
    client = SlurmClient(config_only=True)
    client.track_workflows = True
    client.enable_job_accounting = True
    client.enable_job_progress = True
    client.enable_workflow_analytics = True
    client.sqlalchemy_url = url
    client.analytics_rebuild_start_time = os.environ.get("BIOMERO_REBUILD_START_TIME")
    client.initialize_analytics_system(reset_tables=reset)
    return client


def listeners(client: Any) -> list[Any]:
    """The four view followers the system runs. Not ``client.jobAccounting`` and the like:
    SlurmClient is an invoke config proxy, whose attributes hold shallow copies of what
    BIOMERO assigns, so an attribute set on one of them would not reach the runner's."""
    runner = client.workflowTracker.followers[0]  # the leader leads the runner
    names = ("JobAccounting", "JobProgress", "WorkflowProgress", "WorkflowAnalytics")
    return [runner.apps[name] for name in names]


def audit() -> None:
    """Wraps the four views' policies, in their classes: the runners BIOMERO starts again
    (a reset starts a second one) run the audited policy too."""
    from biomero.database import EngineManager
    from biomero.views import JobAccounting, JobProgress, WorkflowAnalytics, WorkflowProgress
    from sqlalchemy import text

    statement = text(
        "INSERT INTO biomero_test_processed (follower, notification_id, pid) "
        "VALUES (:follower, :notification_id, :pid)"
    )
    for view in (JobAccounting, JobProgress, WorkflowProgress, WorkflowAnalytics):
        policy = view.__dict__["policy"]

        def audited(
            self: Any, domain_event: Any, processing_event: Any, policy: Any = policy
        ) -> None:
            EngineManager.get_session().execute(
                statement,
                {
                    "follower": self.name,
                    "notification_id": processing_event.tracking.notification_id,
                    "pid": os.getpid(),
                },
            )
            # Committed before the policy runs, so that a rollback the policy makes of its
            # own writes (BIOMERO's views roll back an IntegrityError and go on) keeps it;
            # on this module that commit is a savepoint's release inside the processing
            # transaction, so the row still commits exactly when the processing does.
            EngineManager.commit()
            policy.__get__(self, type(self))(domain_event, processing_event)

        view.policy = audited


def main() -> None:
    stack, url, index_text, workflows_text = sys.argv[1:5]
    os.environ["PERSISTENCE_MODULE"] = stack
    os.environ["SQLALCHEMY_URL"] = url
    collector = Collector()
    logging.getLogger().addHandler(collector)

    import biomero
    from fabric import Result

    audit()
    client = analytics_client(url, reset=workflows_text == "reset")
    if workflows_text == "reset":
        print(json.dumps({"biomero": biomero.__file__, "logged": collector.summary()}))
        return
    if workflows_text.startswith("reference"):
        start = int(workflows_text.split(":")[1]) if ":" in workflows_text else None
        for listener in listeners(client):
            listener.pull_and_process("WorkflowTracker", start=start)
        print(json.dumps({"biomero": biomero.__file__, "logged": collector.summary()}))
        return
    index, workflows = int(index_text), int(workflows_text)
    tracker = client.workflowTracker

    wait_for_go()
    command = Commands(tracker, message_length=160)
    skipped = 0

    # Task names pick different branches of BIOMERO's WorkflowProgress status mapping.
    task_names = ("SLURM_Run_Workflow.py", "cellpose", "_SLURM_Image_Transfer.py", "stardist")
    started = time.monotonic()
    for number in range(workflows):
        user, group = 100 + index, 10 + number % 3
        fails = number % 4 == 3
        job_id = 1000 * (index + 1) + number
        workflow = command(
            "initiate_workflow", f"wf-{index}-{number}", "test workflow", user, group
        )
        task = None
        if workflow is not None:
            task = command(
                "add_task_to_workflow",
                workflow,
                task_names[number % len(task_names)],
                "1.0",
                {"images": [index, number]},
                {"threshold": number},
            )
        if task is None:
            skipped += 11 - (1 if workflow is None else 2)
            continue
        command("start_workflow", workflow)
        command("start_task", task)
        command("add_job_id", task, job_id)
        command("update_task_status", task, "RUNNING")
        command("update_task_progress", task, "50%")
        output = Result(connection=None, stdout=f"Submitted batch job {job_id}", command="sbatch")
        command("add_result", task, output)
        command("update_task_status", task, "FAILED" if fails else "COMPLETED")
        if fails:
            command("fail_task", task, "exit code 1")
            command("fail_workflow", workflow, "task failed")
        else:
            command("complete_task", task, "ok")
            command("complete_workflow", workflow)
    elapsed = time.monotonic() - started
    print(
        json.dumps(
            {
                "index": index,
                "pid": os.getpid(),
                "biomero": biomero.__file__,
                "commands": command.count,
                "skipped": skipped,
                "succeeded": command.succeeded,
                "errors": command.errors,
                "seconds": round(elapsed, 2),
                "command_seconds": command.seconds,
                "logged": collector.summary(),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
