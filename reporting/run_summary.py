"""What happened in a pipeline run, read back from MLMD and the artifacts.

Each node's outcome (executed, cached, failed) and wall time, the eval
metrics of the candidate and its baseline, the blessing with the threshold
that decided it, and the pushed version. Rendered as text for the terminal
and as JSON for scripts.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components import evaluation
from contract import features, layout, storage
from contract import metadata as metadata_lib
from trainer import export
from trainer import hyperparameters as hyperparameters_lib
from trainer.hyperparameter_record import DEFAULTS, TUNED_HERE, HyperparameterRecord, ScheduleNote

_STATES = {
    metadata_store_pb2.Execution.COMPLETE: "executed",
    metadata_store_pb2.Execution.CACHED: "cached",
    metadata_store_pb2.Execution.FAILED: "failed",
    metadata_store_pb2.Execution.RUNNING: "running",
    metadata_store_pb2.Execution.NEW: "new",
    metadata_store_pb2.Execution.CANCELED: "canceled",
}


@dataclasses.dataclass
class NodeRun:
    node_id: str
    state: str
    seconds: float
    execution_id: int
    started: float  # seconds since the epoch


@dataclasses.dataclass
class RunSummary:
    pipeline: str
    run_id: str | None
    nodes: list[NodeRun]
    metrics: dict[str, dict[str, float]]  # model ('candidate'/'baseline') -> metric -> value
    metrics_by_label: dict[str, dict[str, float]]  # label slice -> metric -> value (candidate)
    confusion_matrix: dict[str, float] | None  # tp/fp/tn/fn at threshold 0.5 (candidate)
    blessed: bool | None
    decision: str | None
    pushed_version: int | None
    pushed_path: str | None
    error: str | None = None
    already_served: bool = False  # the Pusher found its model already the newest version and copied nothing
    cleaned: list[str] = dataclasses.field(default_factory=list)  # what the push moved aside or removed first
    ingest: dict[str, Any] | None = None
    beam_args: list[str] = dataclasses.field(default_factory=list)  # what the Beam components ran with
    # artifact type -> URI of this run's outputs (Model, ExampleStatistics, ExampleAnomalies, ModelEvaluation...)
    artifacts: dict[str, str] = dataclasses.field(default_factory=dict)
    tflite: dict[str, Any] | None = None  # the model's tflite_fidelity.json, if it has TFLite models
    # where and how the model trained (from its training history): devices, cached views and their cache
    training: dict[str, Any] | None = None
    # '<type> <uri>' of earlier outputs found gone before this run (marked DELETED in MLMD, not used again)
    missing: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)  # settings the command line chose for the user
    # the split the Evaluator scored: "test", or "eval" for a span without one (which also chose the kept epoch)
    judged_split: str | None = None
    # model -> exact 95% interval [low, high] of its binary_accuracy on the judged split's images
    accuracy_intervals: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    # with a baseline: images only the candidate / only the baseline got right, and McNemar's p-value
    paired: dict[str, float] | None = None
    # the trained model's hyperparameters and where they came from, seen from this run (see hyperparameters_of)
    hyperparameters: HyperparameterRecord | None = None
    # the version a server of the root loads after the run, where the runner looked (a local run): 0 for none
    served_version: int | None = None
    # why nothing a server can load is served after the run (the served version's files deleted or changed), where
    # the runner looked; None: no such problem, or not looked
    served_problem: str | None = None
    # why the Pusher did not push a blessed model (its weights are those of a version a rollback withdrew)
    withheld: str | None = None
    # which pushed version the Evaluator's baseline is ("version 1's model, served as version 5")
    baseline: str | None = None

    @property
    def replaced_since(self) -> bool:
        """The version this run's model was pushed as is no longer the one served (a later push or a rollback since)."""
        return bool(self.served_version) and self.pushed_version is not None and \
            self.served_version != self.pushed_version

    @property
    def evaluation_cached(self) -> bool:
        """A cached Evaluator's blessing is the one given when this model was first judged, against what was served
        then ("no baseline yet", say, for what is now the served model itself)."""
        return any(n.node_id == metadata_lib.EVALUATOR and n.state == "cached" for n in self.nodes)

    @property
    def failed(self) -> bool:
        return self.error is not None or any(n.state == "failed" for n in self.nodes)

    def to_json(self) -> dict:
        chosen = self.hyperparameters.summary_json() if self.hyperparameters is not None else None
        return dataclasses.asdict(self) | {"hyperparameters": chosen, "failed": self.failed}

    def text(self) -> str:
        lines = [f"Pipeline {self.pipeline}, " + (f"run {self.run_id}" if self.run_id is not None else
                                                   "no run recorded in ML Metadata (it stopped before its first step)")]
        if self.ingest:
            counts = self.ingest["counts"]
            said = "none (no source given); trains on the spans there, the newest: span" \
                if self.ingest.get("no_source") else "span"
            lines.append(f"  ingest: {said} {self.ingest['span']}{' (reused)' if self.ingest['reused'] else ''}: "
                         f"{self.ingest['files_seen']} files, " + ", ".join(f"{k} {v}" for k, v in counts.items())
                         + (f", carried from labeled queues {self.ingest['carried']}" if self.ingest.get("carried")
                            else ""))
        if self.beam_args:
            lines.append(f"  beam: {' '.join(self.beam_args)}")
        lines += [f"  note: {note.as_trained(self.hyperparameters) if isinstance(note, ScheduleNote) else note}"
                  for note in self.notes]
        if self.missing:
            lines.append(f"  missing: {len(self.missing)} earlier outputs were gone from disk and were not used "
                         f"(recomputed, or passed over by the resolvers): " + "; ".join(self.missing[:5])
                         + (" ..." if len(self.missing) > 5 else ""))
        lines.append(f"  {'component':<30}{'outcome':<10}{'seconds':>9}")
        lines += [f"  {n.node_id:<30}{n.state:<10}{n.seconds:>9.1f}" for n in self.nodes]
        if self.metrics and self.judged_split:
            lines.append(f"  judged on: {split_words(self.judged_split)}")
        for model, values in self.metrics.items():
            interval = self.accuracy_intervals.get(model)
            shown = ", ".join(f"{k} {_fmt(v)}" + (f" [{interval[0]:.4f}, {interval[1]:.4f}]"
                                                  if k == "binary_accuracy" and interval else "")
                              for k, v in values.items())
            named = f" ({self.baseline})" if model == "baseline" and self.baseline else ""
            lines.append(f"  {model}{named} metrics: {shown}")
        for label, values in self.metrics_by_label.items():
            shown = ", ".join(f"{k} {_fmt(v)}" for k, v in values.items())
            lines.append(f"    {features.named_slice(label)}: {shown}")
        if self.training:
            lines.append(f"  trained on: {training_line(self.training)}")
        if self.hyperparameters:
            lines += hyperparameter_lines(self.hyperparameters)
        if self.tflite:
            shown = ", ".join(f"{kind} {100 * share:.1f}%"
                              for kind, share in export.tflite_agreement(self.tflite).items())
            lines.append(f"  tflite: {shown} of {self.tflite['images']} eval images in the SavedModel's class")
        if self.blessed is not None:
            lines.append(f"  blessed: {'yes' if self.blessed else 'no'} ({self.decision})"
                         + (f" {CACHED_BLESSING}" if self.evaluation_cached else ""))
        pusher_cached = any(n.node_id == metadata_lib.PUSHER and n.state == "cached" for n in self.nodes)
        lines += [f"  serving folder: {line}" for line in self.cleaned]
        if self.pushed_path and (pusher_cached or self.already_served) and self.replaced_since:
            lines.append(f"  pushed: nothing new; version {self.served_version} is served (version "
                         f"{self.pushed_version}, this model's push, was replaced since, by a later push or a "
                         "rollback)")
        elif self.pushed_path and (pusher_cached or self.already_served) and self.served_problem:
            lines.append(f"  pushed: nothing new (this model is version {self.pushed_version}, pushed earlier); "
                         "nothing a server can load is served (below)")
        elif self.pushed_path and (pusher_cached or self.already_served):
            lines.append(f"  pushed: nothing new; version {self.pushed_version} at {self.pushed_path} "
                         "(pushed earlier) is served")
        elif self.pushed_path:
            lines.append(f"  pushed: version {self.pushed_version} at {self.pushed_path}")
        elif self.withheld:
            lines.append(f"  pushed: nothing: {self.withheld}"
                         + (f"; version {self.served_version} stays served" if self.served_version else ""))
        elif self.blessed is not None and self.served_version:
            lines.append(f"  pushed: nothing; version {self.served_version} stays served")
        elif self.blessed is not None and self.served_version == 0:
            lines.append("  pushed: nothing; no model is served yet")
        elif self.blessed is not None:
            lines.append("  pushed: nothing (the served model, if any, is unchanged)")
        if self.error:
            lines.append(f"  FAILED: {self.error}")
        return "\n".join(lines)


