"""The run report: one HTML page (templates/report.html.j2) with PNG figures, viewable offline.

Training curves of both phases (fine-tune start marked), the confusion matrix
and the metrics against the baseline with the blessing decision, a data
summary (ingest outcomes, class balance, image sizes, anomalies, and TFDV's
own statistics page), a diagram of the model, and sample predictions of the
candidate on eval images. Everything is read from the run's artifacts.
"""

from __future__ import annotations

import html
import os
import pathlib
import posixpath
import shutil
import urllib.parse
import xml.etree.ElementTree as ElementTree

import jinja2
import markdown
import markupsafe
import matplotlib

matplotlib.use("Agg")  # files only, no display
import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import tensorflow as tf  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from components.anomalies_gate import (  # noqa: E402
    ANOMALIES_FILE,
    SIZE_FEATURES,
    STATISTICS_FILE,
    class_counts,
    describe_anomalies,
)
from contract import features, layout, storage  # noqa: E402
from contract import metadata as metadata_lib  # noqa: E402
from contract.layout import RunLayout  # noqa: E402
from inference import contact_sheet  # noqa: E402
from inference.predict import Prediction  # noqa: E402
from pipeline.pipeline import ANOMALIES_GATE  # noqa: E402
from reporting.run_summary import DEFAULTS, REUSED, TUNED_HERE, RunSummary, split_words, training_line  # noqa: E402
from trainer import export  # noqa: E402
from trainer import hyperparameters as hyperparameters_lib  # noqa: E402
from trainer import model as model_lib  # noqa: E402

_SAMPLES = 15
_TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(pathlib.Path(__file__).parent / "templates"),
                                autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                                lstrip_blocks=True)


def safe_link(url: str) -> bool:
    """Whether the report may render `url` as a link: http(s) with a host, or a relative path that stays inside
    the report's folder. Not javascript:, data:, file:, an absolute path or one that climbs out with `..`."""
    if any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in url):
        return False  # browsers drop some of these before reading the scheme: "java\tscript:" is javascript:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme:
        return parsed.scheme.lower() in ("http", "https") and bool(parsed.netloc)
    if parsed.netloc or url.startswith("/") or "\\" in url:
        return False
    if ":" in parsed.path.split("/")[0]:
        return False  # read as a scheme by some parsers
    return not posixpath.normpath(parsed.path or ".").startswith("..")


class _LinkGuard(markdown.treeprocessors.Treeprocessor):
    """Turns every link or image whose address safe_link refuses into its plain text: text in a card comes from
    whoever named the source or weights (a Kubeflow run's submitter, say)."""

    def run(self, root):
        for element in root.iter():
            for child in list(element):
                attribute = {"a": "href", "img": "src"}.get(child.tag)
                if attribute is None or safe_link(child.get(attribute, "")):
                    continue
                text = ElementTree.Element("span")
                text.text = (child.get("alt", "") if child.tag == "img" else "".join(child.itertext()))
                text.tail = child.tail
                element.insert(list(element).index(child), text)
                element.remove(child)


class _LinkGuardExtension(markdown.Extension):
    def extendMarkdown(self, md):
        md.treeprocessors.register(_LinkGuard(md), "link_guard", 0)  # last, after every inline pattern


# The card's sections that repeat what the report shows in its own sections (the card is read alone, beside a
# served model): the report leaves them out of its copy, and says which.
CARD_SECTIONS_SHOWN = ("Training", "Evaluation", "Blessing", "TFLite models")


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


def render_untrusted_markdown(text: str) -> markupsafe.Markup:
    """Markdown from outside (the model card) as HTML: its own HTML escaped, only safe links kept."""
    return markupsafe.Markup(markdown.markdown(html.escape(text, quote=False),
                                               extensions=["tables", _LinkGuardExtension()]))


def _serving_dir(model_uri: str) -> pathlib.Path:
    return pathlib.Path(layout.serving_model_dir(model_uri))


