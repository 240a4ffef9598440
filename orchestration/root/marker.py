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
  and is adopted. Names alone are no evidence, and a wrong adoption would let
  the run delete a user's report or write into another program's database, so
  the rule is strict (a false refusal costs a new folder, a false adoption
  costs files):
  * every entry at its top level is exactly a name the pipeline writes there
    (ROOT_FILES, ROOT_FOLDERS, _TRANSIENT: a killed write's temporary file), of
    that kind, not a link;
  * it holds something only a run leaves: a `metadata.sqlite` that is an ML
    Metadata store (opened read-only, its tables checked, and the pipeline
    its runs registered, if any, this one), a committed span
    (`examples/span-<N>/ingest_report.json`) or a committed version
    (`serving_model/<N>/assets.extra/SHA256SUMS`);
  * a `metadata.sqlite` that is not an ML Metadata store is another program's
    database, whatever else is there;
  * what the run removes first (orchestration.engines.local's _clear_last_run) is the
    pipeline's: `report/` holds only REPORT_FILES, `run_summary.json` is a run
    summary, `tfdv_statistics.html` TFDV's page.

Any other folder is refused by name before anything is written to it. The
rule reads local paths with `os` and `sqlite3` (a refusal imports no
TensorFlow) and URIs through contract.storage.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import posixpath
import re
import sqlite3
import urllib.parse

from config import PipelineConfig
from contract import layout
from contract.errors import CommandError, printable, undecodable_escaped
from contract.layout import RunLayout
from orchestration.root import lease, store_health

NEW, ROOT, EARLIER = "new", "root", "earlier"  # what inspect() found: becomes a root, is one, is adopted

_HERE = RunLayout("")
_ASIDE = ".incomplete"  # contract.storage.ASIDE_SUFFIX (that module imports TensorFlow): spans and versions cut short
# Exactly what a run, ingest, push, predict, monitor or the local schedule writes at a root's top level, in every
# version.
ROOT_FILES = frozenset({_HERE.metadata_path, _HERE.summary_path, _HERE.tfdv_statistics_page, _HERE.schedule_log,
                        lease.LEASE_FILE, lease.LEASE_FILE + ".guard"})
ROOT_FOLDERS = frozenset({_HERE.examples_root, _HERE.examples_root + _ASIDE, _HERE.pipeline_root, _HERE.serving_dir,
                          _HERE.serving_dir + _ASIDE, _HERE.report_dir, f".{_HERE.report_dir}.incoming",
                          _HERE.demo_images, _HERE.predictions_dir, posixpath.dirname(_HERE.schema_path),
                          _HERE.runs_dir, _HERE.traffic_root, _HERE.traffic_root + _ASIDE, _HERE.monitoring_dir,
                          _HERE.labeling_root})
# Files the lease and a Kubeflow task's write probe leave for a moment (or, killed, for good).
_PASSING = re.compile("|".join([r"%s\.[^/]+\.(creating|incoming)" % re.escape(lease.LEASE_FILE),
                                re.escape(layout.WRITE_PROBE_PREFIX) + "[0-9a-f]+"]))
# Files a write killed midway leaves: those, SQLite's journals, contract.storage's temporary summary.
_TRANSIENT = re.compile("|".join([_PASSING.pattern, re.escape(_HERE.metadata_path) + "-(journal|wal|shm)",
                                  re.escape(_HERE.summary_path) + r"\.[0-9a-f]{32}\.tmp"]))
# What reporting.run_report writes into report/, in every version (statistics.html: before the TFDV page moved
# beside the report).
REPORT_FILES = frozenset({layout.REPORT_PAGE, "confusion_matrix.png", "training_curves.png", "model.png",
                          "sample_predictions.png", "statistics.png", "statistics.html"})
# Tables ML Metadata creates in a store of its own, in every schema version this pipeline has used.
MLMD_TABLES = frozenset({"MLMDEnv", "Type", "Artifact", "Execution", "Context", "Event"})
_SQLITE_HEADER = b"SQLite format 3\x00"
_READ_LIMIT = 1 << 24  # a run summary is kilobytes; a larger run_summary.json is not one


_NEW_FOLDER = "give a new or empty folder"


class NotARootError(CommandError):
    """The folder holds files and is not a root of this pipeline; the message names some. Nothing was written."""

    def __init__(self, finding: str, advice: str | None = None):
        """`finding`: what the folder is; `advice`: what a command that makes roots asks for instead (a command
        that only reads one, the traffic sink, gives its own)."""
        super().__init__(f"{finding}: nothing was changed" + (f"; {advice}" if advice else ""))
        self.finding = finding


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
        raise NotARootError(f"{root} is a file, not a folder")
    if not fs.isdir(root):
        return Found(NEW, frozenset(), existing=_existing_ancestor(root))
    entries = frozenset(fs.listdir(root))
    if layout.ROOT_MARKER in entries:
        if not fs.regular(_join(root, layout.ROOT_MARKER)):  # a folder or a link by that name marks nothing
            raise NotARootError(f"{_join(root, layout.ROOT_MARKER)} is not a file (a pipeline writes its root's "
                                "marker as one)", _NEW_FOLDER)
        return Found(ROOT, entries, existing=_existing_ancestor(root))
    if all(_bookkeeping(name, "://" in root) for name in entries):
        return Found(NEW, entries, existing=_existing_ancestor(root))
    _check_earlier(fs, root, entries)
    return Found(EARLIER, entries, existing=_existing_ancestor(root))


def _check_earlier(fs: _FileSystem, root: str, entries: frozenset[str]) -> None:
    """Returns if `root` (no marker, not empty) is an earlier version's root; NotARootError naming why not."""
    where = RunLayout(root)
    store = _store_problem(fs, where.metadata_path) if _HERE.metadata_path in entries else None
    if store:
        raise NotARootError(f"{root} holds {_HERE.metadata_path}, which {store}, so it is taken for "
                            "another program's database, not this pipeline's ML Metadata store", _NEW_FOLDER)
    evidence = _HERE.metadata_path in entries or _committed(fs, where)
    if not evidence:
        raise NotARootError(f"{root} is not empty and is not a root of this pipeline (it has no {layout.ROOT_MARKER} "
                            f"and holds {_names(sorted(entries))})", _NEW_FOLDER)
    foreign = [name for name in sorted(entries) if not _own_entry(fs, root, name)] + _not_the_runs(fs, where)
    if foreign:
        raise NotARootError(f"{root} looks like a root of an earlier version of this pipeline but also holds "
                            f"{_names(foreign)}, which the pipeline never writes there",
                            "move those out of it, or give a new folder")


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
    return (name in (lease.LEASE_FILE, lease.LEASE_FILE + ".guard", _HERE.schedule_log)
            or bool(_PASSING.fullmatch(name)) or (remote and name == "kfp"))


def _own_entry(fs: _FileSystem, root: str, name: str) -> bool:
    """Whether a top-level entry is exactly one the pipeline writes, of its kind (a link never is)."""
    path = _join(root, name)
    if fs.islink(path):
        return False
    if name in ROOT_FOLDERS or (fs.remote and name == "kfp"):
        return fs.isdir(path)
    local_only = name == _HERE.metadata_path or name.startswith(_HERE.metadata_path + "-")
    return (name in ROOT_FILES or bool(_TRANSIENT.fullmatch(name))) and fs.regular(path) \
        and not (fs.remote and local_only)  # a store on an object store is no run's: deployments use a server


def _committed(fs: _FileSystem, where: RunLayout) -> bool:
    """Whether the root holds a committed span or a committed version (its commit record written last)."""
    spans = [name for name in fs.listdir(where.examples_root) if layout.span_number(name) is not None]
    versions = [name for name in fs.listdir(where.serving_dir) if layout.version_number(name) is not None]
    return any(fs.regular(_join(_join(where.examples_root, name), layout.INGEST_REPORT)) for name in spans) or \
        any(fs.regular(_join(_join(where.serving_dir, name), layout.DIGESTS_FILE)) for name in versions)


def _store_problem(fs: _FileSystem, path: str, wait: bool = True) -> str | None:
    """None if `path` is an ML Metadata SQLite store, else what it is. Opened read-only: nothing is written to
    it, not even a journal. store_health.StoreBusyError (exit 3) while another process holds it locked."""
    if fs.remote or not fs.regular(path):
        return "is not a file" if not fs.remote else "is on an object store, where no run keeps one"
    with open(path, "rb") as f:
        if f.read(len(_SQLITE_HEADER)) != _SQLITE_HEADER:
            return "is not an SQLite database"
    try:
        tables = _tables(path)
    except sqlite3.OperationalError as error:
        if wait and ("locked" in str(error) or "busy" in str(error)):
            store_health.check(path)  # waits for the lock, then says busy (nothing written) if it is still held
            return _store_problem(fs, path, wait=False)
        return f"cannot be read as an SQLite database ({error})"
    except sqlite3.Error as error:
        return f"cannot be read as an SQLite database ({error})"
    missing = sorted(MLMD_TABLES - tables)
    if missing:
        return f"has no ML Metadata tables ({', '.join(missing)} missing)"
    try:
        pipelines = _pipelines(path)
    except sqlite3.Error as error:
        return f"cannot be read as an ML Metadata store ({error})"
    if pipelines and PipelineConfig().name not in pipelines:  # a run of this pipeline registers its own context
        return f"is the ML Metadata store of another pipeline ({_names(sorted(pipelines))})"
    return None


def _connect(path: str) -> sqlite3.Connection:
    uri = "file:" + urllib.parse.quote(os.fsencode(os.path.abspath(path))) + "?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=1)


def _tables(path: str) -> set[str]:
    connection = _connect(path)
    try:
        return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        connection.close()


def _pipelines(path: str) -> set[str]:
    """The names of the pipelines whose runs a store records (TFX's `pipeline` contexts); none in a store a run
    was killed in before it registered its pipeline."""
    connection = _connect(path)
    try:
        return {row[0] for row in connection.execute(
            "SELECT Context.name FROM Context JOIN Type ON Context.type_id = Type.id WHERE Type.name = 'pipeline'")}
    finally:
        connection.close()


def _not_the_runs(fs: _FileSystem, where: RunLayout) -> list[str]:
    """What a local run would remove first that is not what a run wrote: a file of the report folders that the
    report never writes, a summary that is no run summary, a statistics page that is not TFDV's."""
    if fs.remote:  # deployments write their summaries and reports under runs/<run id>/ and remove none
        return []
    found = []
    for folder in (_HERE.report_dir, f".{_HERE.report_dir}.incoming"):
        path = _join(where.root, folder)
        if fs.isdir(path) and not fs.islink(path):
            found += [f"{folder}/{name}" for name in sorted(fs.listdir(path))
                      if name not in REPORT_FILES or not fs.regular(_join(path, name))]
    if fs.regular(where.summary_path) and not _is_summary(where.summary_path):
        found.append(f"{_HERE.summary_path} (not a run summary)")
    if fs.regular(where.tfdv_statistics_page) and not _starts_with(where.tfdv_statistics_page, _TFDV_PAGE_START):
        found.append(f"{_HERE.tfdv_statistics_page} (not TFDV's statistics page)")
    return found


_TFDV_PAGE_START = b"<!doctype html><html><body>"  # reporting.run_report's wrapping of TFDV's page, in every version


def _is_summary(path: str) -> bool:
    """Whether `path` holds a run summary: a JSON object with the keys every version's summary has."""
    try:
        if os.path.getsize(path) > _READ_LIMIT:
            return False
        with open(path, "rb") as f:
            summary = json.loads(f.read())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and {"pipeline", "run_id", "nodes"} <= summary.keys()


def _starts_with(path: str, start: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(start)) == start
    except OSError:
        return False


def _names(names: list[str], shown: int = 4) -> str:
    """Names for a one-line message, printable whatever bytes or characters they hold (a newline in a name would
    forge a line)."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(printable(undecodable_escaped(name)) for name in names[:shown]) + more


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

    def islink(self, path: str) -> bool:
        return not self.remote and os.path.islink(path)

    def regular(self, path: str) -> bool:
        """A file itself: locally a regular file, not a link to one."""
        if self.remote:
            return self._backend().exists(path) and not self._backend().isdir(path)
        return os.path.isfile(path) and not os.path.islink(path)

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