def split_words(judged_split: str) -> str:
    """What the figures of a split the Evaluator scored are worth."""
    if judged_split == layout.TEST_SPLIT:
        return ("the test split, images used neither in training nor in choosing the kept epoch "
                "(accuracy with its exact 95% interval)")
    return (f"the {judged_split} split, which also chose the kept epoch: the span has no test split (ingested "
            "before there was one, or by another tool), so these figures are optimistic; ingest again for one")


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4f}"


def open_store(metadata_path: str) -> metadata_store.MetadataStore:
    """A local SQLite store, read-only."""
    return metadata_lib.open_store(metadata_lib.sqlite_store(metadata_path), read_only=True)


def _latest_run_context(store, pipeline_name: str):
    pipeline_contexts = [c for c in store.get_contexts_by_type("pipeline") if c.name == pipeline_name]
    if not pipeline_contexts:
        return None
    pipeline_executions = {e.id for e in store.get_executions_by_context(pipeline_contexts[0].id)}
    runs = []
    for context in store.get_contexts_by_type("pipeline_run"):
        execution_ids = {e.id for e in store.get_executions_by_context(context.id)}
        if execution_ids & pipeline_executions:
            runs.append(context)
    return max(runs, key=lambda c: (c.create_time_since_epoch, c.id), default=None)


