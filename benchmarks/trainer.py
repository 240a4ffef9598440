#!/usr/bin/env python3
"""Section 1 of the benchmark suite: the Trainer's two phases against the plain Keras script.

    .venv/bin/python -m benchmarks.trainer            # make bench-trainer: figures into runs/benchmarks.json
    .venv/bin/python -m benchmarks.trainer --weights none     # random weights
    .venv/bin/python -m benchmarks.trainer --look dusk --from-scratch
    .venv/bin/python -m benchmarks.trainer --images 8000 --rss-only

The reference is what the popular notebooks do, written out here on its own:
image_dataset_from_directory over the JPEG files, augmentation layers, a
frozen MobileNetV2 with a pooled Dropout/Dense head, `fit` for the head
epochs, then the top of the base unfrozen and `fit` again at the lower
learning rate, each epoch evaluated. Ours is the Trainer's own training
(trainer.task.train) on the same images as ingest writes them, with the same
recipe (the defaults: 10 head epochs at 1e-3, 10 fine-tune epochs from layer
100 at 1e-4, batch 32, flip/rotation/zoom), no early stopping, with cached
views (the default) and augmenting every epoch, each with seeds 1..N
(--seeds, 5): accuracies are the seeds' means, times their medians. Ratios above 1
mean the Trainer is faster. Each phase of ours includes filling the cached views
it reads first.
The recipe is made for ImageNet weights, which cannot be downloaded here:
both start from a base pretrained on the dusk look by benchmarks/pretrained.py
(made once, kept under runs/pretrained/). The timing does not depend on the
weights; with --weights none our runs set their BatchNorm statistics first,
as the Trainer does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import resource
import shutil
import statistics
import sys
import tempfile
import time

from config import MOBILENET_V2_BLOCKS

ROOT = pathlib.Path(__file__).resolve().parents[1]
SECTION = "1 training"


@dataclasses.dataclass(frozen=True)
class Recipe:
    image_size: int = 160
    train_images: int = 640
    eval_images: int = 320
    head_epochs: int = 10
    fine_tune_epochs: int = 10
    look: str = "cartoon"
    from_scratch: bool = False
    # "pretrained": a base pretrained here on the dusk look (benchmarks/pretrained.py), standing in for ImageNet
    # weights, which the default recipe is made for; "none": random weights.
    weights: str = "pretrained"
    cached_views: int | None = None  # None: the Trainer's default
    alpha: float = 1.0  # MobileNetV2's width
    fine_tune_from: int | None = None  # the first layer phase 2 trains; None: the schedule's
    base_blocks: int = MOBILENET_V2_BLOCKS  # MobileNetV2's blocks kept (TrainingConfig.base_blocks)
    # Our runs of each kind, seeds 1..N: one run's eval accuracy on 320 images moved by 0.01-0.03 with the seed
    # alone, more than the accuracy target's band (every-epoch augmentation: 0.9062-0.9406 over seeds 1-5, a mean
    # of 0.9291 over the first three and 0.9219 over all five); the accuracies are the seeds' means, the times
    # their medians.
    seeds: int = 5


# The quick path checks code paths, not learning: MobileNetV2's narrowest width kept up to block_2 (27 of its 154
# layers; TrainingConfig.base_blocks), phase 2 from layer 18. The same two phases as the schedule's, with a tenth of
# the layers traced, saved and converted, which is most of a tiny training's time.
QUICK_BASE_BLOCKS, QUICK_FINE_TUNE_FROM = 2, 18
QUICK = Recipe(image_size=64, train_images=32, eval_images=16, head_epochs=1, fine_tune_epochs=1, weights="none",
               seeds=1, alpha=0.35, fine_tune_from=QUICK_FINE_TUNE_FROM, base_blocks=QUICK_BASE_BLOCKS)


def _figure(name, value, unit, reference=None, ratio=None, target=None, met=None) -> dict:
    return {"section": SECTION, "name": name, "value": value, "unit": unit, "reference": reference,
            "ratio": ratio, "target": target, "met": met}


def _config(recipe: Recipe, cached_views: int | None, weights: str = "none", seed: int = 1):
    """The recipe's TrainingConfig; `cached_views` None leaves K at the Trainer's default."""
    from config import FROM_SCRATCH_SCHEDULE, PipelineConfig, TrainingConfig, with_overrides

    settings = {"weights": weights, "seed": seed, "early_stopping_patience": 0, "alpha": recipe.alpha,
                "base_blocks": recipe.base_blocks}
    if recipe.from_scratch:  # its epochs and depth; its views (every epoch) are what the run compares against
        settings.update({k: v for k, v in FROM_SCRATCH_SCHEDULE.items() if k != "cached_views"})
    settings.update(head_epochs=recipe.head_epochs, fine_tune_epochs=recipe.fine_tune_epochs)
    if recipe.fine_tune_from is not None:
        settings["fine_tune_from"] = recipe.fine_tune_from
    if cached_views is not None:
        settings["cached_views"] = cached_views
    config = with_overrides(PipelineConfig(), settings).training
    assert isinstance(config, TrainingConfig)
    return config


def write_images(recipe: Recipe, scratch: pathlib.Path) -> dict[str, pathlib.Path]:
    """Train and eval folders of JPEG files (the reference reads them) and the same files as ingest writes
    them (the Trainer reads those)."""
    import tensorflow as tf

    from ingest import synthetic
    from ingest.images import check_image
    from ingest.span_pipeline import make_example

    paths = {}
    for split, count, seed in (("train", recipe.train_images, 0), ("eval", recipe.eval_images, 1)):
        folder = scratch / split
        synthetic.write_demo_images(folder, count // 2, seed=seed, look=recipe.look)
        record = scratch / f"{split}.tfrecord"
        with tf.io.TFRecordWriter(str(record)) as writer:
            for file in sorted(folder.rglob("*.jpg")):
                writer.write(make_example(check_image(file.read_bytes()), int(file.parent.name == "dog"), file.name))
        paths[split], paths[split + "_records"] = folder, record
    return paths


class _PhaseClock:
    """Wall time of each fit (each phase), read from Keras' callbacks."""

    def __init__(self):
        import keras

        clock = self

        class Callback(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                clock.started = time.perf_counter()

            def on_train_end(self, logs=None):
                clock.seconds.append(time.perf_counter() - clock.started)

        self.seconds: list[float] = []
        self.started = 0.0
        self.callback = Callback()


def run_ours(recipe: Recipe, paths: dict, cached_views: int | None, seed: int = 1) -> dict:
    """The Trainer's training on the ingested files: seconds of each phase and in all, best eval accuracy."""
    from trainer import preprocessing, readers, task

    config = _config(recipe, cached_views, paths["weights"], seed)

    def transform(raw):  # the Transform graph (preprocessing_fn), as the TFT layer runs it
        return preprocessing.preprocessing_fn(raw, {"image_size": recipe.image_size})

    started = time.perf_counter()
    train_examples = readers.pixels_and_labels([str(paths["train_records"])], transform)
    eval_examples = readers.pixels_and_labels([str(paths["eval_records"])], transform)
    clock = _PhaseClock()
    calibration = readers.sample_pixels(train_examples, config.calibration_images, config) if config.random_init \
        else None
    _, history = task.train(config, recipe.image_size, train_examples, eval_examples, calibration,
                            counts=(recipe.train_images, recipe.eval_images), extra_callbacks=[clock.callback])
    whole = time.perf_counter() - started
    cache = history["cache"] or {"fill_seconds": 0.0, "fine_tune_fill_seconds": 0.0}
    before_phase_2 = cache["fine_tune_fill_seconds"]
    best = next(e for e in history["epochs"] if e["epoch"] == history["best_epoch"])
    return {"whole": whole, "phase 1": cache["fill_seconds"] - before_phase_2 + clock.seconds[0],
            "phase 2": before_phase_2 + clock.seconds[1],
            "accuracy": best["val_accuracy"], "cache": history["cache"]}


def run_reference(recipe: Recipe, paths: dict) -> dict:
    """The plain Keras script, on the Trainer's own model (trainer.model.build_model: the same augmentation,
    base and head), so the two differ in how they feed and train it, never in what they train. Its accuracy on
    the eval folder is measured after the timed training."""
    import keras
    import tensorflow as tf

    from trainer import model as model_lib

    config = _config(recipe, 0, paths["weights"])
    started = time.perf_counter()

    def folder(split, shuffle):
        return keras.utils.image_dataset_from_directory(
            paths[split], image_size=(recipe.image_size, recipe.image_size), batch_size=config.batch_size,
            label_mode="binary", shuffle=shuffle, seed=1, verbose=False).prefetch(tf.data.AUTOTUNE)

    train, evaluation = folder("train", True), folder("eval", False)
    model = model_lib.build_model(config, recipe.image_size)
    base = model_lib.get_base(model)
    clock = _PhaseClock()

    def fit(rate, first, epochs):
        model.compile(optimizer=keras.optimizers.Adam(rate), loss=keras.losses.BinaryCrossentropy(from_logits=True),
                      metrics=[keras.metrics.BinaryAccuracy(threshold=0.0)])
        model.fit(train, validation_data=evaluation, initial_epoch=first, epochs=first + epochs, verbose=0,
                  callbacks=[clock.callback])

    fit(config.learning_rate, 0, config.head_epochs)
    base.trainable = True
    for layer in base.layers[:config.fine_tune_from]:
        layer.trainable = False
    fit(config.fine_tune_learning_rate, config.head_epochs, config.fine_tune_epochs)
    whole = time.perf_counter() - started
    accuracy = model.evaluate(evaluation, verbose=0, return_dict=True)["binary_accuracy"]
    return {"whole": whole, "phase 1": clock.seconds[0], "phase 2": clock.seconds[1], "accuracy": float(accuracy)}


def pretrained_base(recipe: Recipe) -> str:
    """The weights of the recipe: "none", or the file of a base pretrained on the dusk look at the recipe's
    image size, made once (a few minutes) and kept under runs/pretrained/."""
    if recipe.weights == "none":
        return "none"
    from benchmarks import pretrained

    path = ROOT / "runs" / "pretrained" / f"mobilenet_v2_dusk_1.0_{recipe.image_size}_no_top.h5"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as scratch:
            made, figures = pretrained.pretrain_base(pretrained.Setup(image_size=recipe.image_size),
                                                     pathlib.Path(scratch))
            shutil.move(made, path)
        print(f"pretrained a base on the dusk look (its eval accuracy there {figures['accuracy']:.4f}): {path}")
    return str(path)


def bench_training(recipe: Recipe, scratch: pathlib.Path) -> list[dict]:
    """The section's figures (names are the suite's contract)."""
    paths = write_images(recipe, scratch) | {"weights": pretrained_base(recipe)}
    reference = run_reference(recipe, paths)
    seeds = range(1, recipe.seeds + 1)
    cached_runs = [run_ours(recipe, paths, recipe.cached_views, seed) for seed in seeds]
    every_epoch_runs = [run_ours(recipe, paths, 0, seed) for seed in seeds]
    cached, every_epoch = _combined(cached_runs), _combined(every_epoch_runs)
    figures = []
    for name, key, target in (("whole Trainer", "whole", 2.5), ("phase 1", "phase 1", 4.0),
                              ("phase 2", "phase 2", 2.0)):
        ratio = reference[key] / cached[key]
        figures.append(_figure(f"training: {name} vs plain Keras", cached[key], "s", reference[key], ratio,
                               f">= {target}x", ratio >= target))
    figures.append(_figure("training: whole Trainer, every-epoch augmentation vs plain Keras", every_epoch["whole"],
                           "s", reference["whole"], reference["whole"] / every_epoch["whole"]))
    difference = cached["accuracy"] - every_epoch["accuracy"]
    figures.append(_figure("training: eval accuracy, cached views minus every-epoch augmentation", difference,
                           "acc", target=">= -0.01", met=difference >= -0.01))
    for seed, ours, theirs in zip(seeds, cached_runs, every_epoch_runs):
        figures.append(_figure(f"training: eval accuracy difference, seed {seed}",
                               ours["accuracy"] - theirs["accuracy"], "acc"))
    for name, runs in (("cached views", cached), ("every-epoch augmentation", every_epoch)):
        figures.append(_figure(f"training: eval accuracy, {name} ({_noise(runs['accuracy'], recipe)})",
                               runs["accuracy"], "acc"))
    figures.append(_figure("training: filling the cache", cached["cache"]["fill_seconds"], "s"))
    figures.append(_figure("training: cache size", cached["cache"]["bytes"] / 2**20, "MiB"))
    return figures


def _noise(accuracy: float, recipe: Recipe) -> str:
    """'mean of 5 seeds on 320 images, 95% interval [0.89, 0.95]': how far the images alone may move it (the
    seeds share the images; the interval is of the images, not of the seeds)."""
    from components.uncertainty import accuracy_interval

    low, high = accuracy_interval(round(accuracy * recipe.eval_images), recipe.eval_images)
    return f"mean of {recipe.seeds} seeds on {recipe.eval_images} images, 95% interval [{low:.2f}, {high:.2f}]"


def _combined(runs: list[dict]) -> dict:
    """The seeds' runs as one: median times, mean accuracy, the first run's cache."""
    return {**{key: statistics.median(run[key] for run in runs) for key in ("whole", "phase 1", "phase 2")},
            "accuracy": statistics.fmean(run["accuracy"] for run in runs), "cache": runs[0]["cache"]}


def _merge(path: pathlib.Path, figures: list[dict], recipe: Recipe) -> None:
    """Replaces this section's figures in the suite's file, keeping the other sections'."""
    document = json.loads(path.read_text()) if path.exists() else {"settings": {}, "figures": []}
    document["figures"] = [f for f in document["figures"] if f["section"] != SECTION] + figures
    document.setdefault("settings", {})["training"] = dataclasses.asdict(recipe)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2))


