"""Finds labelled files in the class-folder layout `<root>/<class>/<file>`.

Class folders are named cat, cats, dog or dog(s) in any case. Every file
under the root is returned: those that cannot be labelled carry the reason,
so the ingest report accounts for every file it saw.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

from trainer.features import LABEL_NAMES

_FOLDER_LABELS = {name: index for index, label in enumerate(LABEL_NAMES) for name in (label, label + "s")}


@dataclasses.dataclass(frozen=True)
class SourceFile:
    path: pathlib.Path
    relative: str  # path relative to the root, '/'-separated
    label: int | None
    problem: str | None = None  # why the file cannot be labelled


def label_for_folder(name: str) -> int | None:
    return _FOLDER_LABELS.get(name.lower())


def find_files(root: str | os.PathLike) -> list[SourceFile]:
    """All files below `root`, sorted, each with its label or a problem."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data directory {str(root)!r} does not exist or is not a directory")
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        parts = path.relative_to(root).parts
        if len(parts) < 2:
            found.append(SourceFile(path, relative, None, "not inside a class folder (cat/ or dog/)"))
            continue
        label = label_for_folder(parts[0])
        if label is None:
            problem = f"unknown label: folder {parts[0]!r} is not cat(s) or dog(s)"
            found.append(SourceFile(path, relative, None, problem))
        else:
            found.append(SourceFile(path, relative, label))
    return found
