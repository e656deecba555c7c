"""BIOMERO's own unit tests, from its source distribution (scripts/setup.sh fetches the
pinned sdist), on PostgreSQL with a fresh database per test: on the module with the shipped
patch, and, as the control, on the stock stack (eventsourcing-sqlalchemy, BIOMERO as
released). The module may fail no test that the stock stack passes: the failures both
share are listed below with their cause, and every other test must pass on both."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import support
from biomero_patch import RELEASES, biomero_copy, release_site

PLUGIN_DIRECTORY = Path(__file__).parent / "helpers"
PATCHED = ("biomero/slurm_client.py", "biomero/views.py")
#: What the harness changes in BIOMERO's tests: its fixtures' SQLite URL and module.
REWRITES = {
    'os.environ["SQLALCHEMY_URL"] = "sqlite:///:memory:"': (
        'os.environ["SQLALCHEMY_URL"] = os.environ["BIOMERO_SUITE_URL"]'
    ),
    'os.environ["PERSISTENCE_MODULE"] = "eventsourcing_sqlalchemy"': (
        'os.environ["PERSISTENCE_MODULE"] = os.environ["BIOMERO_SUITE_PERSISTENCE_MODULE"]'
    ),
}
#: BIOMERO 2.8.3's tests that fail on PostgreSQL whatever the stack, and why.
SHARED_FAILURES_2_8 = {
    "test_eventsourcing::test_job_progress_update_view_table_failed": (
        "expects SQLite's error text 'NOT NULL constraint failed'; PostgreSQL raises the same "
        "NotNullViolation in its own words"
    ),
    "test_eventsourcing::test_wfanalytics_get_task_failures_with_filters": (
        "expects the error types in insertion order from a query without ORDER BY"
    ),
    "test_eventsourcing::test_wfanalytics_get_task_usage_over_time_with_filters": (
        "expects SQLite's func.date() to return text keys; PostgreSQL returns dates"
    ),
    "test_slurm_client::test_from_config": (
        "expects the SQLite URL its fixture sets, which the harness points at PostgreSQL"
    ),
    "test_slurm_client::test_init_invalid_workflow_repo": (
        "needs the internet (github.com): this machine has none"
    ),
}
#: BIOMERO 2.9.0b15's: the same five.
SHARED_FAILURES_2_9 = SHARED_FAILURES_2_8
SHARED_FAILURES = {"2.8.3": SHARED_FAILURES_2_8, "2.9.0b15": SHARED_FAILURES_2_9}
TIMEOUT = 900


def _suite_copy(directory: Path, release: str) -> Path:
    """BIOMERO's tests, pointed at the harness's database and module, beside the sdist's
    resources (some tests read them relative to the sdist's root, their working directory)."""
    tests = directory / "tests"
    sdist = Path(sys.prefix) / f"biomero-{release}"
    shutil.copytree(sdist / "tests", tests)
    shutil.copytree(sdist / "resources", directory / "resources")
    applied = dict.fromkeys(REWRITES, 0)
    for source in (tests / "unit").glob("test_*.py"):
        text = source.read_text(encoding="utf-8")
        for old, new in REWRITES.items():
            applied[old] += text.count(old)
            text = text.replace(old, new)
        source.write_text(text, encoding="utf-8")
    assert all(applied.values()), f"BIOMERO's fixtures changed: {applied}"
    return tests / "unit"


def _run_suite(
    tests: Path, site: Path, module: str, template: str, report: Path
) -> dict[str, set[str]]:
    path = [str(site), str(PLUGIN_DIRECTORY)]
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "biomero_suite_plugin",
            "-p",
            "no:cacheprovider",
            "-q",
            "-o",
            "addopts=",
            f"--junitxml={report}",
            str(tests),
        ],
        cwd=tests.parent.parent,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(path),
            "BIOMERO_SUITE_ADMIN_URL": support.libpq_url("postgres"),
            "BIOMERO_SUITE_TEMPLATE": template,
            "BIOMERO_SUITE_PERSISTENCE_MODULE": module,
        },
    )
    assert report.exists(), completed.stdout[-3000:] + completed.stderr[-3000:]
    outcome: dict[str, set[str]] = {"passed": set(), "failed": set(), "skipped": set()}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        kinds = {child.tag for child in case}
        if kinds & {"failure", "error"}:
            outcome["failed"].add(name)
        elif "skipped" in kinds:
            outcome["skipped"].add(name)
        else:
            outcome["passed"].add(name)
    print(completed.stdout[-2000:])
    return outcome


@pytest.fixture(scope="module")
def templates() -> dict[str, str]:
    """Template databases for the two stacks: with the extension, and without."""
    names = {
        "biomero_tracking": support.create_database("biomero_suite_module", extension=True),
        "eventsourcing_sqlalchemy": support.create_database("biomero_suite_stock", extension=False),
    }
    yield names
    for name in names.values():
        support.drop_database(name)


@pytest.mark.parametrize("release", RELEASES)
def test_biomero_s_own_suite_passes_on_the_module_wherever_it_passes_on_stock(
    tmp_path: Path, templates: dict[str, str], release: str
) -> None:
    tests = _suite_copy(tmp_path / "suite", release)
    site = biomero_copy(tmp_path / "patched", PATCHED, release)
    shared = SHARED_FAILURES[release]
    stock = _run_suite(
        tests,
        release_site(release),
        "eventsourcing_sqlalchemy",
        templates["eventsourcing_sqlalchemy"],
        tmp_path / "stock.xml",
    )
    module = _run_suite(
        tests, site, "biomero_tracking", templates["biomero_tracking"], tmp_path / "module.xml"
    )
    for label, outcome in (("stock", stock), ("module", module)):
        print(
            f"BIOMERO {release}'s unit tests on PostgreSQL, {label}: "
            f"{len(outcome['passed'])} passed, {len(outcome['failed'])} failed, "
            f"{len(outcome['skipped'])} skipped: {sorted(outcome['failed'])}"
        )
    for name, cause in sorted(shared.items()):
        print(f"    fails on both stacks: {name}: {cause}")
    assert len(stock["passed"]) > 250
    assert stock["failed"] == set(shared), "the stock stack's failures changed"
    assert module["failed"] == set(shared), "failures caused by the module"
    assert module["passed"] == stock["passed"]
    assert module["skipped"] == stock["skipped"] == set()
