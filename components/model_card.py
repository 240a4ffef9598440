"""The model card shipped with each pushed version (contract.layout.MODEL_CARD_FILE).

What someone serving or reviewing the model needs to know, written by the
ServingPusher from the run's own artifacts: intended use, the data it was
trained on (spans, ingest outcomes, class balance), the training settings and
epochs, the eval metrics overall and per label against the baseline, the
blessing thresholds and decision, the TFLite models' agreement, and its known
limits. gather() reads the artifacts; render() is a pure function of them.
"""

from __future__ import annotations

import dataclasses
import os
import re

from absl import logging
from tensorflow_model_analysis.writers import eval_config_writer

from components import evaluation
from config import MOBILENET_V2_BLOCKS, WEIGHTS_IMAGENET, WEIGHTS_NONE, base_description
from contract import features, layout, storage
from ingest import span_report
from trainer import export
from trainer import hyperparameters as hyperparameters_lib
from trainer.hyperparameter_record import HyperparameterRecord


@dataclasses.dataclass
class CardFacts:
    pipeline: str
    model_uri: str
    training: dict  # config.TrainingConfig as a dict
    history: dict | None  # layout.TRAINING_HISTORY_FILE
    spans: list[dict]  # the ingest reports of the spans trained on (None-free)
    metrics: dict[str, dict[str, float]]  # "candidate"/"baseline" -> metric -> value
    by_label: dict[str, dict[str, float]]  # "label=0" -> metric -> value
    thresholds: list[str]
    decision: str
    tflite: dict | None  # layout.TFLITE_FIDELITY_FILE
    judged_split: str | None = None  # the split the metrics are of (contract.layout.judged_split)
    served_as: str | None = None  # the version folder the card ships in, as the serving root names it: serving_model/3


def gather(pipeline: str, model_uri: str, model_dir: str, evaluation_uri: str | None, span_numbers: list[int],
           examples_root: str, training: dict, judged_split: str | None = None) -> CardFacts:
    """The facts of a card, from the model folder, the Evaluator's output and the spans' ingest reports."""
    def read_json(read):
        try:
            return read(model_dir)
        except storage.UnreadableFileError as error:  # the card says less; the push goes on
            logging.warning("model card: %s", error)
            return None

    metrics, by_label, thresholds, decision = {}, {}, [], "not evaluated"
    if evaluation_uri:
        metrics, by_label, _ = evaluation.read_metrics(evaluation_uri)
        thresholds = evaluation.threshold_words(eval_config_writer.load_eval_run(evaluation_uri)[0])
        decision = evaluation.decision(evaluation_uri, blessed=True)
    reports = [span_report.load_report(examples_root, n) for n in sorted(set(span_numbers))] if examples_root else []
    history = read_json(export.read_training_history)
    # The settings the model trained with (a search's values laid on the configured ones), where recorded.
    training = (history or {}).get("settings") or training
    return CardFacts(pipeline=pipeline, model_uri=model_uri, training=training, history=history,
                     spans=[r.to_json() for r in reports if r is not None], metrics=metrics, by_label=by_label,
                     thresholds=thresholds, decision=decision, tflite=read_json(export.read_tflite_fidelity),
                     judged_split=judged_split)


def _table(header: list[str], rows: list[list]) -> list[str]:
    def cell(value):
        if isinstance(value, float):
            return str(int(value)) if value.is_integer() else f"{value:.4f}"
        return str(value).replace("|", "\\|")
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)] + \
        ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def _label(slice_name: str) -> str:
    """'label=1' -> 'dog'."""
    value = slice_name.partition("=")[2]
    if not re.fullmatch(r"[0-9]+", value):  # ASCII digits: '²'.isdigit() holds and int('²') raises
        return slice_name
    return features.LABEL_NAMES[int(value)] if int(value) < len(features.LABEL_NAMES) \
        else slice_name


def _weights(training: dict) -> str:
    weights = training.get("weights")
    if weights == WEIGHTS_NONE:
        return "random initialization (no pretrained weights)"
    if weights == WEIGHTS_IMAGENET:
        return "ImageNet weights"
    return f"weights from {os.path.basename(str(weights))}"


