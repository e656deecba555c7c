"""The BIOMERO releases the tests run, and copies of them with the shipped patch (or a part
of it) applied by the package's own applier, so that each run picks its variant by
PYTHONPATH.

2.8.3 is installed in the venv; 2.9.0b15 and the biomero-schema it needs are in a directory
of their own (scripts/setup.sh), which the stock runs put first on PYTHONPATH and the copies
include whole, so that ``importlib.metadata`` names that release too.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from biomero_tracking.biomero_patch import InstalledBiomero, apply
from biomero_tracking.biomero_patch import installed_biomero as _installed

RELEASES = ("2.8.3", "2.9.0b15")
_SEPARATE = {"2.9.0b15": Path(sys.prefix) / "biomero-2.9.0b15-site"}


def installed_biomero() -> Path:
    """The installed (2.8.3) biomero package's directory (not imported here)."""
    return _installed().package


def release_site(release: str) -> Path:
    """The directory that gives a process the stock BIOMERO ``release`` when first on
    PYTHONPATH."""
    if release in _SEPARATE:
        site = _SEPARATE[release]
        assert (site / "biomero").is_dir(), f"BIOMERO {release} missing: run scripts/setup.sh"
        return site
    assert _installed().version == release, f"the venv has BIOMERO {_installed().version}"
    return installed_biomero().parent


def biomero_copy(directory: Path, patched_files: tuple[str, ...], release: str = "2.8.3") -> Path:
    """A copy of BIOMERO ``release`` in ``directory`` (put it first on PYTHONPATH), with the
    shipped patch's changes to ``patched_files`` applied."""
    if release in _SEPARATE:
        shutil.copytree(release_site(release), directory)
    else:
        shutil.copytree(installed_biomero(), directory / "biomero")
    patch = InstalledBiomero(release, directory / "biomero").patch()
    chosen = [f for f in patch if f.path in patched_files]
    assert len(chosen) == len(patched_files), f"not in the patch: {patched_files}"
    apply(directory, chosen)
    return directory
