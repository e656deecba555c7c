"""Copies of the installed BIOMERO with the shipped patch (or a part of it) applied by the
package's own applier, so that each run picks its variant by PYTHONPATH."""

from __future__ import annotations

import shutil
from pathlib import Path

from biomero_tracking.biomero_patch import apply
from biomero_tracking.biomero_patch import installed_biomero as _installed


def installed_biomero() -> Path:
    """The installed biomero package's directory (not imported here)."""
    return _installed().package


def biomero_copy(directory: Path, patched_files: tuple[str, ...]) -> Path:
    """A copy of the installed biomero package in ``directory`` (put it first on
    PYTHONPATH), with the shipped patch's changes to ``patched_files`` applied."""
    shutil.copytree(installed_biomero(), directory / "biomero")
    chosen = [f for f in _installed().patch() if f.path in patched_files]
    assert len(chosen) == len(patched_files), f"not in the patch: {patched_files}"
    apply(directory, chosen)
    return directory
