#!/usr/bin/env python3
"""Tuned on a look's own data against the default schedule, on looks nobody chose the defaults on.

    .venv/bin/python -m benchmarks.tuning             # make bench-tune: the table, and runs/tuning.json
    .venv/bin/python -m benchmarks.tuning --small     # make bench-tune-small: minutes on 2 cores

The cross-look protocol of benchmarks/looks.py, asked of `run --tune`: each
held-out look (never used to choose the project's defaults) gets its own train,
validation and test images (generator seeds 0, 1, 2). For each seed, the
default training (random weights and config.FROM_SCRATCH_SCHEDULE, as
looks.py; or, with --weights pretrained, the recipe's defaults from a base
pretrained on the dusk look) trains on the look's train images, keeps the
epoch with the lowest validation loss, and is scored once on its test images.
The pipeline's own search (trainer.tuning: its space around that default, its
cheap trials, its oracle, selection on the validation images only) runs on the
same train and validation images, and the Trainer's training with the best
trial's settings is scored on the same test images. The difference tuned minus
default is paired (same seed, same images) and its 95% interval comes from the
seeds' spread, as looks.gap computes it; each accuracy has the exact interval
of the test images, as looks.summarize gives it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

from benchmarks import looks

ROOT = pathlib.Path(__file__).resolve().parents[1]
TUNED = "tuned"


@dataclasses.dataclass(frozen=True)
class Protocol:
    held_out: tuple[str, ...] = looks.HELD_OUT_LOOKS
    seeds: int = 3
    trials: int = 8
    sizes: looks.Sizes = looks.Sizes()
    # "none": random weights and the from-scratch schedule, as benchmarks/looks.py; "pretrained": the recipe's
    # defaults from a base pretrained on the dusk look (benchmarks/pretrained.py, standing in for ImageNet
    # weights; no held-out look), the path a user with pretrained weights takes.
    weights: str = "none"
    # Fields laid over the default for both sides (the small configuration's shorter training).
    overrides: tuple[tuple[str, object], ...] = ()


# Minutes on 2 shared cores, not a verdict: few images, small images, short phases, two trials. From random
# weights so few images stay at chance; from the pretrained base they do not.
SMALL = Protocol(held_out=("recolour", "print"), seeds=3, trials=2, weights="pretrained",
                 sizes=looks.Sizes(train_per_class=60, validation_per_class=20, test_per_class=60, image_size=64),
                 overrides=(("head_epochs", 4), ("fine_tune_epochs", 4)))


@functools.cache
def _pretrained(image_size: int) -> str:
    from benchmarks import trainer as trainer_bench

    return trainer_bench.pretrained_base(trainer_bench.Recipe(image_size=image_size))


def default_config(protocol: Protocol, seed: int):
    """The default training config of the protocol's weights, with its overrides, at `seed`."""
    from config import PipelineConfig, with_overrides

    start = {"weights": "none", **looks.schedule(looks.REFERENCE)} if protocol.weights == "none" else \
        {"weights": _pretrained(protocol.sizes.image_size)}
    return with_overrides(PipelineConfig(), {**start, **dict(protocol.overrides), "seed": seed}).training


def tune(protocol: Protocol, seed: int, records: dict[str, pathlib.Path], scratch: pathlib.Path) -> dict:
    """The pipeline's search (trainer.tuning: its space, its cheap trials, its oracle) from the default config on
    the train and validation records, the test records unread: the best trial's values and the config they make,
    the trial table, and seconds."""
    from config import TuningConfig
    from trainer import hyperparameters, tuning

    base, sizes = default_config(protocol, seed), protocol.sizes
    examples = looks.read_examples({split: records[split] for split in ("train", "validation")}, sizes.image_size)
    tuner = tuning.build_tuner(base, sizes.image_size, TuningConfig(trials=protocol.trials), str(scratch))
    started = time.perf_counter()
    tuner.search(train_examples=examples["train"], eval_examples=examples["validation"],
                 counts=(2 * sizes.train_per_class, 2 * sizes.validation_per_class))
    seconds = time.perf_counter() - started
    best = tuner.get_best_hyperparameters()
    if not best:
        raise RuntimeError(f"every trial failed: {tuner.trial_table()}")
    values = dict(best[0].values)
    return {"values": values, "config": hyperparameters.apply(base, values), "trials": tuner.trial_table(),
            "seconds": seconds}


def run_look(protocol: Protocol, look: str, seed: int, records: dict[str, pathlib.Path],
             scratch: pathlib.Path) -> list[dict]:
    """The default schedule and the tuned one on one look at one seed: two run records."""
    default = default_config(protocol, seed)
    runs = [{"look": look, "setting": looks.REFERENCE, "seed": seed,
             **looks.train_and_test(default, records, protocol.sizes)}]
    search = tune(protocol, seed, records, scratch)
    runs.append({"look": look, "setting": TUNED, "seed": seed, "best": search["values"], "trials": search["trials"],
                 "search_seconds": search["seconds"],
                 **looks.train_and_test(search["config"], records, protocol.sizes)})
    return runs


