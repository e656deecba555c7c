"""The shipped BIOMERO patch, applied the way ``patch -p1`` applies it in site-packages,
here to a copy of the installed package so that each run picks its variant.

The applier is strict (each hunk's old lines must be exactly where the header says) and
idempotent (a hunk whose new lines are already there is left alone).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

PATCH = Path(__file__).resolve().parents[2] / "biomero" / "biomero-2.8.3.patch"
_HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@")


@dataclass
class FilePatch:
    path: str  # relative to site-packages, as in the diff after a/ and b/
    hunks: list[tuple[int, list[str], list[str]]] = field(default_factory=list)


def parse(text: str) -> list[FilePatch]:
    files: list[FilePatch] = []
    lines = text.splitlines(keepends=True)
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("--- a/") and lines[index + 1].startswith("+++ b/"):
            files.append(FilePatch(lines[index + 1][len("+++ b/") :].split("\t")[0].strip()))
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
            files[-1].hunks.append((int(header.group(1)), old, new))
            continue
        index += 1
    return files


def apply(site: Path, files: list[FilePatch]) -> None:
    for file_patch in files:
        target = site / file_patch.path
        lines = target.read_text(encoding="utf-8").splitlines(keepends=True)
        offset = 0
        for start, old, new in file_patch.hunks:
            at = start - 1 + offset
            if lines[at : at + len(old)] == old:
                lines[at : at + len(old)] = new
            elif lines[at : at + len(new)] != new:
                msg = f"{file_patch.path}: the hunk at line {start} does not match"
                raise ValueError(msg)
            offset += len(new) - len(old)
        target.write_text("".join(lines), encoding="utf-8")


def installed_biomero() -> Path:
    """The installed biomero package's directory (not imported here)."""
    spec = importlib.util.find_spec("biomero")
    assert spec is not None and spec.origin is not None, "biomero is not installed"
    return Path(spec.origin).parent


def biomero_copy(directory: Path, patched_files: tuple[str, ...]) -> Path:
    """A copy of the installed biomero package in ``directory`` (put it first on
    PYTHONPATH), with the shipped patch's changes to ``patched_files`` applied."""
    shutil.copytree(installed_biomero(), directory / "biomero")
    chosen = [f for f in parse(PATCH.read_text(encoding="utf-8")) if f.path in patched_files]
    assert len(chosen) == len(patched_files), f"not in the patch: {patched_files}"
    apply(directory, chosen)
    return directory
