"""The serving folder and ML Metadata agree on what is served.

A version is published first and recorded second (a Pusher's PushedModel, a
Rollback execution), on every orchestrator: a process killed in between leaves
a complete version the store never heard of; one killed between the commit
record and the serving config leaves the config naming the version before. The
config is rolled forward first (components.serving_pusher.follow_commit), to
the newest complete version when it is recorded or holds a blessed Model of
this store (a folder made by hand, whose model was never evaluated, is named
and never served), so the history, `rollback --to N` and the next run's
baseline must know it. Each
complete version without a record is
recorded here from its push record (assets.extra/push.json: the model's URI,
and for a rollback the versions and the reason), as an execution of type
ReconciledPush or Rollback whose input is the Model of that URI; one whose
model this store does not hold is reported by name instead.
"""

from __future__ import annotations

import dataclasses
import posixpath
import time
from typing import Callable

import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2

from components.serving_pusher import (
    UNREADABLE,
    existing_versions,
    follow_commit,
    follow_root,
    push_record,
    pushed_model_uri,
)
from contract import layout, served, storage
from contract import metadata as metadata_lib
from contract.errors import first_line, printable, undecodable_escaped
from reporting import model_history


@dataclasses.dataclass(frozen=True)
class Unrecorded:
    version: int
    path: str
    record: dict  # the version's push record

    def describe(self) -> str:
        if UNREADABLE in self.record:
            what = f"push record unreadable: {self.record[UNREADABLE]}"
        elif metadata_lib.ROLLED_BACK_TO in self.record:
            what = f"a rollback to version {self.record[metadata_lib.ROLLED_BACK_TO]}"
        else:
            what = f"model {self.record.get('model_uri', '?')}"
        pushed_at = self.record.get("pushed_at", "at an unknown time")
        return printable(f"version {self.version} ({what}, pushed {pushed_at}) is in {posixpath.dirname(self.path)} "
                         "but not in ML Metadata")


def unrecorded(serving_dir: str, versions: list[model_history.PushedVersion]) -> list[Unrecorded]:
    """The complete versions in `serving_dir` that no PushedModel of `versions` names."""
    known = {v.version for v in versions}
    return [Unrecorded(v, posixpath.join(serving_dir, str(v)), push_record(posixpath.join(serving_dir, str(v))))
            for v in existing_versions(serving_dir) if v not in known]


def reconcile(store, serving_dir: str, pipeline_name: str, scoped: bool = False) -> dict[int, str]:
    """Records every complete version of `serving_dir` the store does not know; {version: a line saying what
    was found and done}. `store`: an open store, or its name as contract.metadata names stores. Called by the
    holder of the root's lease (a run, a rollback)."""
    if isinstance(store, str):
        store = metadata_lib.open_store(store)
    # First the serving config: the version it names is the served one, which the history must then know.
    versions = model_history.pushed_versions(store, serving_dir, scoped)  # scoped: model_history says
    lines = follow_commit(serving_dir, known_model(store, serving_dir, versions))
    missing = unrecorded(serving_dir, versions)
    for found in missing:
        model = _model_by_uri(store, found.record.get("model_uri", ""), None if scoped else serving_dir)
        if model is None:
            _add(lines, found.version, f"{found.describe()}, and its model is not in this store: not recorded")
            continue
        # A model whose files are gone (pipeline_root cleaned) cannot be compared: its version is recorded from
        # its push record, as before; only a version it could be served from must show the model's files.
        differs = model_files_differ(found.path, model.uri, gone_ok=True)
        if differs:
            _add(lines, found.version, f"{found.describe()}, and its files are not its model's ({differs}): "
                                       "not recorded")
            continue
        details = {key: found.record[key] for key in (metadata_lib.ROLLED_BACK_TO, metadata_lib.ROLLED_BACK_FROM,
                                                      metadata_lib.ROLLBACK_REASON) if key in found.record}
        rollback = metadata_lib.ROLLED_BACK_TO in details
        details[metadata_lib.RECONCILED_AT] = utc_now()
        record_push(store, pipeline_name,
                    metadata_lib.ROLLBACK_EXECUTION_TYPE if rollback else metadata_lib.RECONCILED_EXECUTION_TYPE,
                    model.id, found.version, found.path, details)
        _add(lines, found.version, f"{found.describe()}: recorded now")
    return lines


def holds_model(store, found: Unrecorded) -> bool:
    """Whether the store holds the Model `found`'s push record names (reconcile can then record it)."""
    return _model_by_uri(store, found.record.get("model_uri", ""), posixpath.dirname(found.path)) is not None


def known_model(store, serving_dir: str, versions: list[model_history.PushedVersion]) -> Callable[[int], bool]:
    """Whether a version may be served: recorded as pushed, or holding (by its push record) a Model of this
    store that was blessed (a push killed between its commit record and the config)."""
    recorded = {v.version for v in versions}
    blessed = model_history.blessed_model_ids(store)

    def trusted(version: int) -> bool:
        if version in recorded:
            return True
        folder = posixpath.join(serving_dir, str(version))
        model = _model_by_uri(store, pushed_model_uri(folder), serving_dir)
        return model is not None and model.id in blessed and model_files_differ(folder, model.uri) is None
    return trusted


