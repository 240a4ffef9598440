"""The run report's sections: each function returns its part of the page (templates/report.html.j2's context).

A section that draws figures draws them into the report's folder (reporting.report_figures) and names them
under "figures"; everything is read from the run's summary and artifacts.
"""

from __future__ import annotations

import pathlib

import keras

from components.anomalies_gate import ANOMALIES_FILE, SIZE_FEATURES, STATISTICS_FILE, describe_anomalies
from contract import features, layout, storage
from contract import metadata as metadata_lib
from contract.layout import RunLayout
from ingest import span_report, system_files
from reporting import report_figures
from reporting.markdown_links import render_untrusted_markdown
from reporting.run_summary import CACHED_BLESSING, RunSummary, split_words, training_line
from trainer import export
from trainer import hyperparameters as hyperparameters_lib
from trainer import model as model_lib
from trainer.hyperparameter_record import DEFAULTS, REUSED, TUNED_HERE, HyperparameterRecord

# The card's sections that repeat what the report shows in its own sections (the card is read alone, beside a
# served model): the report leaves them out of its copy, and says which.
CARD_SECTIONS_SHOWN = ("Training", "Evaluation", "Blessing", "TFLite models")


def serving_dir(model_uri: str) -> pathlib.Path:
    return pathlib.Path(layout.serving_model_dir(model_uri))


def _pushed_anew(summary: RunSummary) -> bool:
    """Whether the run pushed a version: a cached push, or a model already served, is an earlier run's push
    (run_summary.RunSummary.text says `pushed: nothing new` for both)."""
    pusher_cached = any(n.node_id == metadata_lib.PUSHER and n.state == "cached" for n in summary.nodes)
    return bool(summary.pushed_path) and not (pusher_cached or summary.already_served)


def outcome(summary: RunSummary) -> dict:
    """The top of the page (failure, blessing, what was pushed) and the components' table."""
    return {"summary": summary, "pushed_anew": _pushed_anew(summary),
            "components": [[n.node_id, n.state, f"{n.seconds:.1f}"] for n in summary.nodes]}


def evaluation(summary: RunSummary, folder: pathlib.Path) -> dict:
    """The metrics against the baseline, overall and by label, and the confusion matrix."""
    metric_names = sorted({k for values in summary.metrics.values() for k in values})
    intervals = summary.accuracy_intervals

    def shown(model, name, value):
        interval = intervals.get(model) if name == "binary_accuracy" else None
        return f"{value:.4f} [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else value

    part = {"metric_names": metric_names,
            "metric_rows": [[f"{model} ({summary.baseline})" if model == "baseline" and summary.baseline else model]
                            + [shown(model, n, values[n]) if n in values else "" for n in metric_names]
                            for model, values in summary.metrics.items()],
            "judged_on": split_words(summary.judged_split) if summary.judged_split else None,
            "label_metric_names": list(next(iter(summary.metrics_by_label.values()), {})),
            "label_rows": [[features.named_slice(label)] + list(values.values())
                           for label, values in summary.metrics_by_label.items()],
            "figures": {}}
    if summary.blessed is not None and summary.confusion_matrix:
        report_figures.confusion_matrix(summary.confusion_matrix, folder / "confusion_matrix.png",
                                        summary.judged_split or "test")
        part["figures"]["confusion_matrix"] = "confusion_matrix.png"
    return part


def hyperparameters_page(chosen: HyperparameterRecord | None) -> dict | None:
    """The report's hyperparameters section: where they came from in words, the values, the trial table (when
    tuned in this run: a reused search's run shows it)."""
    if chosen is None:
        return None
    why = chosen.not_applied or "no hyperparameter search is recorded for this pipeline"
    words = {DEFAULTS: f"The settings as configured: {why} (run --tune to search).",
             TUNED_HERE: (f"The search of run {chosen.run}, cached (no trial ran in this run)" if chosen.cached
                          else "Tuned in this run") + ", chosen on the eval split's loss; the test split took no part.",
             REUSED: f"Reused from the search of run {chosen.run} (no search in this run)."}[chosen.origin]
    here = chosen.origin == TUNED_HERE
    rows = [[row["trial"] + (" (kept)" if row.get("kept") else ""), row.get("status"), row.get("val_loss", ""),
             row.get("val_accuracy") if row.get("val_accuracy") is not None else "",
             ", ".join(f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"
                       for name, value in row.get("values", {}).items()), row.get("reason", "")]
            for row in ((chosen.trials or ()) if here else ())]
    stopped = hyperparameters_lib.budget_words(chosen.budget) if here else None
    words += f" {stopped}." if stopped else ""
    if chosen.origin != DEFAULTS:
        words += "".join(f" {why[0].upper()}{why[1:]}." for why in chosen.caveats)
    values = dict(chosen.values) if chosen.origin != DEFAULTS else {}
    return {"source_words": words, "values": values, "fixed": list(chosen.fixed), "trial_rows": rows}