def _peak_rss(recipe: Recipe, scratch: pathlib.Path) -> None:
    paths = write_images(recipe, scratch) | {"weights": pretrained_base(recipe)}
    ours = run_ours(recipe, paths, cached_views=recipe.cached_views)
    print(f"{recipe.train_images} train + {recipe.eval_images} eval images of the {recipe.look} look at "
          f"{recipe.image_size} px: Trainer {ours['whole']:.0f} s, cache {ours['cache']['bytes'] / 2**20:.0f} MiB "
          f"({ours['cache']['location']}), eval accuracy {ours['accuracy']:.4f}, peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Tiny images and one epoch a phase: the code paths.")
    parser.add_argument("--look", choices=("cartoon", "dusk"), default="cartoon")
    parser.add_argument("--from-scratch", action="store_true", help="The from-scratch schedule of --weights none.")
    parser.add_argument("--images", type=int, help="Training images (default 640).")
    parser.add_argument("--weights", choices=("pretrained", "none"), default="pretrained",
                        help="A base pretrained on the dusk look (default; the recipe is made for pretrained "
                             "weights), or random weights.")
    parser.add_argument("--cached-views", type=int, help="K of the cached run (default: the Trainer's).")
    parser.add_argument("--seeds", type=int, help="Our runs of each kind, seeds 1..N (default 5).")
    parser.add_argument("--rss-only", action="store_true",
                        help="Only our Trainer with cached views, in this process: its time and peak RSS.")
    parser.add_argument("--json", type=pathlib.Path, default=ROOT / "runs" / "benchmarks.json")
    args = parser.parse_args(argv)
    recipe = QUICK if args.quick else Recipe()
    recipe = dataclasses.replace(recipe, look=args.look, from_scratch=args.from_scratch,
                                 weights="none" if args.quick or args.from_scratch else args.weights)
    if args.from_scratch:
        from config import FROM_SCRATCH_SCHEDULE

        recipe = dataclasses.replace(recipe, head_epochs=FROM_SCRATCH_SCHEDULE["head_epochs"],
                                     fine_tune_epochs=FROM_SCRATCH_SCHEDULE["fine_tune_epochs"])
    if args.cached_views is not None:
        recipe = dataclasses.replace(recipe, cached_views=args.cached_views)
    if args.seeds:
        recipe = dataclasses.replace(recipe, seeds=args.seeds)
    if args.images:
        recipe = dataclasses.replace(recipe, train_images=args.images, eval_images=max(32, args.images // 4))
    from cli import quiet_logs

    quiet_logs.apply()
    with tempfile.TemporaryDirectory() as scratch:
        if args.rss_only:
            _peak_rss(recipe, pathlib.Path(scratch))
            return 0
        started = time.perf_counter()
        figures = bench_training(recipe, pathlib.Path(scratch))
    from benchmarks.figures import Figure, table

    print(table([Figure(**f) for f in figures]))
    print(f"training section took {time.perf_counter() - started:.0f} s; {os.cpu_count()} cores; {recipe}")
    _merge(args.json, figures, recipe)
    print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
