"""The run report's figures, drawn to PNG files offline: training curves, the confusion matrix, the model's
layer stack, the data's statistics and sample predictions of the candidate on eval images.
"""

from __future__ import annotations

import os
import pathlib

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import tensorflow as tf  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from components.anomalies_gate import SIZE_FEATURES, STATISTICS_FILE, class_counts  # noqa: E402
from contract import features, layout  # noqa: E402
from inference import contact_sheet  # noqa: E402
from inference.predict import Prediction  # noqa: E402

_SAMPLES = 15


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


def split_protos(uri: str, filename: str, proto_class) -> dict:
    """{split: proto} from `<uri>/Split-<split>/<filename>`, for each of the span's splits that has it."""
    found = {}
    for split in layout.SPLITS:
        path = os.path.join(uri, f"Split-{split}", filename)
        if tf.io.gfile.exists(path):
            found[split] = proto_class.FromString(tf.io.gfile.GFile(path, "rb").read())
    return found


def feature_name(feature) -> str:
    return feature.path.step[0] if feature.path.step else feature.name


def common_stats(feature):
    for kind in ("num_stats", "string_stats", "bytes_stats", "struct_stats"):
        if feature.HasField(kind):
            return getattr(feature, kind).common_stats
    return None


def statistics_figures(statistics_uri: str, path: pathlib.Path) -> tuple[list[str], list[list]] | None:
    """Draws the data's statistics the report needs, offline: examples per label and split, and the
    distributions of image height and width per split. Returns (the splits, rows of feature and examples
    missing it per split), or None when there are no statistics."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    lists = split_protos(statistics_uri, STATISTICS_FILE, statistics_pb2.DatasetFeatureStatisticsList)
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
            feature = next((f for f in stats.features if feature_name(f) == name), None)
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
    names = sorted({feature_name(f) for stats in by_split.values() for f in stats.features})
    rows = []
    for name in names:
        row = [name]
        for stats in by_split.values():
            feature = next((f for f in stats.features if feature_name(f) == name), None)
            common = common_stats(feature) if feature is not None else None
            row.append(int(common.num_missing) if common is not None else int(stats.num_examples))
        rows.append(row)
    return list(by_split), rows