def training_curves(history: dict, path: pathlib.Path) -> None:
    epochs = [e["epoch"] + 1 for e in history["epochs"]]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, metric, title in ((axes[0], "accuracy", "Accuracy"), (axes[1], "loss", "Loss (binary cross-entropy)")):
        axis.plot(epochs, [e.get(metric) for e in history["epochs"]], "o-", label="train")
        axis.plot(epochs, [e.get("val_" + metric) for e in history["epochs"]], "o-", label="eval")
        if history.get("fine_tune_start_epoch") is not None:
            axis.axvline(history["fine_tune_start_epoch"] + 0.5, color="gray", linestyle="--",
                         label="fine-tuning starts")
        if history.get("best_epoch") is not None:
            axis.axvline(history["best_epoch"] + 1, color="green", alpha=0.3, linewidth=6, label="weights kept")
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no tick at 1.5
        axis.grid(alpha=0.3)
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def confusion_matrix(matrix: dict, path: pathlib.Path, split: str = layout.TEST_SPLIT) -> None:
    """The Evaluator's confusion matrix on the split it judged (test; eval in a span without a test split)."""
    cells = [[matrix["true_negatives"], matrix["false_positives"]],
             [matrix["false_negatives"], matrix["true_positives"]]]
    figure, axis = plt.subplots(figsize=(4.2, 3.8))
    axis.imshow(cells, cmap="Blues")
    for row in range(2):
        for column in range(2):
            axis.text(column, row, f"{int(cells[row][column])}", ha="center", va="center", fontsize=16,
                      color="white" if cells[row][column] > max(map(max, cells)) / 2 else "black")
    axis.set_xticks([0, 1], [f"predicted {n}" for n in features.LABEL_NAMES])
    axis.set_yticks([0, 1], [f"actual {n}" for n in features.LABEL_NAMES])
    axis.set_title(f"{split.capitalize()} split, threshold {matrix['threshold']:g}")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def model_diagram(description: dict, training_config: dict, path: pathlib.Path) -> None:
    """The layer stack from input to logit (trainer.model.describe), base and head told apart."""
    blocks = [("input: pixels " + "x".join(map(str, description["input_shape"])), "#eeeeee")]
    if training_config.get("flip") or training_config.get("rotation") or training_config.get("zoom"):
        blocks.append(("augmentation (training only): flip / rotation / zoom", "#fff3cd"))
    base = description["base"]
    for layer in description["layers"]:
        if layer["name"] == base["name"]:
            unfrozen = training_config.get("fine_tune_from")
            blocks.append((f"MobileNetV2 base: {base['layers']} layers, {base['weights']:,} weights\n"
                           f"frozen in phase 1; layers {unfrozen}+ fine-tuned in phase 2 (BatchNorm frozen)",
                           "#cfe2ff"))
        else:
            weights = layer["weights"]
            blocks.append((f"{layer['name']}: {layer['type']} -> {tuple(layer['output_shape'])}"
                           f"{f', {weights:,} weights' if weights else ''}", "#d1e7dd"))
    figure, axis = plt.subplots(figsize=(7, 0.75 * len(blocks) + 0.4))
    axis.axis("off")
    for index, (text, color) in enumerate(blocks):
        y = len(blocks) - index - 1
        axis.add_patch(plt.Rectangle((0.05, y + 0.15), 0.9, 0.7, facecolor=color, edgecolor="#555"))
        axis.text(0.5, y + 0.5, text, ha="center", va="center", fontsize=9)
        if index:
            axis.annotate("", xy=(0.5, y + 0.85), xytext=(0.5, y + 1.15), arrowprops={"arrowstyle": "->"})
    axis.set_xlim(0, 1)
    axis.set_ylim(0, len(blocks))
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _eval_jpegs(examples_uri: str, limit: int) -> list[tuple[str, bytes, int]]:
    files = sorted(tf.io.gfile.glob(os.path.join(examples_uri, "Split-eval", "*")))
    samples = []
    # Drawn through a seeded shuffle: a span written by another tool may hold one class after the other.
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").shuffle(1000, seed=0).take(limit):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        samples.append((feature[features.SOURCE_KEY].bytes_list.value[0].decode(),
                        feature[features.IMAGE_KEY].bytes_list.value[0],
                        feature[features.LABEL_KEY].int64_list.value[0]))
    return samples


