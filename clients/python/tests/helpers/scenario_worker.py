"""One OS process of the scenario, shaped like a BIOMERO SlurmClient.

    python scenario_worker.py STACK SQLALCHEMY_URL PROCESS_INDEX WORKFLOWS

It builds its own system (WorkflowTracker leading the four views, run by a
SingleThreadedRunner) on a scoped session (on SQLALCHEMY_URL alone for ``biomero-url``),
prints ``ready``, waits for a line on standard input, then runs WORKFLOWS workflows of 11
commands each, and prints one JSON line with what it did. Commands are not retried: an
exception is counted and the session rolled back.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from commands import Commands, wait_for_go  # noqa: E402 - after the path


def main() -> None:
    stack, url, index_text, workflows_text = sys.argv[1:5]
    index, workflows = int(index_text), int(workflows_text)
    os.environ["SCENARIO_STACK"] = stack
    os.environ["PERSISTENCE_MODULE"] = (
        "eventsourcing_sqlalchemy" if stack == "stock" else "biomero_tracking"
    )
    os.environ["SQLALCHEMY_URL"] = url
    if stack != "biomero-url":
        os.environ["SQLALCHEMY_SCOPED_SESSION_TOPIC"] = "scenario_views:get_scoped_session"

    import scenario_views
    from eventsourcing.system import SingleThreadedRunner, System
    from scenario_domain import WorkflowTracker, task_id, workflow_id
    from sqlalchemy import create_engine
    from sqlalchemy.orm import scoped_session, sessionmaker

    engine = create_engine(url, pool_size=2)
    session = scoped_session(sessionmaker(bind=engine, autoflush=True))
    scenario_views.SESSION = session

    system = System(pipes=[[WorkflowTracker, view] for view in scenario_views.FOLLOWERS])
    runner: SingleThreadedRunner[Any] = SingleThreadedRunner(system)
    runner.start()
    tracker = runner.get(WorkflowTracker)
    if stack != "biomero-url":  # with a URL every save commits by itself
        tracker.commit = session.commit  # what BIOMERO's EngineManager.commit() does

    wait_for_go()

    def roll_back() -> None:
        try:
            session.rollback()
        except Exception:  # noqa: BLE001
            session.remove()

    command = Commands(tracker, after_error=roll_back)

    started = time.monotonic()
    workflow_ids: list[str] = []
    for number in range(workflows):
        user, group = 100 + index, 10 + number % 3
        fails = number % 4 == 3
        job_id = 1000 * (index + 1) + number
        # Ids follow from names, so a command that raised does not stop the workflow.
        name, task_name = f"wf-{index}-{number}", f"task-{number % 2}"
        workflow, task = workflow_id(name), task_id(workflow_id(name), task_name)
        workflow_ids.append(str(workflow))
        command("initiate_workflow", name, "scenario", user, group)
        command(
            "add_task_to_workflow",
            workflow,
            task_name,
            "1.0",
            {"images": [index, number]},
            {"threshold": number},
        )
        command("start_workflow", workflow)
        command("start_task", task)
        command("add_job_id", task, job_id)
        command("update_task_status", task, "RUNNING")
        command("update_task_progress", task, "50%")
        command(
            "add_result",
            task,
            {"command": "sbatch", "env": {}, "stdout": f"job {job_id}", "stderr": ""},
        )
        command("update_task_status", task, "FAILED" if fails else "COMPLETED")
        if fails:
            command("fail_task", task, "exit code 1")
            command("fail_workflow", workflow, "task failed")
        else:
            command("complete_task", task, "ok")
            command("complete_workflow", workflow)
    elapsed = time.monotonic() - started
    runner.stop()
    session.remove()
    engine.dispose()
    print(
        json.dumps(
            {
                "index": index,
                "pid": os.getpid(),
                "commands": command.count,
                "succeeded": command.succeeded,
                "errors": command.errors,
                "workflow_ids": workflow_ids,
                "seconds": round(elapsed, 2),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
