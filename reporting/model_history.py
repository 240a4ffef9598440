"""Pushed model versions with their metrics, data spans and blessing, from MLMD.

Lineage followed for each push: PushedModel <- ServingPusher (or a Rollback,
orchestration.serving.rollback) <- Model; the Model's ModelBlessing; Model <- Trainer <-
ingested Examples, whose `span` property names the data.

The served version is read from the serving folder, not from the records: the
version its serving config names, if that version's files match their digests
(contract.served). Checking costs a model's I/O for that version only; every
other version is checked by names (its commit record present, every file it
lists there), and its bytes are hashed where it is used: `rollback --to N`, the
baseline. A damaged version is named as such.
"""

from __future__ import annotations

import dataclasses
import datetime
import posixpath

from ml_metadata.proto import metadata_store_pb2

import config as config_lib
from components import evaluation
from contract import layout, storage
from contract import metadata as metadata_lib
from contract import served as served_lib
from contract.errors import shown_name
from reporting import run_summary
from trainer import export


@dataclasses.dataclass
class PushedVersion:
    version: int
    path: str
    pushed_at: str
    model_id: int
    model_uri: str
    blessed: bool
    spans: list[int]
    metrics: dict[str, float]
    # Share of eval images each TFLite model gives the classifier's class (assets.extra/tflite_fidelity.json).
    tflite_agreement: dict[str, float] = dataclasses.field(default_factory=dict)
    rolled_back_to: int | None = None  # a rollback: the version whose model this one serves again
    rolled_back_from: int | None = None  # ... and the version served before it
    reason: str = ""  # ... and why
    served: bool = False  # the serving config names it and its files match their digests
    named: bool = False  # the serving config names it (served, unless damaged)
    damage: str | None = None  # why its folder cannot be served as pushed (files missing or changed), if it cannot
    judged_split: str | None = None  # the split its metrics are of: "test", or "eval" (optimistic) in older spans
    unreadable: list[str] = dataclasses.field(default_factory=list)  # its files that could not be read, and why
    # The training settings its model was trained with where they differ from the defaults, by their flags' names
    # (assets.extra/training_history.json; the image size from the model's input).
    settings: dict = dataclasses.field(default_factory=dict)


def _artifact_type(store, artifact) -> str:
    return store.get_artifact_types_by_id([artifact.type_id])[0].name


def _producer(store, artifact_id: int) -> int | None:
    for event in store.get_events_by_artifact_ids([artifact_id]):
        if event.type == metadata_store_pb2.Event.OUTPUT:
            return event.execution_id
    return None


def _inputs(store, execution_id: int) -> list:
    return run_summary.artifacts_of(store, execution_id, metadata_store_pb2.Event.INPUT)


def _spans_of_model(store, model_id: int) -> list[int]:
    """Spans of the ingested examples the model was trained from (directly, or through a producer)."""
    spans: set[int] = set()
    trainer = _producer(store, model_id)
    if trainer is None:
        return []
    for examples in (a for a in _inputs(store, trainer) if _artifact_type(store, a) == "Examples"):
        if metadata_lib.span_of(examples) is not None:
            spans.add(metadata_lib.span_of(examples))
            continue
        producer = _producer(store, examples.id)
        if producer is None:
            continue
        for raw in (a for a in _inputs(store, producer) if _artifact_type(store, a) == "Examples"):
            if metadata_lib.span_of(raw) is not None:
                spans.add(metadata_lib.span_of(raw))
    return sorted(spans)


def _metrics_of_blessing(store, blessing, root: str | None) -> tuple[dict[str, float], str | None]:
    """The candidate's overall metrics of the Evaluator that made `blessing`, and the split they are of."""
    evaluator = _producer(store, blessing.id)
    if evaluator is None:
        return {}, None
    for artifact in run_summary.artifacts_of(store, evaluator):
        if _artifact_type(store, artifact) == "ModelEvaluation":
            where = _here(artifact.uri, root)
            if not where:  # not held by this root (copied in part)
                return {}, None
            overall, _, _ = evaluation.read_metrics(where)
            return overall.get("candidate", {}), run_summary.judged_split(store, evaluator)
    return {}, None


def _here(recorded: str, root: str | None) -> str:
    """A path a local root's own store recorded, where the root is now (moved or copied since, before a run
    updated the store: contract.metadata.moved_from)."""
    if not root:
        return recorded
    # a root copied in part: what it does not hold is not read from the root it came from
    return metadata_lib.moved_from(recorded, root) or ("" if metadata_lib.written_under(recorded, root) else recorded)