def sample_predictions(model_dir: pathlib.Path, examples_uri: str, path: pathlib.Path) -> list[dict]:
    samples = _eval_jpegs(examples_uri, _SAMPLES)
    serve = tf.saved_model.load(str(model_dir)).signatures[features.SERVING_SIGNATURE]
    out = serve(**{features.IMAGE_INPUT: tf.constant([jpeg for _, jpeg, _ in samples])})
    predictions = [Prediction(f"{name} (actual: {features.LABEL_NAMES[label]})", c.decode(), float(p))
                   for (name, _, label), c, p in zip(samples, out[features.CLASS_OUTPUT].numpy(),
                                                     out[features.PROBABILITY_OUTPUT].numpy())]
    contact_sheet.render(predictions, {i: jpeg for i, (_, jpeg, _) in enumerate(samples)}).save(path)
    return [{"file": name, "actual": features.LABEL_NAMES[label], "predicted": p.class_name,
             "dog_probability": p.dog_probability} for (name, _, label), p in zip(samples, predictions)]


def _split_protos(uri: str, filename: str, proto_class) -> dict:
    """{split: proto} from `<uri>/Split-<split>/<filename>`, for each of the span's splits that has it."""
    found = {}
    for split in layout.SPLITS:
        path = os.path.join(uri, f"Split-{split}", filename)
        if tf.io.gfile.exists(path):
            found[split] = proto_class.FromString(tf.io.gfile.GFile(path, "rb").read())
    return found


def _image_sizes(statistics_uri: str) -> dict:
    from tensorflow_metadata.proto.v0 import statistics_pb2

    sizes = {}
    for split, stats in _split_protos(statistics_uri, STATISTICS_FILE,
                                      statistics_pb2.DatasetFeatureStatisticsList).items():
        for feature in stats.datasets[0].features:
            name = feature.path.step[0] if feature.path.step else feature.name
            if name in SIZE_FEATURES:
                sizes[f"{split} {name}"] = {"min": feature.num_stats.min, "mean": feature.num_stats.mean,
                                            "max": feature.num_stats.max}
    return sizes


def _feature_name(feature) -> str:
    return feature.path.step[0] if feature.path.step else feature.name


def _common_stats(feature):
    for kind in ("num_stats", "string_stats", "bytes_stats", "struct_stats"):
        if feature.HasField(kind):
            return getattr(feature, kind).common_stats
    return None


def statistics_figures(statistics_uri: str, path: pathlib.Path) -> tuple[list[str], list[list]] | None:
    """Draws the data's statistics the report needs, offline: examples per label and split, and the
    distributions of image height and width per split. Returns (the splits, rows of feature and examples
    missing it per split), or None when there are no statistics."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    lists = _split_protos(statistics_uri, STATISTICS_FILE, statistics_pb2.DatasetFeatureStatisticsList)
    if not lists:
        return None
    by_split = {split: lists[split].datasets[0] for split in layout.SPLITS if split in lists}
    figure, axes = plt.subplots(1, 1 + len(SIZE_FEATURES), figsize=(13, 3.6))
    width = 0.8 / len(by_split)
    for index, (split, stats) in enumerate(by_split.items()):
        counts = class_counts(stats)
        positions = [i + index * width for i in range(len(features.LABEL_NAMES))]
        axes[0].bar(positions, [counts.get(value, 0) for value in features.LABEL_VALUES], width, label=split)
    axes[0].set_xticks([i + width * (len(by_split) - 1) / 2 for i in range(len(features.LABEL_NAMES))],
                       features.LABEL_NAMES)
    axes[0].set_title("Examples per label")
    axes[0].legend()
    for axis, name in zip(axes[1:], SIZE_FEATURES):
        for split, stats in by_split.items():
            feature = next((f for f in stats.features if _feature_name(f) == name), None)
            if feature is None or not feature.num_stats.histograms:
                continue
            buckets = feature.num_stats.histograms[0].buckets
            axis.stairs([b.sample_count for b in buckets], [buckets[0].low_value] + [b.high_value for b in buckets],
                        label=split)
        axis.set_title(f"Image {name} (pixels)")
        axis.set_ylabel("examples")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    names = sorted({_feature_name(f) for stats in by_split.values() for f in stats.features})
    rows = []
    for name in names:
        row = [name]
        for stats in by_split.values():
            feature = next((f for f in stats.features if _feature_name(f) == name), None)
            common = _common_stats(feature) if feature is not None else None
            row.append(int(common.num_missing) if common is not None else int(stats.num_examples))
        rows.append(row)
    return list(by_split), rows


def _statistics_page(statistics_uri: str, path: pathlib.Path) -> bool:
    """TFDV's own interactive page (train against eval); it loads Facets from the web when opened."""
    from tensorflow_data_validation.utils import display_util
    from tensorflow_metadata.proto.v0 import statistics_pb2

    lists = _split_protos(statistics_uri, STATISTICS_FILE, statistics_pb2.DatasetFeatureStatisticsList)
    if "train" not in lists:
        return False
    page = display_util.get_statistics_html(lists["train"], lists.get("eval"), lhs_name="train", rhs_name="eval")
    path.write_text(f"<!doctype html><html><body>{page}</body></html>")
    return True