def _node_id(store, execution, pipeline_name: str) -> str:
    for context in store.get_contexts_by_execution(execution.id):
        if context.name.startswith(pipeline_name + "."):
            return context.name[len(pipeline_name) + 1:]
    return execution.type


def artifacts_of(store, execution_id: int, event_type=metadata_store_pb2.Event.OUTPUT) -> list:
    """The artifacts an execution produced (or, with Event.INPUT, consumed)."""
    ids = [e.artifact_id for e in store.get_events_by_execution_ids([execution_id]) if e.type == event_type]
    return store.get_artifacts_by_id(ids) if ids else []


def custom_property(artifact, key):
    if key not in artifact.custom_properties:
        return None
    value = artifact.custom_properties[key]
    return value.int_value if value.HasField("int_value") else value.string_value


def pipeline_resolver_nodes() -> frozenset:
    # Resolvers re-emit older artifacts; only the components' own outputs describe this run.
    return metadata_lib.RESOLVER_IDS


def summarize(metadata_path: str, pipeline_name: str, exclude_runs: frozenset[str] = frozenset()) -> RunSummary:
    """The newest run in a local SQLite store, unless it is one of `exclude_runs` (runs that were there
    before this one started: a run that failed before TFX recorded it gets an empty summary, not theirs)."""
    if not os.path.exists(metadata_path):
        return summarize_run(None, pipeline_name)
    return summarize_run(open_store(metadata_path), pipeline_name, exclude_runs=exclude_runs)


