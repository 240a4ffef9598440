#!/usr/bin/env python3
"""What one trial of `run --tune` costs against a Trainer run on the same data.

    .venv/bin/python -m benchmarks.trial_cost          # make bench-trial: the figures, into runs/benchmarks.json
    .venv/bin/python -m benchmarks.trial_cost --quick  # tiny images, one epoch a phase: the code paths

On the images of section 1 (benchmarks/trainer.py: the same recipe, the same
pretrained base), in one process: a Trainer run (trainer.task.train with the
recipe's settings, cached views as configured, both phases, then the export
run_fn does after it) and one trial of the search on the same settings
(trainer.tuning.run_trial: the pipeline's trial, with the default
--tune-epoch-fraction), alternating, --repeats times; the figures are medians.
The target: a trial costs at most a quarter of a Trainer run. Two ratios are
printed: against the whole run (the target's), and against its training alone,
which a trial's share approaches as the data grows. The run's export here is
the classifier as a SavedModel and a Keras file and the TFLite models with
their fidelity check; the serving model's Transform graph and its signatures
are left out, so the whole run's figure is below a real one's. Inside the suite
the Trainer's training is section 1's, measured already, and only that ratio
is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

from benchmarks import trainer as trainer_bench

ROOT = pathlib.Path(__file__).resolve().parents[1]
SECTION = "1 tuning trial"
TARGET = 0.25


def _figure(name, value, unit, reference=None, ratio=None, target=None, met=None) -> dict:
    return {"section": SECTION, "name": name, "value": value, "unit": unit, "reference": reference,
            "ratio": ratio, "target": target, "met": met}


def time_trial(recipe: trainer_bench.Recipe, paths: dict, epoch_fraction: float) -> dict:
    """One trial of the recipe's settings on its images: seconds, and the epochs it ran."""
    from trainer import tuning

    config = trainer_bench._config(recipe, recipe.cached_views, paths["weights"])
    started = time.perf_counter()
    examples = _examples(recipe, paths)
    result = tuning.run_trial(config, recipe.image_size, examples["train"], examples["eval"],
                              epoch_fraction=epoch_fraction, counts=(recipe.train_images, recipe.eval_images))
    return {"whole": time.perf_counter() - started, "epochs": result["epochs"]}


def _examples(recipe: trainer_bench.Recipe, paths: dict) -> dict:
    from trainer import preprocessing, readers

    def transform(raw):  # the Transform graph (preprocessing_fn), as the TFT layer runs it
        return preprocessing.preprocessing_fn(raw, {"image_size": recipe.image_size})

    return {split: readers.pixels_and_labels([str(paths[f"{split}_records"])], transform)
            for split in ("train", "eval")}


def time_trainer_run(recipe: trainer_bench.Recipe, paths: dict, scratch: pathlib.Path) -> dict:
    """A Trainer run on the recipe's images: seconds of its training and of the export after it."""
    import numpy as np

    from contract import layout
    from trainer import export, readers, task
    from trainer import model as model_lib

    config = trainer_bench._config(recipe, recipe.cached_views, paths["weights"])
    started = time.perf_counter()
    examples = _examples(recipe, paths)
    calibration = task.calibration_pixels(examples["train"], config)
    model, _ = task.train(config, recipe.image_size, examples["train"], examples["eval"], calibration,
                          counts=(recipe.train_images, recipe.eval_images))
    trained = time.perf_counter()
    classifier = model_lib.get_classifier(model)
    with tempfile.TemporaryDirectory(dir=scratch) as out:
        os.makedirs(os.path.join(out, layout.ASSETS_EXTRA))
        classifier.export(os.path.join(out, "saved_model"), verbose=False)
        classifier.save(os.path.join(out, layout.ASSETS_EXTRA, "model.keras"))
        if config.tflite:
            representative = readers.sample_pixels(examples["train"], max(1, config.tflite_calibration_images),
                                                   config)
            check = [pixels for pixels, _ in examples["eval"].take(task.TFLITE_CHECK_IMAGES).as_numpy_iterator()]
            export.export_tflite(classifier, representative, out, np.stack(check).astype("float32"))
    return {"training": trained - started, "whole": time.perf_counter() - started}


def bench_trial(recipe: trainer_bench.Recipe, scratch: pathlib.Path, repeats: int,
                training: float | None = None) -> list[dict]:
    """The section's figures: a trial's seconds against a Trainer run on the same images, whole and its training
    alone. `training`: the Trainer's training seconds on them already measured in this run (the suite's section
    1: the same recipe, the same generated images); else a Trainer run is measured here, alternating with the
    trials."""
    from config import TuningConfig

    fraction = TuningConfig().epoch_fraction
    paths = trainer_bench.write_images(recipe, scratch) | {"weights": trainer_bench.pretrained_base(recipe)}
    trials, runs = [], []
    for _ in range(repeats):  # alternating, so that a slow spell of the shared machine weighs on both
        if training is None:
            runs.append(time_trainer_run(recipe, paths, scratch))
        trials.append(time_trial(recipe, paths, fraction))
    trial = statistics.median(t["whole"] for t in trials)
    name = f"one trial (epoch fraction {fraction}, {trials[0]['epochs']} epochs)"
    if training is not None:
        ratio = trial / training
        return [_figure(f"{name} vs a Trainer run's training", trial, "s", training, ratio, f"<= {TARGET}x",
                        ratio <= TARGET)]
    whole, training = (statistics.median(r[key] for r in runs) for key in ("whole", "training"))
    return [_figure(f"{name} vs a Trainer run (training and export)", trial, "s", whole, trial / whole,
                    f"<= {TARGET}x", trial / whole <= TARGET),
            _figure(f"{name} vs a Trainer run's training alone", trial, "s", training, trial / training)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Tiny images and one epoch a phase: the code paths.")
    parser.add_argument("--repeats", type=int, default=3, help="Trainer runs and trials, alternating (default 3).")
    parser.add_argument("--json", type=pathlib.Path, default=ROOT / "runs" / "benchmarks.json")
    args = parser.parse_args(argv)
    recipe = trainer_bench.QUICK if args.quick else trainer_bench.Recipe()
    from cli import quiet_logs

    quiet_logs.apply()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        figures = bench_trial(recipe, pathlib.Path(scratch), args.repeats)
    from benchmarks.figures import Figure, table

    print(table([Figure(**f) for f in figures]))
    print(f"took {time.perf_counter() - started:.0f} s; {os.cpu_count()} cores; {recipe}")
    document = json.loads(args.json.read_text()) if args.json.exists() else {"settings": {}, "figures": []}
    document["figures"] = [f for f in document["figures"] if f["section"] != SECTION] + figures
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2))
    print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