def _anomalies(anomalies_uri: str) -> list[str]:
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    return describe_anomalies(_split_protos(anomalies_uri, ANOMALIES_FILE, anomalies_pb2.Anomalies))


def hyperparameters_page(chosen: dict | None) -> dict | None:
    """The report's hyperparameters section: where they came from in words, the values, the trial table."""
    if chosen is None:
        return None
    why = chosen.get("not_applied") or "no hyperparameter search is recorded for this pipeline"
    words = {DEFAULTS: f"The settings as configured: {why} (run --tune to search).",
             TUNED_HERE: (f"The search of run {chosen['run']}, cached (no trial ran in this run)" if chosen["cached"]
                          else "Tuned in this run") + ", chosen on the eval split's loss; the test split took no part.",
             REUSED: f"Reused from the search of run {chosen['run']} (no search in this run)."}[chosen["source"]]
    rows = [[row["trial"] + (" (kept)" if row.get("kept") else ""), row.get("status"), row.get("val_loss", ""),
             row.get("val_accuracy") if row.get("val_accuracy") is not None else "",
             ", ".join(f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"
                       for name, value in row.get("values", {}).items()), row.get("reason", "")]
            for row in chosen.get("trials") or []]
    stopped = hyperparameters_lib.budget_words(chosen.get("budget"))
    words += f" {stopped}." if stopped else ""
    words += "".join(f" {why[0].upper()}{why[1:]}." for why in chosen.get("left_out") or [])
    return {"source_words": words, "values": chosen["values"], "fixed": chosen["fixed"], "trial_rows": rows}


def write_report(summary: RunSummary, output_dir: str | os.PathLike, training_config: dict,
                 ingest_report: dict | None) -> pathlib.Path:
    """Writes <output_dir>/report/index.html and its figures; returns the page's path.

    The page and its figures are written to a hidden folder that replaces the
    report folder only when complete: a failure (a full disk, say) leaves no
    half report, and the hidden folder is removed.
    """
    final = pathlib.Path(RunLayout(pathlib.Path(output_dir)).report_dir)
    folder = final.with_name(f".{final.name}.incoming")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        _write_pages(summary, folder, training_config, ingest_report)
        shutil.rmtree(final, ignore_errors=True)
        folder.rename(final)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return final / layout.REPORT_PAGE


def _pushed_anew(summary: RunSummary) -> bool:
    """Whether the run pushed a version: a cached push, or a model already served, is an earlier run's push
    (run_summary.RunSummary.text says `pushed: nothing new` for both)."""
    pusher_cached = any(n.node_id == metadata_lib.PUSHER and n.state == "cached" for n in summary.nodes)
    return bool(summary.pushed_path) and not (pusher_cached or summary.already_served)


def _card_page(summary: RunSummary) -> dict:
    """The pushed version's model card for the page: its sections the page does not show itself, and the
    titles of those it left out."""
    card = pathlib.Path(summary.pushed_path or "", layout.MODEL_CARD_FILE)
    if not (summary.pushed_path and card.is_file()):
        return {"model_card": None, "model_card_shown": []}
    # The card is Markdown the pusher wrote; text from outside (file names, sources) is escaped first.
    text, shown = card_sections_not_shown(card.read_text())
    return {"model_card": render_untrusted_markdown(text), "model_card_shown": shown}


