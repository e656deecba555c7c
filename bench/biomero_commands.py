"""Latency of BIOMERO's own workflow commands, per command, with 1, 4 and 8 OS processes on
one database: on the module with the patch (replay on, the correct configuration), on the
module without replay (a baseline: in-memory view state incomplete) and on stock
eventsourcing-sqlalchemy (its retries included, its race not prevented).

Run through scripts/bench-biomero.sh, which starts a throwaway cluster and passes its URL in
BIOMERO_TEST_URL. Each process runs the workers of the Python tests
(clients/python/tests/helpers/biomero_worker.py: 11 commands per workflow, each command's
wall time measured around BIOMERO's call, so the followers' processing and replay in the
same call are included). Every round runs the three variants in alternating order, each on
a fresh database; the percentiles pool every command of every round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "clients" / "python" / "tests" / "helpers"))

import support  # noqa: E402
from biomero_patch import biomero_copy, release_site  # noqa: E402
from biomero_runs import run_processes  # noqa: E402

PATCHED = ("biomero/slurm_client.py", "biomero/views.py")
VARIANTS = ("replay", "no-replay", "stock")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(variant: str, site: dict[str, Path], processes: int, workflows: int) -> dict[str, Any]:
    stack = "eventsourcing_sqlalchemy" if variant == "stock" else "biomero_tracking"
    env = {"BIOMERO_WORKER_NO_REPLAY": "1"} if variant == "no-replay" else {}
    with support.scratch_database(
        "bench_commands", extension=stack != "eventsourcing_sqlalchemy"
    ) as db:
        with support.admin(db) as cursor:
            cursor.execute(
                "CREATE TABLE biomero_test_processed (follower text NOT NULL, "
                "notification_id bigint NOT NULL, pid integer NOT NULL)"
            )
        results = run_processes(
            site["stock" if variant == "stock" else "patched"],
            stack,
            support.url(db),
            processes=processes,
            workflows=workflows,
            **env,
        )
        with support.admin(db) as cursor:
            cursor.execute(
                "SELECT count(*) - count(DISTINCT (follower, notification_id)) "
                "FROM biomero_test_processed"
            )
            duplicates = int(cursor.fetchone()[0])
    return {
        "seconds": [s for r in results for s in r["command_seconds"]],
        "errors": sum(len(r["errors"]) for r in results),
        "duplicates": duplicates,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workflows", type=int, default=4, help="per process")
    parser.add_argument("--processes", default="1,4,8")
    parser.add_argument("--release", default="2.8.3")
    parser.add_argument("--out", type=Path)
    arguments = parser.parse_args()
    site = {
        "stock": release_site(arguments.release),
        "patched": biomero_copy(
            Path(tempfile.mkdtemp(prefix="bench-biomero-")), PATCHED, arguments.release
        ),
    }
    report: dict[str, Any] = {"release": arguments.release, "points": []}
    for processes in (int(p) for p in arguments.processes.split(",")):
        pooled: dict[str, dict[str, Any]] = {
            v: {"seconds": [], "errors": 0, "duplicates": 0} for v in VARIANTS
        }
        for number in range(arguments.rounds):
            order = VARIANTS if number % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                figures = run(variant, site, processes, arguments.workflows)
                pooled[variant]["seconds"] += figures["seconds"]
                pooled[variant]["errors"] += figures["errors"]
                pooled[variant]["duplicates"] += figures["duplicates"]
        point: dict[str, Any] = {"processes": processes}
        for variant, figures in pooled.items():
            seconds = figures["seconds"]
            point[variant] = {
                "commands": len(seconds),
                "p50_ms": round(1000 * statistics.median(seconds), 2),
                "p99_ms": round(1000 * percentile(seconds, 0.99), 2),
                "errors": figures["errors"],
                "duplicate_processings": figures["duplicates"],
            }
        for quantile in ("p50_ms", "p99_ms"):
            replay = point["replay"][quantile]
            point[f"replay/no-replay {quantile[:3]}"] = round(
                replay / point["no-replay"][quantile], 2
            )
            point[f"replay/stock {quantile[:3]}"] = round(replay / point["stock"][quantile], 2)
        report["points"].append(point)
        print(json.dumps(point), flush=True)
    if arguments.out:
        arguments.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
