"""The ML Metadata store's health, looked after before a run uses it.

- check: a local SQLite file that is damaged is named before any work (one that
  another process holds locked is busy, not damaged). MLMD
  reports it deep inside the first query of whichever component reaches it
  first ("database disk image is malformed"); up front, the user learns which
  file it is, what moving it aside costs, and that nothing else needs to go.
- cancel_unfinished: executions an interrupted or killed run left RUNNING
  are marked CANCELED (a local run's, or a Kubeflow run's whose pods died).
- mark_missing (any store, also the Kubeflow ingest task's): artifacts whose
  files are gone are marked DELETED so that nothing hands them out again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3

from contract import metadata as metadata_lib
from contract.errors import CommandError, shown_name
from orchestration.root import lease
from orchestration.root.lease import RootBusyError


class DamagedStoreError(CommandError, RuntimeError):
    """The metadata file cannot be used; the message names it and the way out."""


class StoreBusyError(RootBusyError):
    """Another process has the metadata file locked: busy, not damaged (exit code 3, as for a held root)."""


BUSY_TIMEOUT_SECONDS = 5.0  # how long the check waits for another process's write to the store to finish


def check(path: str | os.PathLike, root: str | os.PathLike | None = None) -> None:
    """Raises DamagedStoreError if `path` exists but is not a sound SQLite database, StoreBusyError if another
    process holds it locked (naming the run that holds `root`, if one does). A run checks it under the root's
    lease, so that a lock is never a run of this pipeline on the same root."""
    path = os.fspath(path)
    if not os.path.exists(path):
        return  # a first run creates it
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True,
                                                timeout=BUSY_TIMEOUT_SECONDS)) as db:
            problems = [row[0] for row in db.execute("PRAGMA quick_check")]
    except sqlite3.OperationalError as error:
        if "locked" not in str(error) and "busy" not in str(error):
            problems = [str(error)]
        else:
            held = lease.read(root) if root is not None else None
            who = f"; {held.holder()} holds the root" if held else ""
            raise StoreBusyError(f"the ML Metadata store {path} is busy: another process has it locked ({error}, "
                                 f"waited {BUSY_TIMEOUT_SECONDS:.0f} s){who}. Nothing was changed; run again when it "
                                 "is done. The store is not damaged: do not move it aside") from None
    except sqlite3.Error as error:
        problems = [str(error)]
    if problems != ["ok"]:
        raise DamagedStoreError(
            f"the ML Metadata store {path} is damaged ({problems[0]}). To start its history over, move it aside "
            f"(mv {path} {path}.damaged) and run again: the served versions in serving_model/ and the spans in "
            "examples/ stay, but the cache, the run history and the record of blessed models are lost, so the "
            "next run retrains everything, `models` lists only versions pushed from then on, and the next "
            "model is held to --min-accuracy alone, not compared with the served one")


def readable_history(store: str, root: str | os.PathLike) -> str:
    """`store` (sqlite:/// or grpc://) once it is known to be sound and reachable, for reading a root's history:
    a SQLite file is checked first (damaged, or locked by another process); a store that cannot be reached or
    opened read-only is a StoreAddressError or StoreUnreachableError naming it."""
    if store.startswith(metadata_lib.SQLITE_SCHEME):
        check(store[len(metadata_lib.SQLITE_SCHEME):], root)
    metadata_lib.reachable_store(store, read_only=True)
    return store


def _store(path: str | os.PathLike):
    return metadata_lib.open_store(metadata_lib.sqlite_store(path))


def open_store(path: str | os.PathLike):
    """The local SQLite store at `path`, or None before a first run created it."""
    return _store(path) if os.path.exists(path) else None


def run_ids(path: str | os.PathLike) -> frozenset[str]:
    """Names of the pipeline runs already recorded in the store (none if there is no store yet)."""
    if not os.path.exists(path):
        return frozenset()
    return frozenset(c.name for c in _store(path).get_contexts_by_type("pipeline_run"))


def cancel_unfinished(path: str | os.PathLike, earlier_runs: frozenset[str]) -> list[str]:
    """cancel_unfinished_in on a local SQLite store: the NEW and RUNNING executions of runs newer than
    `earlier_runs` are marked CANCELED; returns their nodes."""
    if not os.path.exists(path):
        return []
    return cancel_unfinished_in(_store(path), lambda run: run not in earlier_runs)


def cancel_unfinished_in(store, which_runs=lambda run: True) -> list[str]:
    """Marks the NEW and RUNNING executions of the runs `which_runs(run id)` selects CANCELED; returns
    their nodes.

    A killed run (Ctrl-C, kill -9, a Kubeflow pod killed for good) leaves them
    RUNNING forever; CANCELED says what happened, and TFX never reuses a
    canceled execution's outputs. Only the holder of the root's lease calls
    this, so no execution it marks belongs to a run still working.
    """
    from ml_metadata.proto import metadata_store_pb2

    unfinished = (metadata_store_pb2.Execution.NEW, metadata_store_pb2.Execution.RUNNING)
    node_type = {t.name: t.id for t in store.get_context_types()}.get("node")
    nodes = []
    for run in store.get_contexts_by_type("pipeline_run"):
        if not which_runs(run.name):
            continue
        for execution in store.get_executions_by_context(run.id):
            if execution.last_known_state not in unfinished:
                continue
            execution.last_known_state = metadata_store_pb2.Execution.CANCELED
            store.put_executions([execution])
            nodes += [c.name.split(".", 1)[1] for c in store.get_contexts_by_execution(execution.id)
                      if c.type_id == node_type]
    return nodes


EXECUTOR_TEMP = (".system", "executor_execution")  # <pipeline root>/<node>/.system/executor_execution/<id>/.temp
FEATURE_CACHE = "feature_cache"  # trainer.task.CACHE_FOLDER (orchestration does not import the trainer)


def remove_canceled_temp(store, pipeline_root: str) -> tuple[int, int]:
    """Removes what CANCELED executions left under the local `pipeline_root` (_left_behind: their temp folders,
    the feature caches in their outputs); returns (folders removed, bytes freed). A killed Tuner leaves its
    feature cache in its temp folder, a killed Trainer in its ModelRun output: gigabytes that TFX never removes
    (it clears an execution's temp folder only when the execution ends). No link is followed: a folder reached
    through one is left alone. Only the holder of the root's lease calls this, so no canceled execution is still
    writing."""
    from ml_metadata.proto import metadata_store_pb2

    if store is None or not os.path.isdir(pipeline_root) or os.path.islink(pipeline_root):
        return 0, 0
    node_type = {t.name: t.id for t in store.get_context_types()}.get("node")
    removed = freed = 0
    for execution in store.get_executions():
        if execution.last_known_state != metadata_store_pb2.Execution.CANCELED:
            continue
        for context in store.get_contexts_by_execution(execution.id):
            if context.type_id != node_type:
                continue
            for parts in _left_behind(pipeline_root, context.name.split(".", 1)[1], str(execution.id)):
                path, linked = pipeline_root, False
                for part in parts:
                    path = os.path.join(path, part)
                    linked = linked or os.path.islink(path)
                if linked or not os.path.isdir(path):
                    continue
                freed += sum(os.lstat(os.path.join(folder, name)).st_size
                             for folder, _, names in os.walk(path) for name in names)
                shutil.rmtree(path)
                removed += 1
    return removed, freed


def _left_behind(pipeline_root: str, node: str, execution_id: str) -> list[list[str]]:
    """What a killed execution of `node` leaves: its temp folder, and the feature cache in each of its output
    folders (<node>/<output>/<execution id>/feature_cache: the Trainer's, in its ModelRun output)."""
    node_dir = os.path.join(pipeline_root, node)
    outputs = sorted(entry.name for entry in os.scandir(node_dir) if entry.name != EXECUTOR_TEMP[0]
                     and entry.is_dir(follow_symlinks=False)) if os.path.isdir(node_dir) else []
    return [[node, *EXECUTOR_TEMP, execution_id, ".temp"],
            *([node, output, execution_id, FEATURE_CACHE] for output in outputs)]


MISSING_PROPERTY = metadata_lib.MISSING_SINCE  # set on the artifacts mark_missing marks DELETED


def relocation(store, root: str) -> tuple[list, dict[str, list[int]]]:
    """How to point a local root's own store at the root where it is now, nothing written yet: the outputs and
    pushes it recorded under the folder the root was before (moved, restored or copied elsewhere, its store with it)
    named at the same place below `root` where they are there (contract.metadata.moved_from); those `root` does not
    hold (a root copied in part) marked DELETED, never read from the folder they came from, which may be another
    root's now. Otherwise mark_missing would take them for gone, and the run would judge its candidate against no
    baseline, warm-start from nothing, and read a copy's outputs from the root it was copied from. Returns (the
    artifacts changed, for store.put_artifacts; {the folder they were under: [how many are read here now, how many
    are not]}), so that a caller can act on those folders first (a serving config naming one) while the store still
    names them: reconcile.follow_a_moved_root."""
    import time

    from ml_metadata.proto import metadata_store_pb2

    live, deleted = metadata_store_pb2.Artifact.LIVE, metadata_store_pb2.Artifact.DELETED
    changed, before = [], {}
    for artifact in store.get_artifacts():
        moved = metadata_lib.moved_from(artifact.uri, root)
        destination = artifact.custom_properties.get(metadata_lib.PUSHED_DESTINATION)
        moved_destination = destination and metadata_lib.moved_from(destination.string_value, root)
        if moved is not None:
            before.setdefault(metadata_lib.written_under(artifact.uri, root), [0, 0])[0] += 1
            artifact.uri = moved
            if metadata_lib.NOT_IN_ROOT_SINCE in artifact.custom_properties:  # the part copied since
                artifact.state = live
                del artifact.custom_properties[metadata_lib.NOT_IN_ROOT_SINCE]
        elif (old := metadata_lib.written_under(artifact.uri, root)) and artifact.state == live:
            before.setdefault(old, [0, 0])[1] += 1
            artifact.state = deleted  # not MISSING_SINCE: mark_missing would take it for back where it is there
            artifact.custom_properties[metadata_lib.NOT_IN_ROOT_SINCE].string_value = time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        elif not moved_destination:
            continue
        if moved_destination:
            artifact.custom_properties[metadata_lib.PUSHED_DESTINATION].string_value = moved_destination
        changed.append(artifact)
    return changed, before


def relocation_notes(relocated: dict[str, list[int]]) -> list[str]:
    """What `relocation` found, a line for each folder the root was in before."""
    return [f"this root's store named {here + gone} of its outputs under {shown_name(folder)}, where the root was "
            f"before (moved or copied here): {here} are read here now"
            + (f"; {gone} this root does not hold are never read (marked DELETED)" if gone else "")
            for folder, (here, gone) in relocated.items()]


def mark_missing(store, root: str | None = None) -> list[str]:
    """Marks LIVE artifacts whose files are gone DELETED; returns '<type> <uri>' for each. With `root`, only
    artifacts under it: a store shared with other deployments holds theirs, which this task may not see (another
    volume) and must not mark.

    A deleted pipeline_root (or one model folder) would otherwise be handed
    out again: TFX's cache checks that files exist, but resolvers (the
    previous span's statistics, the baseline, the warm start) take any LIVE
    artifact. TFX resolves LIVE artifacts only, so once marked they are never
    used again: a component reruns, a resolver picks the next one or none.
    Files that come back (a storage mount that was missing for a while) make
    the artifacts this function marked LIVE again.
    """
    import time

    import tensorflow as tf
    from ml_metadata.proto import metadata_store_pb2

    live, deleted = metadata_store_pb2.Artifact.LIVE, metadata_store_pb2.Artifact.DELETED
    artifacts = [a for a in store.get_artifacts() if a.uri and (root is None or metadata_lib.under_root(a.uri, root))]
    missing = [a for a in artifacts if a.state == live and not tf.io.gfile.exists(a.uri)]
    back = [a for a in artifacts if a.state == deleted and MISSING_PROPERTY in a.custom_properties
            and tf.io.gfile.exists(a.uri)]
    for artifact in missing:
        artifact.state = deleted
        artifact.custom_properties[MISSING_PROPERTY].string_value = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for artifact in back:
        artifact.state = live
        del artifact.custom_properties[MISSING_PROPERTY]
    if missing or back:
        store.put_artifacts(missing + back)
    types = {t.id: t.name for t in store.get_artifact_types_by_id(sorted({a.type_id for a in missing}))}
    return [f"{types[a.type_id]} {a.uri}" for a in missing]