def table(runs: list[dict], protocol: Protocol) -> str:
    """Each look's and all looks' accuracy of both sides with the test images' interval, and tuned minus default
    with the seeds' paired interval."""
    measured = tuple(look for look in protocol.held_out if any(r["look"] == look for r in runs))
    lines = [f"{'look':20}{'default schedule':>26}{'tuned':>26}{'tuned minus default [95% over seeds]':>40}"]
    for label, group in [(look, (look,)) for look in measured] + [("held-out looks", measured)]:
        cells = []
        for setting in (looks.REFERENCE, TUNED):
            figure = looks.summarize(runs, group, setting)
            cells.append(f"{figure['accuracy']:.3f} [{figure['low']:.3f}, {figure['high']:.3f}]")
        gap = looks.gap(runs, group, TUNED)
        cells.append(f"{gap['mean']:+.3f} [{gap['low']:+.3f}, {gap['high']:+.3f}] ({gap['seeds']} seeds)")
        lines.append(f"{label:20}{cells[0]:>26}{cells[1]:>26}{cells[2]:>40}")
    seconds = {s: statistics.median(r["seconds"] for r in runs if r["setting"] == s) for s in (looks.REFERENCE, TUNED)}
    search = statistics.median(r["search_seconds"] for r in runs if r["setting"] == TUNED)
    lines.append(f"{'training s (median)':20}{seconds[looks.REFERENCE]:>26.0f}{seconds[TUNED]:>26.0f}"
                 f"{'search s (median): ' + format(search, '.0f'):>40}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="The small configuration (minutes on 2 cores).")
    parser.add_argument("--seeds", type=int, help="Seeds 1..N (default 3).")
    parser.add_argument("--trials", type=int, help="Trials of each search (default 8; --small 2).")
    parser.add_argument("--weights", choices=("none", "pretrained"),
                        help="Random weights and the from-scratch schedule (default), or the recipe from a base "
                             "pretrained on the dusk look (--small's).")
    parser.add_argument("--looks", help=f"Comma-separated held-out looks (default: {', '.join(looks.HELD_OUT_LOOKS)}).")
    parser.add_argument("--json", type=pathlib.Path, default=ROOT / "runs" / "tuning.json")
    args = parser.parse_args(argv)
    protocol = SMALL if args.small else Protocol()
    if args.seeds:
        protocol = dataclasses.replace(protocol, seeds=args.seeds)
    if args.trials:
        protocol = dataclasses.replace(protocol, trials=args.trials)
    if args.weights:
        protocol = dataclasses.replace(protocol, weights=args.weights)
    if args.looks:
        chosen = tuple(args.looks.split(","))
        unknown = [look for look in chosen if look not in looks.HELD_OUT_LOOKS]
        if unknown:
            parser.error(f"{unknown}: not held-out looks ({', '.join(looks.HELD_OUT_LOOKS)}); the tuning looks "
                         "chose the defaults")
        protocol = dataclasses.replace(protocol, held_out=chosen)
    from cli import quiet_logs

    quiet_logs.apply()
    started = time.perf_counter()
    runs: list[dict] = []
    sizes = protocol.sizes
    with tempfile.TemporaryDirectory() as scratch:
        scratch = pathlib.Path(scratch)
        records = {look: {split: looks._records(look, split, per_class, seed, scratch)
                          for split, per_class, seed in (("train", sizes.train_per_class, 0),
                                                         ("validation", sizes.validation_per_class, 1),
                                                         ("test", sizes.test_per_class, 2))}
                   for look in protocol.held_out}
        for seed in range(1, protocol.seeds + 1):
            for look in protocol.held_out:
                pair = run_look(protocol, look, seed, records[look], scratch / f"{look}-{seed}")
                runs += pair
                print(f"{look:10} seed {seed}: default {pair[0]['accuracy']:.3f}, tuned {pair[1]['accuracy']:.3f} "
                      f"({pair[1]['best']})", flush=True)
                looks._write(args.json, {"protocol": dataclasses.asdict(protocol), "runs": runs})
    print(f"\ntest accuracy, mean of {protocol.seeds} seeds [exact 95% interval of the test images]; "
          f"{2 * sizes.train_per_class} train, {2 * sizes.validation_per_class} validation, "
          f"{2 * sizes.test_per_class} test images a look; weights {protocol.weights} at {sizes.image_size} px; "
          f"{protocol.trials} trials a search; overrides {dict(protocol.overrides) or 'none'}")
    print(table(runs, protocol))
    print(f"took {time.perf_counter() - started:.0f} s on {os.cpu_count()} cores")
    print(json.dumps({"held out: tuned minus default": looks.gap(runs, protocol.held_out, TUNED)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
