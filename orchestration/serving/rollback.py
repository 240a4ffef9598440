"""Rollback: serve an earlier blessed version again, by pushing it as a new version.

Version N is copied to max+1 (the same ServingPusher.push_model, the same
staging and rename, the same digests, and the serving config rewritten to name
the new version last), so that the served version is always the newest one and
a server loads it at its next read of the config; no version is deleted or
renamed. The rollback is recorded in
ML Metadata as an execution of type Rollback in the pipeline's context: its
input is version N's Model, its output a PushedModel that says which version
was rolled back to, from which, why and when. The next run's baseline is then
the served model (components.baseline_resolver), and `models` lists the rollback.

A rollback publishes first and records second, like a push: one killed in
between (a dropped port-forward) left a complete version the store does not
know; the retry records it (orchestration.run.reconcile) and, when it is a
rollback to the same version, reports the rollback completed.

What is served is what the serving config names, when that version's files
match their digests (contract.served), as `models` and the baseline have it: a
damaged served version counts as nothing served, and any intact earlier
version may be rolled back to.

Refused, with nothing changed: a version that was never pushed or never
blessed, one whose files are incomplete, gone or differ from the digests
recorded at its push, the version already served, one that TF Serving could
not run (loaded and asked as TF Serving does: inference.tf_serving), a run in
progress (the root's lease). The same on a
Kubeflow deployment: the root there (a volume path or gs://) and its store
(the cluster's ML Metadata service, reached through a port-forward).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import posixpath

from components.serving_pusher import (
    WITHDRAWN_WEIGHTS,
    PushResult,
    digest_problems,
    incomplete_reason,
    push_model,
    pushed_model_uri,
    withdrawn_weights,
)
from contract import metadata as metadata_lib
from contract import served
from contract.errors import CommandError, StorageFaultError, first_line, storage_fault
from contract.layout import RunLayout
from inference import tf_serving
from orchestration.root.run_lock import exclusive_run
from orchestration.run import reconcile
from orchestration.serving import kserve
from reporting import model_history

EXECUTION_TYPE = metadata_lib.ROLLBACK_EXECUTION_TYPE


class RollbackError(CommandError, ValueError):
    """A rollback that cannot be done; the message says why. Nothing was changed."""

    def __init__(self, to_version: int, why: str):
        super().__init__(why)
        self.to_version = to_version

    def line(self, command: str | None = None) -> str:
        return f"cannot roll back to version {self.to_version}: {self}; nothing was changed"


@dataclasses.dataclass(frozen=True)
class Rollback:
    to_version: int
    from_version: int | None  # the version named to be served before (None: none)
    pushed: PushResult
    completed: bool = False  # True: this finished an interrupted rollback (published, not recorded) to the same version
    notes: tuple[str, ...] = ()  # versions recorded late, incomplete versions moved aside


def _follow_a_moved_root(root, store: str, serving_dir: str) -> list[str]:
    """A local root moved or copied with its store since its last run: its serving config and its store's records
    pointed where the root is now, as a run does first (reconcile.follow_a_moved_root), so that the version pushed
    names its model here. Lines saying what was done."""
    from contract import storage
    from orchestration.root import store_health

    if not storage.is_local(str(root)):
        return []

    relocated, followed = reconcile.follow_a_moved_root(metadata_lib.open_store(store), os.path.abspath(str(root)),
                                                        serving_dir)
    return store_health.relocation_notes(relocated) + ([f"serving folder: {followed}"] if followed else [])


def _card_served_again(folder: str, serving_dir: str, to_version: int, model_uri: str):
    """The extra files of a rollback's version: the copied model card, its opening line naming the new version and
    the model where it is now."""
    from components import model_card
    from contract import layout, storage

    path = posixpath.join(folder, layout.MODEL_CARD_FILE)
    if not storage.backend.exists(path):
        return None
    card = storage.backend.read(path).decode("utf-8", "replace")
    name = posixpath.basename(serving_dir.rstrip("/"))
    return lambda version: {layout.MODEL_CARD_FILE: model_card.served_again(card, f"{name}/{version}", to_version,
                                                                             model_uri)}


def rollback(root: str | pathlib.Path, store: str, to_version: int, reason: str, pipeline_name: str,
             scoped: bool = False) -> Rollback:
    """Serves version `to_version` of the pipeline at `root` (a local folder, a deployment's volume path or a
    gs:// URI) again; `store`: its ML Metadata store, as contract.metadata names stores. Holds the root's lease
    (orchestration.root.lease) throughout, as a run does."""
    with exclusive_run(root):
        return _rollback_locked(RunLayout(str(root)), store, to_version, reason, pipeline_name, scoped)


def _rollback_locked(where: RunLayout, store: str, to_version: int, reason: str, pipeline_name: str,
                     scoped: bool) -> Rollback:
    serving_dir = where.serving_dir
    # A version published but never recorded (a rollback or push killed in between) is recorded first; the
    # retry of an interrupted rollback to the same version then finds it done.
    reconciled = reconcile.reconcile(store, serving_dir, pipeline_name, scoped)
    pushed = {v.version: v for v in model_history.pushed_versions(store, serving_dir, scoped)}
    state = served.served(serving_dir)
    served_now = state.named  # the version a server was told to load, damaged or not
    interrupted = pushed.get(served_now)
    if served_now in reconciled and interrupted is not None and interrupted.rolled_back_to == to_version:
        return Rollback(to_version, interrupted.rolled_back_from, PushResult(served_now, interrupted.path, False),
                        completed=True, notes=tuple(reconciled.values()))
    target = pushed.get(to_version)
    if target is None:
        known = ", ".join(map(str, sorted(pushed))) or "none"
        raise RollbackError(to_version,
                            f"version {to_version} was never pushed by this pipeline (pushed versions: {known})")
    if not target.blessed:
        raise RollbackError(to_version, f"version {to_version} holds a model that was not blessed")
    folder = posixpath.join(serving_dir, str(to_version))
    why = incomplete_reason(folder)
    if why:
        raise RollbackError(to_version, f"version {to_version}'s files in {folder} are not a complete version ({why})")
    problems = digest_problems(folder)
    if problems:
        raise RollbackError(to_version, f"version {to_version}'s files differ from those pushed "
                            f"({'; '.join(problems[:5])}): serving them again would serve something never evaluated")
    if state.version is not None and (
            state.version == to_version
            or pushed_model_uri(posixpath.join(serving_dir, str(state.version))) == target.model_uri):
        raise RollbackError(to_version,
                            f"version {to_version}'s model is already the one served (version {state.version})")
    unservable = tf_serving.problem(folder)
    if unservable:
        raise RollbackError(to_version, f"TF Serving cannot serve version {to_version}: {unservable}; pick another "
                            "version (`models` lists them) or push a new one with `run`")
    # Every check passed: only now is anything changed (a refused rollback changes nothing).
    moved = [] if scoped else _follow_a_moved_root(where.root, store, serving_dir)
    details = {metadata_lib.ROLLED_BACK_TO: to_version, metadata_lib.ROLLBACK_REASON: reason}
    if served_now is not None:
        details[metadata_lib.ROLLED_BACK_FROM] = served_now
    # The weights withdrawn, by their digests, in the new version's own record: a run that trains them again is
    # not pushed (components.serving_pusher.withdrawn_twin), even once the withdrawn version's folder is gone.
    withdrawn = withdrawn_weights(posixpath.join(serving_dir, str(served_now))) if served_now is not None else {}
    result = push_model(folder, serving_dir, model_uri=target.model_uri, always_new=True,
                        record={**details, WITHDRAWN_WEIGHTS: withdrawn} if withdrawn else details,
                        extra_files=_card_served_again(folder, serving_dir, to_version, target.model_uri))
    try:
        reconcile.record_push(metadata_lib.open_store(store), pipeline_name, EXECUTION_TYPE, target.model_id,
                              result.version, result.path,
                              {**details, metadata_lib.ROLLED_BACK_AT: reconcile.utc_now()})
    except Exception as error:
        if storage_fault(error) is None:
            raise
        # The serving config already names the new version: saying only "stopped" would leave the user believing
        # the old version is still served.
        raise StorageFaultError(
            f"version {result.version} (version {to_version}'s model) is published and is the one served, but "
            f"recording it in ML Metadata failed: {first_line(error, with_type=True)}; the next run or rollback "
            "records it") from None
    return Rollback(to_version, served_now, result, notes=(*moved, *reconciled.values(), *result.cleaned))


def reach_clients(root: str, version: int, serving: kserve.Serving | None) -> str:
    """Makes the root's server load `version` where it must be told (a root KServe copies once: a new revision of
    `serving`, the InferenceService; None: not told), and says what clients see and when.

    Raises kserve.RolloutError, with the kubectl command that does it by hand, when the InferenceService could
    not be changed (its line says the rollback itself is done)."""
    serving_dir = RunLayout(root).serving_dir
    if not kserve.copied_once(str(root)):
        return (f"a TF Serving that reads {serving_dir}/{served.CONFIG_FILE} (a local server, KServe over a PVC) "
                f"loads version {version} at its next read of it (--model_config_file_poll_wait_seconds) and "
                "answers with it once loaded; until then it answers with the version served before")
    if serving is None:
        return (f"clients do not see version {version} yet: KServe copied {serving_dir} into the predictor's pod "
                "when it started, and serves that copy until a new revision starts. Start one with\n  "
                f"{kserve.rollout_command(kserve.Serving(), version)}\n(with the InferenceService's name and "
                "namespace); requests go to the old revision until the new one is ready")
    try:
        return kserve.roll_out(serving, version).describe()
    except kserve.RolloutError as error:
        raise kserve.RolloutError(f"clients do not see version {version}: {error}; to start the new revision by "
                                  f"hand: {kserve.rollout_command(serving, version)}",
                                  done="the rollback is pushed and recorded") from None