def _write_pages(summary: RunSummary, folder: pathlib.Path, training_config: dict,
                 ingest_report: dict | None) -> None:
    """Draws the figures into `folder` and renders the page from templates/report.html.j2."""
    figures: dict[str, str | None] = dict.fromkeys(
        ("confusion_matrix", "training_curves", "model", "sample_predictions", "statistics"))
    page = {"summary": summary, "figures": figures, "ingest": ingest_report, "history": None, "tflite": None,
            "pushed_anew": _pushed_anew(summary),
            "trained_on": None, "hyperparameters": hyperparameters_page(summary.hyperparameters),
            **_card_page(summary),
            "samples": [], "image_sizes": [], "statistics_page": None, "anomalies": None,
            "components": [[n.node_id, n.state, f"{n.seconds:.1f}"] for n in summary.nodes]}
    metric_names = sorted({k for values in summary.metrics.values() for k in values})
    intervals = summary.accuracy_intervals

    def shown(model, name, value):
        interval = intervals.get(model) if name == "binary_accuracy" else None
        return f"{value:.4f} [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else value

    page |= {"metric_names": metric_names,
             "metric_rows": [[model] + [shown(model, n, values[n]) if n in values else "" for n in metric_names]
                             for model, values in summary.metrics.items()],
             "judged_on": split_words(summary.judged_split) if summary.judged_split else None,
             "label_metric_names": list(next(iter(summary.metrics_by_label.values()), {})),
             "label_rows": [[label] + list(values.values()) for label, values in summary.metrics_by_label.items()]}
    if summary.blessed is not None and summary.confusion_matrix:
        confusion_matrix(summary.confusion_matrix, folder / "confusion_matrix.png", summary.judged_split or "test")
        figures["confusion_matrix"] = "confusion_matrix.png"

    model_uri = summary.artifacts.get("Model")
    if model_uri:
        try:  # a damaged history is named in the summary's notes (reporting.run_summary)
            page["history"] = export.read_training_history(str(_serving_dir(model_uri)))
        except storage.UnreadableFileError:
            page["history"] = None
        if page["history"] is not None:
            page["trained_on"] = training_line(summary.training) if summary.training else None
            training_curves(page["history"], folder / "training_curves.png")
            figures["training_curves"] = "training_curves.png"
        # The training record describes the model; one written before it did is described from the model itself.
        description = (page["history"] or {}).get("model") or model_lib.describe(
            keras.models.load_model(_serving_dir(model_uri) / layout.KERAS_MODEL_FILE, compile=False))
        # The settings the model trained with, where recorded (a search's values laid on the configured ones).
        model_diagram(description, (summary.training or {}).get("settings") or training_config, folder / "model.png")
        figures["model"] = "model.png"
        if summary.tflite:
            page["tflite"] = summary.tflite
            page["tflite_rows"] = [[kind, f"{v['bytes'] / 2 ** 20:.1f} MiB", f"{100 * v['agreement']:.1f}%",
                                    v["logit_error_mean"], v["logit_error_rms"], v["logit_error_max"]]
                                   for kind, v in summary.tflite["models"].items()]
        if summary.artifacts.get("Examples"):
            page["samples"] = sample_predictions(_serving_dir(model_uri), summary.artifacts["Examples"],
                                                 folder / "sample_predictions.png")
            page["samples_right"] = sum(s["actual"] == s["predicted"] for s in page["samples"])
            figures["sample_predictions"] = "sample_predictions.png"

    if ingest_report:
        page["example_counts"] = list({**ingest_report["examples_per_label"],
                                       **ingest_report["examples_per_split"]}.items())
        page["quarantined"] = [[q["file"], q["reason"]] for q in ingest_report["quarantined"][:200]]
    if summary.artifacts.get("ExampleStatistics"):
        page["image_sizes"] = [[k, v["min"], v["mean"], v["max"]]
                               for k, v in _image_sizes(summary.artifacts["ExampleStatistics"]).items()]
        missing = statistics_figures(summary.artifacts["ExampleStatistics"], folder / "statistics.png")
        if missing is not None:
            figures["statistics"] = "statistics.png"
            page["splits"], page["missing_rows"] = missing
        # Beside the report, not in it: everything in the report folder works offline.
        tfdv_page = pathlib.Path(RunLayout(folder.parent).tfdv_statistics_page)
        if _statistics_page(summary.artifacts["ExampleStatistics"], tfdv_page):
            page["statistics_page"] = f"../{tfdv_page.name}"
    if summary.artifacts.get("ExampleAnomalies"):
        page["anomalies"] = _anomalies(summary.artifacts["ExampleAnomalies"])
    # The data gate's message lists what it found: it belongs with the data.
    gate_failed = any(n.node_id == ANOMALIES_GATE and n.state == "failed" for n in summary.nodes)
    page["data_gate_error"] = summary.error if gate_failed else None
    (folder / layout.REPORT_PAGE).write_text(_TEMPLATES.get_template("report.html.j2").render(page))