# What makes a model the model: its graph and its weights. A push adds its own record and card beside them, and
# a rollback copies an earlier version's, so those are not compared.
_MODEL_FILES = ("saved_model.pb", "variables/")


def model_files_differ(version_dir: str, model_uri: str, gone_ok: bool = False) -> str | None:
    """Why the graph and weights a version's commit record names are not those of the Model at `model_uri`
    (None: they are): a push record names a model, and only the files show the version holds it."""
    recorded = served.recorded_digests(version_dir) or {}
    source = layout.serving_model_dir(model_uri)
    if not storage.backend.exists(posixpath.join(source, "saved_model.pb")):
        source = model_uri  # TFX's older Model artifacts hold the SavedModel at their URI
        if gone_ok and not storage.backend.exists(posixpath.join(source, "saved_model.pb")):
            return None
    names = sorted(name for name in recorded if name.startswith(_MODEL_FILES))
    if "saved_model.pb" not in names:
        return "its commit record names no saved_model.pb"
    for name in names:
        path = posixpath.join(source, name)
        try:
            same = served.sha256(path) == recorded[name]
        except (OSError, tf.errors.OpError) as error:
            return f"{name} of the model cannot be read: {first_line(error)}"
        if not same:
            return f"{name} differs from the model's"
    return None



def _add(lines: dict[int, str], version: int, line: str) -> None:
    lines[version] = f"{lines[version]}; {line}" if version in lines else line


def record_push(store, pipeline_name: str, execution_type: str, model_id: int, version: int, path: str,
                details: dict) -> None:
    """An execution of `execution_type` (input: the Model; output: a PushedModel of `version`) in the
    pipeline's context; `details` are set on both."""
    execution = metadata_store_pb2.Execution(
        type_id=store.put_execution_type(metadata_store_pb2.ExecutionType(name=execution_type), can_add_fields=True),
        last_known_state=metadata_store_pb2.Execution.COMPLETE)
    pushed = metadata_store_pb2.Artifact(type_id=_pushed_model_type(store), uri=path,
                                         state=metadata_store_pb2.Artifact.LIVE)
    for key, value in {**details, metadata_lib.PUSHED: 1, metadata_lib.PUSHED_VERSION: version,
                       metadata_lib.PUSHED_DESTINATION: path, metadata_lib.PUSHED_MODEL_ID: model_id}.items():
        _set(execution, key, value)
        _set(pushed, key, value)
    model = store.get_artifacts_by_id([model_id])[0]
    contexts = [c for c in store.get_contexts_by_type("pipeline") if c.name == pipeline_name]
    store.put_execution(execution, [
        (model, metadata_store_pb2.Event(type=metadata_store_pb2.Event.INPUT)),
        (pushed, metadata_store_pb2.Event(type=metadata_store_pb2.Event.OUTPUT)),
    ], contexts)


def _pushed_model_type(store) -> int:
    try:
        return store.get_artifact_type("PushedModel").id
    except Exception:  # a store no Pusher has written to yet (ml_metadata raises its NotFoundError)
        return store.put_artifact_type(metadata_store_pb2.ArtifactType(name="PushedModel"))


def _model_by_uri(store, uri, serving_dir: str | None = None):
    """The Model a push record names by its files' place; with `serving_dir` (a local root's own store's), also
    where a root moved since names it (a push record keeps the place its model had then)."""
    if not uri or not isinstance(uri, str):  # no push record, or a damaged one
        return None
    moved = metadata_lib.moved_from(uri, posixpath.dirname(serving_dir.rstrip("/"))) if serving_dir else None
    for place in (uri, moved) if moved else (uri,):
        models = [a for a in store.get_artifacts_by_uri(place)
                  if store.get_artifact_types_by_id([a.type_id])[0].name == "Model"
                  and metadata_lib.NOT_IN_ROOT_SINCE not in a.custom_properties]  # another root's, a copy's origin
        if models:
            return max(models, key=lambda a: a.id)
    return None


def utc_now() -> str:
    """Now, as push records and ML Metadata keep times: 2026-11-23T14:20:41Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _set(node, key: str, value) -> None:
    if isinstance(value, int):
        node.custom_properties[key].int_value = value
    else:  # a name or a reason Python could not decode (lone surrogates) as \xNN: ML Metadata keeps UTF-8 only
        node.custom_properties[key].string_value = undecodable_escaped(str(value))


def follow_a_moved_root(store, root: str, serving_dir: str | None) -> tuple[dict[str, list[int]], str | None]:
    """A local root moved or copied with its store since its last run or rollback: the serving config pointed at
    the serving folder where it is now, where it named the old place's (serving_pusher.follow_root), then the
    store's records (store_health.relocation). In that order: a process killed in between leaves the store naming
    the old places, and the next run or rollback does both again. ({each old place: [outputs read here now, outputs
    this root does not hold]}, follow_root's line or None)"""
    from orchestration.root import store_health

    changed, relocated = store_health.relocation(store, root)
    followed = follow_root(serving_dir, relocated) if relocated and serving_dir else None
    if changed:
        store.put_artifacts(changed)
    return relocated, followed
