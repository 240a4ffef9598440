"""The settings a root's local runs were given, kept with the root, so the next run trains as the last one did.

`run` writes `<root>/run_settings.json` once it holds the root: the settings given
as flags (by their config field names, the vocabulary the Kubeflow and Vertex
packages carry) over this root's runs, the newest value of each, and the last
source given. A later `run` lays the record under its own flags (a flag given
wins, and the record then holds it), so a scheduled `run` trains with what the
user chose last, and `schedule --local` can say what the nightly run will do.

The file is the pipeline's own and is only ever read when it is a regular file:
a link or a damaged file stops the command in one line naming it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import stat
import time
import uuid
from typing import Any

from contract.errors import CommandError
from contract.layout import RunLayout

VERSION = 1
_READ_LIMIT = 1 << 20  # a record is a few hundred bytes


class UnreadableRecordError(CommandError):
    """The root's settings record exists and cannot be used; the message names it and what to do."""


@dataclasses.dataclass(frozen=True)
class Recorded:
    """A root's record: {setting: value} and the source ({"kind", "location"} or {"kind": "demo", "images"})."""

    settings: dict[str, Any]
    source: dict[str, Any] | None = None


def path_of(root: str | os.PathLike) -> pathlib.Path:
    return pathlib.Path(RunLayout(pathlib.Path(root)).run_settings_path)


def read(root: str | os.PathLike) -> Recorded | None:
    """The record of `root`; None where it has none (a new folder, or a root no `run` of this version ran in)."""
    path = path_of(root)
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise _unreadable(path, f"cannot be read ({error.strerror})") from None
    if not stat.S_ISREG(status.st_mode):
        raise _unreadable(path, "is not a file (a run writes it as one)")
    if status.st_size > _READ_LIMIT:
        raise _unreadable(path, f"is {status.st_size} bytes, not a record of run settings")
    try:
        with open(path, "rb") as f:
            value = json.loads(f.read().decode("utf-8"))
    except OSError as error:
        raise _unreadable(path, f"cannot be read ({error.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise _unreadable(path, "is not valid JSON") from None
    settings, source = (value.get("settings"), value.get("source")) if isinstance(value, dict) else (None, None)
    if not isinstance(settings, dict) or not (source is None or _is_source(source)):
        raise _unreadable(path, "does not hold a record of run settings")
    return Recorded(settings, source)


def _is_source(source) -> bool:
    return isinstance(source, dict) and isinstance(source.get("kind"), str) and (
        isinstance(source.get("location"), str) or isinstance(source.get("images"), int))


def _unreadable(path: pathlib.Path, what: str) -> UnreadableRecordError:
    return UnreadableRecordError(f"{path} {what}: it holds the settings of this root's earlier runs; move it aside "
                                 f"(mv {path} {path}.damaged) and give the flags you want, or restore it")


def write(root: str | os.PathLike, recorded: Recorded) -> None:
    """Replaces the record whole (a temporary file renamed into place: a reader sees the old or the new one)."""
    path = path_of(root)
    text = json.dumps({"version": VERSION, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       "settings": recorded.settings, "source": recorded.source}, indent=2, sort_keys=True)
    temporary = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        temporary.write_text(text + "\n")
        os.replace(temporary, path)  # replaces a link of that name, never writes through it
    finally:
        temporary.unlink(missing_ok=True)