def summarize_run(store: metadata_store.MetadataStore | None, pipeline_name: str, run_id: str | None = None,
                  exclude_runs: frozenset[str] = frozenset()) -> RunSummary:
    """Run `run_id` (default: the newest run) of `pipeline_name` in any MLMD store."""
    if store is None:
        run = None
    else:
        run = _latest_run_context(store, pipeline_name) if run_id is None else \
            store.get_context_by_type_and_name("pipeline_run", run_id)
    if run is not None and run.name in exclude_runs:
        run = None
    summary = RunSummary(pipeline=pipeline_name, run_id=run.name if run else None, nodes=[], metrics={},
                         metrics_by_label={}, confusion_matrix=None, blessed=None, decision=None,
                         pushed_version=None, pushed_path=None)
    if run is None:
        return summary
    executions = sorted(store.get_executions_by_context(run.id), key=lambda e: e.id)
    for execution in executions:
        node = _node_id(store, execution, pipeline_name)
        seconds = max(0.0, (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000)
        summary.nodes.append(NodeRun(node, _STATES.get(execution.last_known_state, "unknown"), seconds, execution.id,
                                     execution.create_time_since_epoch / 1000))
        for artifact in artifacts_of(store, execution.id):
            artifact_type = store.get_artifact_types_by_id([artifact.type_id])[0].name
            if node not in pipeline_resolver_nodes():
                summary.artifacts.setdefault(artifact_type, artifact.uri)
            if artifact_type == "ModelEvaluation":
                summary.metrics, summary.metrics_by_label, summary.confusion_matrix = \
                    evaluation.read_metrics(artifact.uri)
                summary.paired = evaluation.read_paired(artifact.uri)
                summary.accuracy_intervals = {model: list(interval) for model, values in summary.metrics.items()
                                              if (interval := evaluation.accuracy_interval(values))}
                summary.judged_split = judged_split(store, execution.id)
                summary.baseline = baseline_words(store, execution.id)
                evaluation_uri = artifact.uri
            elif artifact_type == "ModelBlessing":
                summary.blessed = custom_property(artifact, metadata_lib.BLESSED) == 1
            elif artifact_type == "PushedModel" and custom_property(artifact, metadata_lib.PUSHED) == 1:
                summary.pushed_version = custom_property(artifact, metadata_lib.PUSHED_VERSION)
                summary.pushed_path = custom_property(artifact, metadata_lib.PUSHED_DESTINATION)
                summary.already_served = custom_property(artifact, metadata_lib.ALREADY_SERVED) == 1
                summary.cleaned = (custom_property(artifact, metadata_lib.PUSH_CLEANED) or "").splitlines()
            elif artifact_type == "PushedModel":
                summary.withheld = custom_property(artifact, metadata_lib.PUSH_WITHHELD) or None
    if summary.blessed is not None and summary.metrics:
        summary.decision = evaluation.decision(evaluation_uri, summary.blessed)
    history = None
    if "Model" in summary.artifacts:
        serving_dir = layout.serving_model_dir(summary.artifacts["Model"])
        summary.tflite = _readable(summary, export.read_tflite_fidelity, serving_dir)
        history = _readable(summary, export.read_training_history, serving_dir)
        summary.training = export.training_record(history)
    summary.hyperparameters = hyperparameters_of(history, summary.run_id,
                                                 searched=any(n.node_id == metadata_lib.TUNER for n in summary.nodes))
    return summary


CACHED_BLESSING = "when this model was first evaluated (cached)"


def _readable(summary: RunSummary, read, serving_dir: str):
    """What `read` reads of the model's folder; None for a damaged file, which the summary's notes name."""
    try:
        return read(serving_dir)
    except storage.UnreadableFileError as error:
        summary.notes.append(f"unreadable: {error}")
        return None


def hyperparameters_of(history: dict | None, run_id: str | None, searched: bool = False
                       ) -> HyperparameterRecord | None:
    """The Trainer's record of its hyperparameters in its training `history`, seen from run `run_id` (which has a
    Tuner: `searched`); None for a history without one. See HyperparameterRecord.origin for tuned here, reused or
    the defaults."""
    record = HyperparameterRecord.from_history(history)
    return None if record is None else record.seen_from(run_id, searched)


def _values(values: dict) -> str:
    return ", ".join(f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"
                     for name, value in values.items())


def hyperparameter_lines(chosen: HyperparameterRecord) -> list[str]:
    """The summary's lines of the hyperparameters: their source, then the trial table when tuned here (a reused
    search's run has the table in its own summary)."""
    if chosen.origin == DEFAULTS:
        why = chosen.not_applied or "no search recorded for this pipeline"
        return [f"  hyperparameters: the settings as configured ({why}; run --tune to search)"]
    here = chosen.origin == TUNED_HERE
    where = "tuned in this run" if here else f"reused from run {chosen.run}"
    if chosen.cached:  # the Tuner's outcome was cached: no trial ran in this run
        where = f"the search of run {chosen.run}, cached (same data, settings and code: no trial ran in this run)"
    shown = _values(chosen.values) or "none applied (each searched setting was given as a flag)"
    lines = [f"  hyperparameters: {where}: {shown}" + "".join(f"; {why}" for why in chosen.caveats)]
    stopped = hyperparameters_lib.budget_words(chosen.budget) if here else None
    lines += [f"    {stopped}"] if stopped else []
    for row in (chosen.trials or ()) if here else ():
        if row.get("status") == "completed":
            figures = f"val_loss {_fmt(row['val_loss'])}" + (
                f", val_accuracy {_fmt(row['val_accuracy'])}" if row.get("val_accuracy") is not None else "")
        else:
            figures = f"FAILED: {row.get('reason')}"
        lines.append(f"    trial {row['trial']}{' (kept)' if row.get('kept') else ''}: {figures}; "
                     f"{_values(row['values'])}")
    return lines


def baseline_words(store, evaluator_execution_id: int) -> str | None:
    """Which pushed version the Evaluator's baseline model is: "version 1's model" (", served as version 5" when a
    rollback pushed it again); None without a baseline, or for one no push of the store names."""
    ids = [event.artifact_id for event in store.get_events_by_execution_ids([evaluator_execution_id])
           if event.type == metadata_store_pb2.Event.INPUT and event.path.steps
           and event.path.steps[0].key == "baseline_model"]
    if not ids:
        return None
    versions = sorted({version for pushed in store.get_artifacts_by_type("PushedModel")
                       if custom_property(pushed, metadata_lib.PUSHED) == 1
                       and custom_property(pushed, metadata_lib.PUSHED_MODEL_ID) == ids[0]
                       and isinstance(version := custom_property(pushed, metadata_lib.PUSHED_VERSION), int)})
    if not versions:
        return None
    return f"version {versions[0]}'s model" + (f", served as version {versions[-1]}" if len(versions) > 1 else "")


def judged_split(store, evaluator_execution_id: int) -> str | None:
    """The split the Evaluator of this execution scored, from the splits of the examples it read."""
    from tfx.types import artifact_utils

    for artifact in artifacts_of(store, evaluator_execution_id, metadata_store_pb2.Event.INPUT):
        names = artifact.properties["split_names"].string_value if "split_names" in artifact.properties else None
        if names:  # the Examples (split_names is a property of that type)
            return layout.judged_split(artifact_utils.decode_split_names(names))
    return None


def training_line(training: dict) -> str:
    """'CPU:0; cached views 6 (44 MiB in memory, filled in 9.6 s)'."""
    shown = ", ".join(device.rsplit("device:", 1)[-1] for device in training.get("devices") or ["unrecorded"])
    cache = training.get("cache")
    if cache:
        where = "in memory" if cache["location"] == "memory" else f"in files under {cache['location']}"
        asked = training.get("cached_views")
        fewer = "" if asked in (None, cache["views"]) else f" of {asked}"
        read = "" if not fewer else "as many as the epochs read; "
        return (f"{shown}; cached views {cache['views']}{fewer} ({read}{cache['bytes'] / 2**20:.0f} MiB {where}, "
                f"filled in {cache['fill_seconds']:.1f} s)")
    return f"{shown}; every epoch augmented (no cached views)"


def write_json(summary: RunSummary, path: str) -> None:
    """Writes the summary to `path` (a local path or a URI) whole or not at all: never a half-written summary."""
    from contract import storage

    storage.backend.write(path, json.dumps(summary.to_json(), indent=2).encode())
