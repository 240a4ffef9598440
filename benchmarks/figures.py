"""A benchmark's figure (a measurement beside the reference measured in the same run), the table they print as, and
where they are written."""

from __future__ import annotations

import dataclasses
import os
import pathlib


@dataclasses.dataclass
class Figure:
    section: str
    name: str
    value: float
    unit: str
    reference: float | None = None  # what `value` is compared with, same unit
    ratio: float | None = None  # value / reference; section 1's are speed-ups: reference / value
    target: str | None = None
    met: bool | None = None


def table(figures: list[Figure]) -> str:
    lines = [f"{'section':<20}{'measurement':<52}{'value':>11} {'unit':<6}{'reference':>11}{'ratio':>8}  target"]
    for f in figures:
        reference = f"{f.reference:.1f}" if f.reference is not None else ""
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else ""
        verdict = "" if f.met is None else (" met" if f.met else " NOT MET")
        lines.append(f"{f.section:<20}{f.name:<52}{f.value:>11.2f} {f.unit:<6}{reference:>11}{ratio:>8}  "
                     f"{f.target or ''}{verdict}")
    return "\n".join(lines)


def unwritable(path: pathlib.Path) -> str | None:
    """Why a benchmark's figures could not be written to `path`, or None; asked before a run of minutes, not after
    it. The folder it is to go in is made."""
    if path.is_dir():
        return f"{path} cannot be written: it is a folder"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"{path} cannot be written: its folder cannot be made ({error.strerror or error})"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return f"{path} cannot be written: this user cannot write in {path.parent}"
    return None
