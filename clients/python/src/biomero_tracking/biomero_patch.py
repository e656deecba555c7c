"""The BIOMERO patch: two lines that let BIOMERO run on this module, shipped per BIOMERO
release as a unified diff against its installed package (paths relative to site-packages).

The applier is strict and idempotent: each hunk's old lines must be exactly where its header
says (a file BIOMERO or someone else changed is refused, not half-patched), and a hunk whose
new lines are already there is left alone. Reverting is the same with old and new swapped.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

_HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@")

# The BIOMERO releases a patch is shipped for, by the name of its file in ``patches/``.
PATCHES = {"2.8.3": "biomero-2.8.3.patch", "2.9.0b15": "biomero-2.9.0b15.patch"}


class PatchError(Exception):
    """BIOMERO cannot be patched (or reverted) as asked; nothing was written."""


@dataclass
class FilePatch:
    path: str  # relative to site-packages, as in the diff after a/ and b/
    hunks: list[tuple[int, list[str], list[str]]] = field(default_factory=list)


def parse(text: str) -> list[FilePatch]:
    """The files and hunks of a unified diff: (first old line, old lines, new lines)."""
    patched: list[FilePatch] = []
    lines = text.splitlines(keepends=True)
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("--- a/") and lines[index + 1].startswith("+++ b/"):
            patched.append(FilePatch(lines[index + 1][len("+++ b/") :].split("\t")[0].strip()))
            index += 2
            continue
        header = _HUNK_HEADER.match(line)
        if header:
            old: list[str] = []
            new: list[str] = []
            index += 1
            while index < len(lines) and lines[index][:1] in (" ", "-", "+"):
                if lines[index].startswith("--- a/"):
                    break
                body = lines[index][1:]
                if lines[index][0] in " -":
                    old.append(body)
                if lines[index][0] in " +":
                    new.append(body)
                index += 1
            patched[-1].hunks.append((int(header.group(1)), old, new))
            continue
        index += 1
    return patched


def _patched_lines(site: Path, file_patch: FilePatch, *, reverse: bool) -> tuple[str, bool]:
    """The file's text with the patch applied (or reverted), and whether that changes it."""
    lines = (site / file_patch.path).read_text(encoding="utf-8").splitlines(keepends=True)
    offset = 0
    changed = False
    for start, before, after in file_patch.hunks:
        old, new = (after, before) if reverse else (before, after)
        at = start - 1 + offset
        if lines[at : at + len(old)] == old and old != new:
            lines[at : at + len(old)] = new
            changed = True
        elif lines[at : at + len(new)] != new:
            msg = f"{file_patch.path}: the lines at {start} are not BIOMERO's; nothing was changed"
            raise PatchError(msg)
        offset += len(new) - len(old)
    return "".join(lines), changed


def apply(site: Path, patched: list[FilePatch], *, reverse: bool = False) -> list[str]:
    """Applies (or reverts) the patch to the package files under ``site``: every file is
    checked before any is written. Returns the files it changed."""
    results = [(f, *_patched_lines(site, f, reverse=reverse)) for f in patched]
    for file_patch, text, changed in results:
        if changed:
            (site / file_patch.path).write_text(text, encoding="utf-8")
    return [file_patch.path for file_patch, _, changed in results if changed]


def state(site: Path, patched: list[FilePatch]) -> str:
    """``applied``, ``not applied``, ``partly applied`` (a file of each), or ``changed``
    (lines the patch expects are not there)."""
    try:
        applied = [not _patched_lines(site, f, reverse=False)[1] for f in patched]
    except PatchError:
        return "changed"
    if all(applied):
        return "applied"
    return "not applied" if not any(applied) else "partly applied"


@dataclass
class InstalledBiomero:
    version: str
    package: Path  # the biomero package directory; its parent is site-packages

    @property
    def site(self) -> Path:
        return self.package.parent

    def patch(self) -> list[FilePatch]:
        """The shipped patch for this release; PatchError for a release it does not know."""
        name = PATCHES.get(self.version)
        if name is None:
            known = ", ".join(sorted(PATCHES))
            msg = (
                f"biomero {self.version} at {self.package} has no patch here "
                f"(patches exist for {known}); nothing was changed"
            )
            raise PatchError(msg)
        return parse(files("biomero_tracking").joinpath("patches", name).read_text("utf-8"))


def installed_biomero() -> InstalledBiomero:
    """The biomero package this interpreter imports (found, not imported)."""
    spec = importlib.util.find_spec("biomero")
    if spec is None or spec.origin is None:
        msg = "biomero is not installed in this interpreter; run this with BIOMERO's python"
        raise PatchError(msg)
    return InstalledBiomero(importlib.metadata.version("biomero"), Path(spec.origin).parent)
