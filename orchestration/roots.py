"""Which folders are a pipeline's roots: the marker a root carries, and the rule for one made before it.

`run` and `ingest` write into a root and replace what its last run left
there, so they must never take a folder of the user's for one. A root has a
marker file (contract.layout.ROOT_MARKER), written once the run that makes
the folder a root holds its lease. A folder is taken as a root when it

- has the marker;
- is absent or empty: it becomes a root. Files the pipeline writes before
  the marker (the lease's, the local schedule's log, KFP's folder beside a
  gs:// root) do not count;
- was made by an earlier version of the pipeline, before there was a marker,
  and is adopted: every entry at its top level is a name the pipeline writes
  there (ROOT_NAMES, also with a suffix: `serving_model.incomplete`,
  `.report.incoming`, `run_summary.json.<hex>.tmp`, `metadata.sqlite-journal`),
  and it holds something only a run leaves (`metadata.sqlite`, a
  `examples/span-<N>/`, a `serving_model/<N>/` or `schema/schema.pbtxt`).

Any other folder is refused by name before anything is written to it. The
rule reads local paths with `os` (a refusal imports no TensorFlow) and URIs
through contract.storage.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import posixpath
import re

from contract import layout
from contract.errors import CommandError
from contract.layout import RunLayout
from orchestration import lease

NEW, ROOT, EARLIER = "new", "root", "earlier"  # what inspect() found: becomes a root, is one, is adopted

# The top-level names of RunLayout's places, the lease's file and KFP's folder beside a gs:// root.
ROOT_NAMES = frozenset({getattr(RunLayout(""), name).split("/")[0] for name, value in vars(RunLayout).items()
                        if isinstance(value, property)} | {lease.LEASE_FILE, "kfp"})
_TOOL_NAME = re.compile(r"^\.?(%s)([.-].*)?$" % "|".join(re.escape(name) for name in sorted(ROOT_NAMES)))


class NotARootError(CommandError):
    """The folder holds files and is not a root of this pipeline; the message names some. Nothing was written."""


@dataclasses.dataclass(frozen=True)
class Found:
    """A folder as inspect() found it, before a run wrote anything."""

    state: str  # NEW, ROOT or EARLIER
    entries: frozenset[str]  # its top-level names (none: it did not exist)
    existing: str  # the folder itself, or (absent) its nearest ancestor that exists


def inspect(root: str | os.PathLike) -> Found:
    """What `root` is; NotARootError (nothing written) for a file or a folder that is not a pipeline root."""
    root = os.fspath(root)
    fs = _FileSystem(root)
    if fs.isfile(root):
        raise NotARootError(f"{root} is a file, not a folder: nothing was changed")
    if not fs.isdir(root):
        return Found(NEW, frozenset(), existing=_existing_ancestor(root))
    entries = frozenset(fs.listdir(root))
    if layout.ROOT_MARKER in entries:
        return Found(ROOT, entries, existing=_existing_ancestor(root))
    if all(_bookkeeping(name, "://" in root) for name in entries):
        return Found(NEW, entries, existing=_existing_ancestor(root))
    foreign = sorted(name for name in entries if not _TOOL_NAME.match(name))
    if not foreign and _run_evidence(fs, RunLayout(root)):
        return Found(EARLIER, entries, existing=_existing_ancestor(root))
    if foreign and _run_evidence(fs, RunLayout(root)):
        raise NotARootError(f"{root} looks like a root of an earlier version of this pipeline but also holds "
                            f"{_names(foreign)}, which the pipeline never writes there: nothing was changed; move "
                            "those out of it, or give a new folder")
    raise NotARootError(f"{root} is not empty and is not a root of this pipeline (it has no {layout.ROOT_MARKER} "
                        f"and holds {_names(sorted(entries))}): nothing was changed; give a new or empty folder")


def claim(root: str | os.PathLike, found: Found) -> str | None:
    """Makes `root` a root (its marker written) unless it is one; called by the holder of its lease. Returns a
    note for a root adopted from an earlier version."""
    if found.state == ROOT:
        return None
    root = os.fspath(root)
    adopted = found.state == EARLIER
    text = json.dumps({"tool": layout.ROOT_MARKER_TOOL, "adopted": adopted,
                       "since": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                       "about": "a root of the cats-vs-dogs TFX pipeline; its `run` and `ingest` refuse a "
                                "non-empty folder without this file"}, indent=2) + "\n"
    _FileSystem(root).create(_join(root, layout.ROOT_MARKER), text.encode())
    return f"adopted {root} as this pipeline's root (made by an earlier version)" if adopted else None


def restore(root: str | os.PathLike, found: Found) -> None:
    """A run refused once it held the lease takes back what it added at the top of a local `root`, while it
    still holds the lease (so that no other run's marker or folder is taken for its own): the marker, and
    folders left empty (a span's staging parent). Nothing that holds a file is removed."""
    root = os.fspath(root)
    if "://" in root or not os.path.isdir(root):
        return
    for name in sorted(set(os.listdir(root)) - found.entries):
        path = os.path.join(root, name)
        if name == layout.ROOT_MARKER and os.path.isfile(path):
            os.unlink(path)
        elif os.path.isdir(path) and not os.path.islink(path):
            _remove_empty_folders(path)


def restore_after_release(root: str | os.PathLike, found: Found) -> None:
    """Then, once its lease is released: the lease's guard file its release made, unless another run has taken
    the root since; a folder that was absent goes again, with the parents made for it, if nothing is in it."""
    root = os.fspath(root)
    if "://" in root or not os.path.isdir(root) or lease.read(root) is not None:
        return
    root = os.path.abspath(root)
    guard = os.path.basename(lease.lease_path(root)) + ".guard"
    if guard not in found.entries and os.path.isfile(os.path.join(root, guard)):
        os.unlink(os.path.join(root, guard))
    made = root
    while made != found.existing and _remove_empty_folders(made):  # the folder, then each parent made for it
        made = os.path.dirname(made)


def _remove_empty_folders(folder: str) -> bool:
    """Removes `folder` and its subfolders if they hold no file; returns whether `folder` went."""
    for directory, _, _ in sorted(os.walk(folder), key=lambda entry: -len(entry[0])):
        try:
            os.rmdir(directory)
        except OSError:  # not empty: something there is kept
            return False
    return True


def _existing_ancestor(root: str) -> str:
    if "://" in root:
        return root
    path = os.path.abspath(root)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _bookkeeping(name: str, remote: bool) -> bool:
    """Files the pipeline may write before a root's marker: the lease's (taken first), a Kubeflow task's probe of
    whether it can write (another run's, of a moment), the local schedule's log (the shell opens it before the
    run starts), KFP's own folder beside a gs:// root."""
    return (name.startswith((lease.LEASE_FILE, layout.WRITE_PROBE_PREFIX)) or name == RunLayout("").schedule_log
            or (remote and name == "kfp"))


def _run_evidence(fs: _FileSystem, where: RunLayout) -> bool:
    """Whether the folder holds something only a run of this pipeline leaves."""
    if fs.isfile(where.metadata_path) or fs.isfile(where.schema_path):
        return True
    spans = [name for name in fs.listdir(where.examples_root) if layout.span_number(name) is not None]
    versions = [name for name in fs.listdir(where.serving_dir) if layout.version_number(name) is not None]
    return any(fs.isdir(_join(where.examples_root, name)) for name in spans) or \
        any(fs.isdir(_join(where.serving_dir, name)) for name in versions)


def _names(names: list[str], shown: int = 4) -> str:
    """Names for a one-line message, printable whatever bytes they hold."""
    printable = [name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") for name in names]
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(printable[:shown]) + more


def _join(root: str, name: str) -> str:
    return posixpath.join(root, name) if "://" in root else os.path.join(root, name)


class _FileSystem:
    """`os` for a local path (no TensorFlow to import), contract.storage for a URI."""

    def __init__(self, root: str):
        self.remote = "://" in root

    def _backend(self):
        from contract import storage

        return storage.backend

    def isdir(self, path: str) -> bool:
        return self._backend().isdir(path) if self.remote else os.path.isdir(path)

    def isfile(self, path: str) -> bool:
        if self.remote:
            return self._backend().exists(path) and not self._backend().isdir(path)
        return os.path.isfile(path) or (os.path.lexists(path) and not os.path.isdir(path))

    def listdir(self, path: str) -> list[str]:
        if not self.isdir(path):
            return []
        return self._backend().listdir(path) if self.remote else os.listdir(path)

    def create(self, path: str, data: bytes) -> None:
        if self.remote:
            self._backend().write(path, data)
            return
        try:
            with open(path, "xb") as f:
                f.write(data)
        except FileExistsError:  # written in between by another run that made the folder a root: the same claim
            pass
