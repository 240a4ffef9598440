#!/usr/bin/env python3
"""What one trial of `run --tune` costs against a Trainer run on the same data.

    .venv/bin/python -m benchmarks.trial_cost          # make bench-trial: the figures, into runs/benchmarks.json
    .venv/bin/python -m benchmarks.trial_cost --quick  # tiny images, one epoch a phase: the code paths

On the images of section 1 (benchmarks/trainer.py: the same recipe, the same
pretrained base), in one process: the Trainer's training
(trainer.task.train with the recipe's settings, cached views as configured,
both phases) and one trial of the search on the same settings
(trainer.tuning.run_trial: the pipeline's trial, with the default
--tune-epoch-fraction), each timed from the examples to the kept epoch,
alternating, --repeats times; the figures are medians. Neither side exports a
model, so the ratio leaves out the Trainer's export, which a trial never does:
a trial's share of a whole Trainer run is lower still. The target: a trial
costs at most a quarter of a Trainer run.
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
    from trainer import preprocessing, task

    def transform(raw):  # the Transform graph (preprocessing_fn), as the TFT layer runs it
        return preprocessing.preprocessing_fn(raw, {"image_size": recipe.image_size})

    return {split: task.pixels_and_labels([str(paths[f"{split}_records"])], transform) for split in ("train", "eval")}


def bench_trial(recipe: trainer_bench.Recipe, scratch: pathlib.Path, repeats: int,
                training: float | None = None) -> list[dict]:
    """The section's figures: a trial's seconds against the Trainer's training on the same images. `training`:
    the Trainer's seconds on them already measured in this run (the suite's section 1: the same recipe, the same
    generated images), else measured here, alternating with the trials."""
    from config import TuningConfig

    fraction = TuningConfig().epoch_fraction
    paths = trainer_bench.write_images(recipe, scratch) | {"weights": trainer_bench.pretrained_base(recipe)}
    trials, trainings = [], []
    for _ in range(repeats):  # alternating, so that a slow spell of the shared machine weighs on both
        if training is None:
            trainings.append(trainer_bench.run_ours(recipe, paths, recipe.cached_views)["whole"])
        trials.append(time_trial(recipe, paths, fraction))
    trial = statistics.median(t["whole"] for t in trials)
    training = statistics.median(trainings) if training is None else training
    ratio = trial / training
    return [_figure(f"one trial (epoch fraction {fraction}, {trials[0]['epochs']} epochs) vs a Trainer run", trial,
                    "s", training, ratio, f"<= {TARGET}x", ratio <= TARGET)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Tiny images and one epoch a phase: the code paths.")
    parser.add_argument("--repeats", type=int, default=3, help="Trainer runs and trials, alternating (default 3).")
    parser.add_argument("--json", type=pathlib.Path, default=ROOT / "runs" / "benchmarks.json")
    args = parser.parse_args(argv)
    recipe = trainer_bench.QUICK if args.quick else trainer_bench.Recipe()
    from orchestration import quiet_logs

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