def _tflite_agreement(pushed_path: str) -> tuple[dict[str, float], list[str]]:
    """(the agreement of each TFLite model, [a line naming a damaged fidelity file])."""
    try:
        fidelity = export.read_tflite_fidelity(pushed_path) if pushed_path else None
    except storage.UnreadableFileError as error:
        return {}, [f"fidelity unreadable: {error}"]
    return (export.tflite_agreement(fidelity) if fidelity else {}), []


def _settings(pushed_path: str) -> tuple[dict, list[str]]:
    """(the version's training settings that differ from the defaults, [a line naming a damaged history])."""
    path = posixpath.join(pushed_path, layout.TRAINING_HISTORY_FILE) if pushed_path else ""
    if not path or not storage.backend.exists(path):
        return {}, []
    try:
        history = storage.read_json(path)
        used, shape = history.get("settings") or {}, (history.get("model") or {}).get("input_shape") or []
        defaults = dataclasses.asdict(config_lib.TrainingConfig())
        differ = {name: value for name, value in sorted(used.items()) if name in defaults and value != defaults[name]}
        if shape and shape[0] != config_lib.DataConfig().image_size:
            differ["image_size"] = shape[0]
    except storage.UnreadableFileError as error:
        return {}, [f"settings unreadable: {error}"]
    except (AttributeError, TypeError, IndexError):
        return {}, [f"settings unreadable: {path}: not a training history of this pipeline"]
    return differ, []


def _blessings(store) -> dict:
    """{model id: its newest positive ModelBlessing}."""
    return {run_summary.custom_property(b, metadata_lib.CURRENT_MODEL_ID): b
            for b in sorted(store.get_artifacts_by_type("ModelBlessing"), key=lambda b: b.id)
            if run_summary.custom_property(b, metadata_lib.BLESSED) == 1}


def blessed_model_ids(store) -> set[int]:
    """The ids of the Models an Evaluator blessed."""
    return set(_blessings(store))


def pushed_versions(metadata: str, serving_dir: str | None = None, scoped: bool = False) -> list[PushedVersion]:
    """Every version the pipeline pushed, oldest first, the served one and the damaged ones marked from the files
    in `serving_dir` (default: the folder the newest push names); `scoped` (a deployment's store, which other
    deployments may share): only the pushes into `serving_dir`. A local root's own store is not scoped: its pushes
    are all its own, also after the root was moved or restored elsewhere.
    `metadata`: a local SQLite file's path, or a
    store named as contract.metadata names them (grpc://HOST:PORT, sqlite:///PATH)."""
    if not isinstance(metadata, str):  # an open store
        store = metadata
    else:
        store = (metadata_lib.open_store(metadata, read_only=True) if "://" in metadata
                 else run_summary.open_store(metadata))
    blessings = _blessings(store)
    result, seen = [], set()
    # a local root's own store, read where the root is now; a store deployments share names their own places
    here = posixpath.dirname(str(serving_dir).rstrip("/")) if serving_dir and not scoped else None
    # One record per version: a Pusher that found its model already served records that version again.
    for pushed in sorted(store.get_artifacts_by_type("PushedModel"), key=lambda a: a.id):
        version = run_summary.custom_property(pushed, metadata_lib.PUSHED_VERSION)
        if run_summary.custom_property(pushed, metadata_lib.PUSHED) != 1 or version in seen:
            continue
        # A store shared by deployments (a cluster's metadata service) holds other roots' pushes, whose version
        # numbers repeat this root's.
        if scoped and serving_dir and not metadata_lib.under_root(
                run_summary.custom_property(pushed, metadata_lib.PUSHED_DESTINATION) or "", str(serving_dir)):
            continue
        seen.add(version)
        pusher = _producer(store, pushed.id)
        inputs = _inputs(store, pusher) if pusher is not None else []
        model = next((a for a in inputs if _artifact_type(store, a) == "Model"), None)
        blessing = next((a for a in inputs if _artifact_type(store, a) == "ModelBlessing"), None) or \
            (blessings.get(model.id) if model else None)
        metrics, judged = _metrics_of_blessing(store, blessing, here) if blessing else ({}, None)
        when = datetime.datetime.fromtimestamp(pushed.create_time_since_epoch / 1000, datetime.timezone.utc)
        path = _here(run_summary.custom_property(pushed, metadata_lib.PUSHED_DESTINATION) or "", here)
        agreement, unreadable = _tflite_agreement(path)
        settings, unreadable_settings = _settings(path)
        result.append(PushedVersion(
            version=version,
            path=path,
            pushed_at=when.isoformat(timespec="seconds"),
            model_id=model.id if model else -1,
            model_uri=_here(model.uri, here) if model else "",
            blessed=bool(blessing and run_summary.custom_property(blessing, metadata_lib.BLESSED) == 1),
            spans=_spans_of_model(store, model.id) if model else [],
            metrics=metrics,
            judged_split=judged,
            tflite_agreement=agreement,
            unreadable=unreadable + unreadable_settings,
            settings=settings,
            rolled_back_to=run_summary.custom_property(pushed, metadata_lib.ROLLED_BACK_TO),
            rolled_back_from=run_summary.custom_property(pushed, metadata_lib.ROLLED_BACK_FROM),
            reason=run_summary.custom_property(pushed, metadata_lib.ROLLBACK_REASON) or "",
        ))
    result.sort(key=lambda v: v.version)
    if result:
        check_files(result, str(serving_dir or posixpath.dirname(result[-1].path.rstrip("/"))))
    return result