def training(summary: RunSummary, folder: pathlib.Path, training_config: dict) -> dict:
    """The training curves, what it trained on, its hyperparameters, the model's diagram, its TFLite models and
    sample predictions on eval images."""
    part = {"history": None, "trained_on": None, "tflite": None, "samples": [], "figures": {},
            "hyperparameters": hyperparameters_page(summary.hyperparameters)}
    model_uri = summary.artifacts.get("Model")
    if not model_uri:
        return part
    figures = part["figures"]
    try:  # a damaged history is named in the summary's notes (reporting.run_summary)
        part["history"] = export.read_training_history(str(serving_dir(model_uri)))
    except storage.UnreadableFileError:
        part["history"] = None
    if part["history"] is not None:
        part["trained_on"] = training_line(summary.training) if summary.training else None
        report_figures.training_curves(part["history"], folder / "training_curves.png")
        figures["training_curves"] = "training_curves.png"
    # The training record describes the model; one written before it did is described from the model itself.
    description = (part["history"] or {}).get("model") or model_lib.describe(
        keras.models.load_model(serving_dir(model_uri) / layout.KERAS_MODEL_FILE, compile=False))
    # The settings the model trained with, where recorded (a search's values laid on the configured ones).
    report_figures.model_diagram(description, (summary.training or {}).get("settings") or training_config,
                                 folder / "model.png")
    figures["model"] = "model.png"
    if summary.tflite:
        part["tflite"] = summary.tflite
        part["tflite_rows"] = [[kind, f"{v['bytes'] / 2 ** 20:.1f} MiB", f"{100 * v['agreement']:.1f}%",
                                v["logit_error_mean"], v["logit_error_rms"], v["logit_error_max"]]
                               for kind, v in summary.tflite["models"].items()]
    if summary.artifacts.get("Examples"):
        part["samples"] = report_figures.sample_predictions(serving_dir(model_uri), summary.artifacts["Examples"],
                                                            folder / "sample_predictions.png")
        part["samples_right"] = sum(s["actual"] == s["predicted"] for s in part["samples"])
        figures["sample_predictions"] = "sample_predictions.png"
    return part


def card_sections_not_shown(card: str) -> tuple[str, list[str]]:
    """The card's Markdown without the `## ` sections the report shows itself; and those sections' titles."""
    kept, left_out, skipping = [], [], False
    for line in card.splitlines():
        if line.startswith("## "):
            skipping = line[3:].strip() in CARD_SECTIONS_SHOWN
            if skipping:
                left_out.append(line[3:].strip())
        if not skipping:
            kept.append(line)
    return "\n".join(kept) + "\n", left_out


def model_card(summary: RunSummary) -> dict:
    """The pushed version's model card for the page: its sections the page does not show itself, and the
    titles of those it left out."""
    card = pathlib.Path(summary.pushed_path or "", layout.MODEL_CARD_FILE)
    if not (summary.pushed_path and card.is_file()):
        return {"model_card": None, "model_card_shown": []}
    # The card is Markdown the pusher wrote; text from outside (file names, sources) is escaped first.
    text, shown = card_sections_not_shown(card.read_text())
    return {"model_card": render_untrusted_markdown(text), "model_card_shown": shown}