def served_again(card: str, served_as: str, to_version: int, model_uri: str | None = None) -> str:
    """A card a rollback copies to a new version: its opening line names that version, a rollback to `to_version`,
    and the model where it is now (`model_uri`: a root moved or copied since its push holds it elsewhere); the rest
    describes the same model, as pushed then."""
    lines = card.split("\n")
    for index, line in enumerate(lines[:6]):
        if line.startswith(("Version `", "A copy of the Trainer's output")):
            rest = line[line.index("copy of the Trainer's output"):]
            if model_uri and rest.count("`") >= 2:  # none known (a root copied without it): as pushed
                named = rest[rest.index("`"):rest.index("`", rest.index("`") + 1) + 1]
                rest = rest.replace(named, f"`{model_uri}`", 1)
            lines[index] = f"Version `{served_as}` (a rollback to version {to_version}), a {rest}"
            break
    return "\n".join(lines)


def _base(training: dict) -> str:
    blocks = training.get("base_blocks", MOBILENET_V2_BLOCKS)
    return "MobileNetV2" if blocks == MOBILENET_V2_BLOCKS else base_description(blocks)


def render(facts: CardFacts) -> str:
    """The card as Markdown."""
    where = f"Version `{facts.served_as}`, a" if facts.served_as else "A"  # the folder it is read in first
    lines = [f"# Model card: {facts.pipeline}", "", f"{where} copy of the Trainer's output `{facts.model_uri}` (its "
             "Model artifact in ML Metadata). This card ships in the version's `assets.extra/`.", ""]
    lines += ["## Intended use", "",
              f"Tells whether a photo shows a cat or a dog: {_base(facts.training)} with a small classification "
              f"head, from {_weights(facts.training)}, alpha {facts.training.get('alpha')}. Send encoded images (JPEG, "
              f"PNG, GIF or BMP bytes) to the `{features.SERVING_SIGNATURE}` signature as "
              f"`{features.IMAGE_INPUT}`; it returns `{features.PROBABILITY_OUTPUT}` (0.5 or more: "
              f"{features.POSITIVE_LABEL}), `{features.CLASS_OUTPUT}`, and per image `{features.VALID_OUTPUT}` "
              f"and `{features.ERROR_OUTPUT}`. Not for images that show neither a cat nor a dog (they are still "
              "called one of the two), several animals at once, or anything about a particular animal.", ""]

    lines += ["## Data", ""]
    if facts.spans:
        rows = []
        for report in facts.spans:
            counts, per_label, per_split = report["counts"], report["examples_per_label"], report["examples_per_split"]
            rows.append([report["span"], report["source"], report["files_seen"], counts.get("accepted", 0),
                         counts.get("normalized", 0), counts.get("duplicate", 0), counts.get("quarantined", 0),
                         sum(entry.get("examples", 0) for entry in report.get("carried", [])),
                         *(per_label.get(name, 0) for name in features.LABEL_NAMES),
                         *(per_split.get(split, 0) for split in layout.SPLITS)])
        lines += _table(["span", "source", "files", "accepted", "normalized", "duplicate", "quarantined",
                         "carried", *features.LABEL_NAMES, *layout.SPLITS], rows)
        lines += ["", f"Quarantined files are listed with their reasons in each span's `{layout.INGEST_REPORT}`; "
                  "carried: images of earlier labeled queues the span holds, counted in the labels and splits.", ""]
    else:
        lines += ["The spans' ingest reports were not found (spans written by another tool).", ""]

    lines += ["## Training", ""]
    lines += _table(["setting", "value"], [[name, value] for name, value in sorted(facts.training.items())])
    history = facts.history
    if history and history.get("epochs"):
        kept = history.get("best_epoch")
        lines += ["", f"{len(history['epochs'])} epochs run; fine-tuning started after epoch "
                      f"{history.get('fine_tune_start_epoch')}" + (
                          f"; weights kept from epoch {kept + 1} (lowest loss on the eval split, "
                          f"{history['best_val_loss']:.4f})"
                          if kept is not None else "") + "."]
    lines.append("")
    lines += _hyperparameters(HyperparameterRecord.from_history(history))

    lines += ["## Evaluation", ""]
    if facts.metrics:
        if facts.judged_split:
            lines += [f"Scored on the {facts.judged_split} split" + (
                ": images used neither in training nor in choosing the kept epoch." if
                facts.judged_split == layout.TEST_SPLIT else ", which also chose the kept epoch (the span has no "
                "test split): these figures are optimistic."), ""]
        names = [m for m in evaluation.METRICS if any(m in values for values in facts.metrics.values())]

        def cell(values, name):
            interval = evaluation.accuracy_interval(values) if name == "binary_accuracy" else None
            value = values.get(name, "-")
            return f"{value:.4f} [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else value

        lines += _table(["metric", *facts.metrics], [[name, *(cell(values, name) for values in
                                                              facts.metrics.values())] for name in names])
        if facts.by_label:
            lines += ["", "By label (the candidate):", ""]
            lines += _table(["label", f"{facts.judged_split or layout.SELECTION_SPLIT} images", "accuracy"],
                            [[_label(name), values.get("example_count", "-"), values.get("binary_accuracy", "-")]
                             for name, values in facts.by_label.items()])
    else:
        lines.append("No evaluation was recorded.")
    lines += ["", "## Blessing", "", "Thresholds: " + ("; ".join(facts.thresholds) or "none") + ".",
              "", f"Decision: {facts.decision}.", ""]

    if facts.tflite:
        lines += ["## TFLite models", ""]
        lines += _table(["model", "same class as the SavedModel", "size (MiB)"],
                        [[kind, f"{100 * v['agreement']:.1f}% of {facts.tflite['images']} eval images",
                          f"{v['bytes'] / 2 ** 20:.1f}"] for kind, v in facts.tflite["models"].items()])
        lines.append("")

    lines += ["## Known limits", ""] + [f"- {limit}" for limit in _limits(facts)]
    return "\n".join(lines) + "\n"