def check_files(versions: list[PushedVersion], serving_dir: str) -> served_lib.Served:
    """Marks the served version (contract.served: hashes its files) and the versions whose folders are
    incomplete (by names only)."""
    state = served_lib.served(serving_dir)
    complete = set(served_lib.complete_versions(serving_dir))
    for v in versions:
        v.named, v.served = v.version == state.named, v.version == state.version
        if v.named and state.damage:
            v.damage = state.damage
        elif v.version not in complete:
            v.damage = served_lib.damage(posixpath.join(serving_dir, str(v.version)), check_bytes=False)
    return state


def table(versions: list[PushedVersion]) -> str:
    if not versions:
        return "no model has been pushed yet"
    lines = [f"{'version':>7}  {'pushed at (UTC)':<25}{'model':>6}  {'spans':<10}{'accuracy [95% interval]':>26}"
             f"{'auc':>8}{'examples':>9}  blessed  {'tflite f16/int8':<16}path"]
    for v in versions:
        def metric(name):
            return f"{v.metrics[name]:.4f}" if name in v.metrics else "-"
        interval = evaluation.accuracy_interval(v.metrics)
        accuracy = f"{metric('binary_accuracy')} [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "-"
        examples = f"{int(v.metrics['example_count'])} {v.judged_split or ''}".strip() \
            if "example_count" in v.metrics else "-"
        tflite = "/".join(f"{100 * v.tflite_agreement[k]:.1f}%" if k in v.tflite_agreement else "-"
                          for k in ("float16", "int8")) if v.tflite_agreement else "-"
        lines.append(f"{v.version:>7}  {v.pushed_at:<25}{v.model_id:>6}  {','.join(map(str, v.spans)) or '-':<10}"
                     f"{accuracy:>26}{metric('auc'):>8}{examples:>9}  "
                     f"{'yes' if v.blessed else 'no':<7}  {tflite:<16}{shown_name(v.path)}")
    lines += [f"version {v.version}: {line}" for v in versions for line in v.unreadable]
    lines += [f"version {v.version}: trained with "
              + " ".join(config_lib.as_flag(name, value) for name, value in v.settings.items())
              for v in versions if v.settings]
    for v in versions:
        if v.rolled_back_to is not None:
            before = f"version {v.rolled_back_from}" if v.rolled_back_from is not None else "nothing intact"
            lines.append(f"version {v.version}: rollback to version {v.rolled_back_to} ({before} was served)"
                         f"{': ' + shown_name(v.reason) if v.reason else ''}")
    if any(v.judged_split == layout.SELECTION_SPLIT for v in versions):
        lines.append("examples '... eval': scored on the split that also chose the kept epoch (a span without a "
                     "test split): optimistic")
    for v in versions:
        if v.damage:
            lines.append(f"version {v.version}: damaged, {v.damage}: never the baseline, and not rolled back to")
    lines.append(served_line(versions))
    return "\n".join(lines)


def served_line(versions: list[PushedVersion]) -> str:
    served = next((v for v in versions if v.served), None)
    if served is not None:
        return f"served: version {served.version}" + (f" (the model of version {served.rolled_back_to})"
                                                      if served.rolled_back_to is not None else "")
    named = next((v for v in versions if v.named), None)
    if named is not None:
        return (f"served: nothing a server can load: version {named.version}, the one to be served, is damaged; "
                "roll back to an intact version (rollback --to N)")
    return "served: none of the recorded versions (the warnings below say what is)"
