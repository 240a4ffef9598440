"""Rollback: serve an earlier blessed version again, by pushing it as a new version.

TF Serving's default version policy serves the highest version, so version N
is copied to max+1 (the same ServingPusher.push_model, the same staging and
rename, the same digests) and a server picks it up with no change to its
configuration; no version is deleted or renamed. The rollback is recorded in
ML Metadata as an execution of type Rollback in the pipeline's context: its
input is version N's Model, its output a PushedModel that says which version
was rolled back to, from which, why and when. The next run's baseline is then
the served model (components.baseline_resolver), and `models` lists the rollback.

Refused, with nothing changed: a version that was never pushed or never
blessed, one whose files are gone or differ from the digests recorded at its
push, the version already served, a run in progress (the root's lease). The same on a
Kubeflow deployment: the root there (a volume path or gs://) and its store
(the cluster's ML Metadata service, reached through a port-forward).
"""

from __future__ import annotations

import dataclasses
import pathlib
import posixpath
import time

import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2

from components.serving_pusher import PushResult, digest_problems, existing_versions, push_model, pushed_model_uri
from contract import metadata as metadata_lib
from contract.layout import RunLayout
from orchestration.run_lock import exclusive_run
from reporting import model_history

EXECUTION_TYPE = metadata_lib.ROLLBACK_EXECUTION_TYPE


class RollbackError(ValueError):
    """A rollback that cannot be done; the message says why. Nothing was changed."""


@dataclasses.dataclass(frozen=True)
class Rollback:
    to_version: int
    from_version: int  # the version served before
    pushed: PushResult


def rollback(root: str | pathlib.Path, store: str, to_version: int, reason: str, pipeline_name: str) -> Rollback:
    """Serves version `to_version` of the pipeline at `root` (a local folder, a deployment's volume path or a
    gs:// URI) again; `store`: its ML Metadata store, as contract.metadata names stores. Holds the root's lease
    (orchestration.lease) throughout, as a run does."""
    with exclusive_run(root):
        return _rollback_locked(RunLayout(str(root)), store, to_version, reason, pipeline_name)


def _rollback_locked(where: RunLayout, store: str, to_version: int, reason: str, pipeline_name: str) -> Rollback:
    serving_dir = where.serving_dir
    pushed = {v.version: v for v in model_history.pushed_versions(store)}
    target = pushed.get(to_version)
    if target is None:
        known = ", ".join(map(str, sorted(pushed))) or "none"
        raise RollbackError(f"version {to_version} was never pushed by this pipeline (pushed versions: {known})")
    if not target.blessed:
        raise RollbackError(f"version {to_version} holds a model that was not blessed")
    folder = posixpath.join(serving_dir, str(to_version))
    if not tf.io.gfile.exists(posixpath.join(folder, "saved_model.pb")):
        raise RollbackError(f"version {to_version}'s files are gone from {folder}")
    problems = digest_problems(folder)
    if problems:
        raise RollbackError(f"version {to_version}'s files differ from those pushed ({'; '.join(problems[:5])}): "
                            "serving them again would serve something never evaluated")
    served = max(existing_versions(serving_dir))
    if served == to_version or pushed_model_uri(posixpath.join(serving_dir, str(served))) == target.model_uri:
        raise RollbackError(f"version {to_version}'s model is already the one served (version {served})")
    result = push_model(folder, serving_dir, model_uri=target.model_uri,
                        record={metadata_lib.ROLLED_BACK_TO: to_version, metadata_lib.ROLLED_BACK_FROM: served,
                                metadata_lib.ROLLBACK_REASON: reason})
    _record(metadata_lib.open_store(store), pipeline_name, target.model_id, result, to_version, served, reason)
    return Rollback(to_version, served, result)


def _record(store, pipeline_name: str, model_id: int, result: PushResult, to_version: int,
            from_version: int, reason: str) -> None:
    """The Rollback execution (input: the Model; output: a PushedModel) in the pipeline's context."""
    execution_type = metadata_store_pb2.ExecutionType(name=EXECUTION_TYPE)
    execution = metadata_store_pb2.Execution(
        type_id=store.put_execution_type(execution_type, can_add_fields=True),
        last_known_state=metadata_store_pb2.Execution.COMPLETE)
    details = {metadata_lib.ROLLED_BACK_TO: to_version, metadata_lib.ROLLED_BACK_FROM: from_version,
               metadata_lib.ROLLBACK_REASON: reason,
               metadata_lib.ROLLED_BACK_AT: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    pushed = metadata_store_pb2.Artifact(type_id=store.get_artifact_type("PushedModel").id, uri=result.path,
                                         state=metadata_store_pb2.Artifact.LIVE)
    for key, value in {**details, metadata_lib.PUSHED: 1, metadata_lib.PUSHED_VERSION: result.version,
                       metadata_lib.PUSHED_DESTINATION: result.path, metadata_lib.PUSHED_MODEL_ID: model_id}.items():
        _set(execution, key, value)
        _set(pushed, key, value)
    model = store.get_artifacts_by_id([model_id])[0]
    contexts = [c for c in store.get_contexts_by_type("pipeline") if c.name == pipeline_name]
    store.put_execution(execution, [
        (model, metadata_store_pb2.Event(type=metadata_store_pb2.Event.INPUT)),
        (pushed, metadata_store_pb2.Event(type=metadata_store_pb2.Event.OUTPUT)),
    ], contexts)


def _set(node, key: str, value) -> None:
    if isinstance(value, int):
        node.custom_properties[key].int_value = value
    else:
        node.custom_properties[key].string_value = str(value)
