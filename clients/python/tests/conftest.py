"""Test configuration: a PostgreSQL with the biomero_tracking extension.

scripts/test-python.sh starts a throwaway cluster and passes its URL in BIOMERO_TEST_URL.
Without it, this starts one itself with scripts/cluster.sh (as root, like the script).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "helpers"))

REPOSITORY = Path(__file__).resolve().parents[3]
_own_cluster: str | None = None


def pytest_configure(config: object) -> None:
    global _own_cluster
    if os.environ.get("BIOMERO_TEST_URL"):
        return
    directory = f"/var/tmp/py-pytest-{os.getpid()}"
    url = subprocess.run(
        ["bash", str(REPOSITORY / "scripts" / "cluster.sh"), "start", directory],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    _own_cluster = directory
    os.environ["BIOMERO_TEST_URL"] = url


def pytest_unconfigure(config: object) -> None:
    if _own_cluster is not None:
        subprocess.run(
            ["bash", str(REPOSITORY / "scripts" / "cluster.sh"), "stop", _own_cluster],
            check=False,
        )


def pytest_terminal_summary(terminalreporter: object) -> None:
    import support

    if support.SCENARIO_FIGURES:
        terminalreporter.section("scenario figures")  # type: ignore[attr-defined]
        for line in support.SCENARIO_FIGURES:
            terminalreporter.write_line(line)  # type: ignore[attr-defined]