def _hyperparameters(record: HyperparameterRecord | None) -> list[str]:
    """Where the training settings' hyperparameters came from, and the search's trials (the Trainer's record, read
    from its training history)."""
    if record is None:
        return []
    lines = ["### Hyperparameters", ""]
    fixed = f" Set by the user, never searched: {', '.join(record.fixed)}." if record.fixed else ""
    fixed += "".join(f" {why[0].upper()}{why[1:]}." for why in record.left_out)
    if not record.searched:
        why = record.not_applied or "no hyperparameter search was recorded for this pipeline"
        return lines + [f"The settings as configured: {why}.{fixed}", ""]
    stopped = hyperparameters_lib.budget_words(record.budget)
    fixed += f" {stopped}." if stopped else ""
    cold = record.cold_trials
    fixed += f" {cold[0].upper()}{cold[1:]}." if cold else ""
    trials = record.trials or ()
    chosen = ", ".join(f"{name} {value}" for name, value in record.values.items())
    lines += [f"The best of {len(trials)} trials of the hyperparameter search of run {record.run}, chosen on "
              f"the eval split's loss (the test split took no part): {chosen}.{fixed}", ""]
    rows = [[row["trial"] + (" (kept)" if row.get("kept") else ""), row.get("status"), row.get("val_loss", "-"),
             row.get("val_accuracy", "-") if row.get("val_accuracy") is not None else "-",
             ", ".join(f"{name} {value}" for name, value in row.get("values", {}).items()),
             row.get("reason", "")] for row in trials]
    return lines + _table(["trial", "status", "val_loss", "val_accuracy", "settings", "why it failed"], rows) + [""]


def _limits(facts: CardFacts) -> list[str]:
    limits = []
    candidate = facts.metrics.get("candidate", {})
    interval = evaluation.accuracy_interval(candidate)
    if interval:
        accuracy, count = candidate["binary_accuracy"], int(candidate["example_count"])
        split = facts.judged_split or layout.SELECTION_SPLIT
        limits.append(f"Evaluated on {count} {split} images: its accuracy of {accuracy:.4f} is known only to lie "
                      f"within [{interval[0]:.4f}, {interval[1]:.4f}] (exact 95% interval).")
    if facts.training.get("weights") == WEIGHTS_NONE:
        limits.append("Trained from random weights: it knows only what these images show; expect it to do worse "
                      "than an ImageNet-initialized model on photos unlike them.")
    label_counts = [sum(r["examples_per_label"].get(name, 0) for r in facts.spans) for name in features.LABEL_NAMES]
    if facts.spans and min(label_counts) > 0:
        ratio = max(label_counts) / min(label_counts)
        if ratio > 1.5:
            shown = ", ".join(f"{name} {count}" for name, count in zip(features.LABEL_NAMES, label_counts))
            limits.append(f"The training data is unbalanced ({shown}): the smaller class is more often missed.")
    spans = ", ".join(str(r["span"]) for r in facts.spans) or "unknown"
    limits.append(f"Trained and evaluated on span(s) {spans} only: images from other cameras, lighting or breeds "
                  "may be classified worse than these figures say.")
    return limits
