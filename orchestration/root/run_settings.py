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
import errno
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
    """The record of `root`; None where it has none (a new folder, or a root no `run` of this version ran in).
    Its values are not checked here: the command that lays them checks each as its flag would."""
    path = path_of(root)
    try:
        # Opened without following a link and without waiting on a FIFO; only a regular file is read.
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise _unreadable(path, "is not a file (a run writes it as one)" if error.errno == errno.ELOOP
                          else f"cannot be read ({error.strerror})") from None
    status = os.fstat(descriptor)
    if not stat.S_ISREG(status.st_mode):
        os.close(descriptor)
        raise _unreadable(path, "is not a file (a run writes it as one)")
    with os.fdopen(descriptor, "rb") as f:
        if status.st_size > _READ_LIMIT:
            raise _unreadable(path, f"is {status.st_size} bytes, not a record of run settings")
        try:
            value = json.loads(f.read().decode("utf-8"))
        except OSError as error:
            raise _unreadable(path, f"cannot be read ({error.strerror})") from None
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise _unreadable(path, "is not valid JSON") from None
    settings, source = (value.get("settings"), value.get("source")) if isinstance(value, dict) else (None, None)
    if not isinstance(settings, dict):
        raise _unreadable(path, "does not hold a record of run settings")
    if isinstance(value.get("version"), int) and value["version"] > VERSION:
        raise _unreadable(path, f"was written by a newer version of the pipeline (record version {value['version']})")
    problem = None if source is None else _source_problem(source)
    if problem:
        raise _unreadable(path, f"holds a source that {problem}")
    return Recorded(settings, source)


def _source_problem(source) -> str | None:
    """What is wrong with a recorded source; None when it is one `run` takes."""
    from ingest import sources

    if not isinstance(source, dict) or source.get("kind") not in (*sources.LISTERS, sources.DEMO):
        return "is of no kind the pipeline reads"
    if source["kind"] == sources.DEMO:
        images = source.get("images")
        return None if isinstance(images, int) and not isinstance(images, bool) and images >= 1 else \
            "is the demo without a count of images"
    location = source.get("location")
    if not isinstance(location, str) or not os.path.isabs(location) or \
            any(ord(char) < 32 or 0xD800 <= ord(char) <= 0xDFFF for char in location):
        return "is not an absolute path of one line"
    return None


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