def _image_sizes(statistics_uri: str) -> dict:
    from tensorflow_metadata.proto.v0 import statistics_pb2

    sizes = {}
    for split, stats in report_figures.split_protos(statistics_uri, STATISTICS_FILE,
                                                    statistics_pb2.DatasetFeatureStatisticsList).items():
        for feature in stats.datasets[0].features:
            name = feature.path.step[0] if feature.path.step else feature.name
            if name in SIZE_FEATURES:
                sizes[f"{split} {name}"] = {"min": feature.num_stats.min, "mean": feature.num_stats.mean,
                                            "max": feature.num_stats.max}
    return sizes


def _statistics_page(statistics_uri: str, path: pathlib.Path) -> bool:
    """TFDV's own interactive page (train against eval); it loads Facets from the web when opened."""
    from tensorflow_data_validation.utils import display_util
    from tensorflow_metadata.proto.v0 import statistics_pb2

    lists = report_figures.split_protos(statistics_uri, STATISTICS_FILE, statistics_pb2.DatasetFeatureStatisticsList)
    if "train" not in lists:
        return False
    page = display_util.get_statistics_html(lists["train"], lists.get("eval"), lhs_name="train", rhs_name="eval")
    path.write_text(f"<!doctype html><html><body>{page}</body></html>")
    return True


def _anomalies(anomalies_uri: str) -> list[str]:
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    return describe_anomalies(report_figures.split_protos(anomalies_uri, ANOMALIES_FILE, anomalies_pb2.Anomalies))


def data(summary: RunSummary, folder: pathlib.Path, ingest_report: dict | None) -> dict:
    """The span's ingest outcomes, its statistics (figures, missing values, image sizes, TFDV's own page beside
    the report), its anomalies and the data gate's failure, if it stopped the run."""
    part = {"ingest": ingest_report, "image_sizes": [], "statistics_page": None, "anomalies": None, "figures": {}}
    if ingest_report:
        part["example_counts"] = list({**ingest_report["examples_per_label"],
                                       **ingest_report["examples_per_split"]}.items())
        part["quarantined"] = [[q["file"], q["reason"]] for q in ingest_report["quarantined"][:200]]
        part["outcome_counts"] = list(span_report.shown_counts(ingest_report).items())
        part["carried"] = [[entry["span"], entry["examples"]] for entry in ingest_report.get("carried", [])
                           if isinstance(entry, dict) and isinstance(entry.get("examples"), int)]
        passed_over = ingest_report.get("passed_over")
        part["passed_over"] = system_files.passed_over_phrase(passed_over) if isinstance(passed_over, list) \
            and passed_over else None
    statistics = summary.artifacts.get("ExampleStatistics")
    if statistics:
        part["image_sizes"] = [[k, v["min"], v["mean"], v["max"]] for k, v in _image_sizes(statistics).items()]
        missing = report_figures.statistics_figures(statistics, folder / "statistics.png")
        if missing is not None:
            part["figures"]["statistics"] = "statistics.png"
            part["splits"], part["missing_rows"] = missing
        # Beside the report, not in it: everything in the report folder works offline.
        tfdv_page = pathlib.Path(RunLayout(folder.parent).tfdv_statistics_page)
        if _statistics_page(statistics, tfdv_page):
            part["statistics_page"] = f"../{tfdv_page.name}"
    if summary.artifacts.get("ExampleAnomalies"):
        part["anomalies"] = _anomalies(summary.artifacts["ExampleAnomalies"])
    # The data gate's message lists what it found: it belongs with the data.
    gate_failed = any(n.node_id == metadata_lib.ANOMALIES_GATE and n.state == "failed" for n in summary.nodes)
    part["data_gate_error"] = summary.error if gate_failed else None
    return part


def page(summary: RunSummary, folder: pathlib.Path, training_config: dict, ingest_report: dict | None) -> dict:
    """The whole page's context, section by section, its figures drawn into `folder`."""
    figures: dict[str, str | None] = dict.fromkeys(
        ("confusion_matrix", "training_curves", "model", "sample_predictions", "statistics"))
    context = {}
    for part in (outcome(summary), model_card(summary), evaluation(summary, folder),
                 training(summary, folder, training_config), data(summary, folder, ingest_report)):
        figures.update(part.pop("figures", {}))
        context |= part
    return context | {"figures": figures, "cached_blessing": CACHED_BLESSING}

