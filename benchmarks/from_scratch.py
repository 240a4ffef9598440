"""Random weights on a data set that is not the demo's: the default schedule against the from-scratch one.

Generates the "dusk" look of ingest.synthetic (dim, washed-out, grainy; the
from-scratch schedule was tuned on the cartoon demo set), then runs the whole
pipeline twice with --weights none: once with the default schedule's flags set
(made for ImageNet weights: what `--weights none` trained with before), once
leaving them to the from-scratch schedule. Prints eval accuracy and AUC, the
epochs run and the Trainer's seconds of both.

    .venv/bin/python -m benchmarks.from_scratch [--images-per-class 300] [--out runs/from-scratch]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(data: pathlib.Path, out: pathlib.Path, flags: list[str]) -> dict:
    from contract import layout

    command = [sys.executable, str(ROOT / "pipeline_runner.py"), "run", "--data-dir", str(data), "--output-dir",
               str(out), "--weights", "none", "--min-accuracy", "0", *flags]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    summary = json.loads((out / "run_summary.json").read_text())
    history = json.loads((pathlib.Path(layout.serving_model_dir(summary["artifacts"]["Model"]))
                          / layout.TRAINING_HISTORY_FILE).read_text())
    metrics = summary["metrics"]["candidate"]
    return {"accuracy": metrics["binary_accuracy"], "auc": metrics["auc"], "eval images": metrics["example_count"],
            "epochs": len(history["epochs"]),
            "trainer seconds": next(n["seconds"] for n in summary["nodes"] if n["node_id"] == "Trainer"),
            "notes": summary.get("notes", [])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images-per-class", type=int, default=300)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "runs" / "from-scratch")
    args = parser.parse_args(argv)
    from config import FROM_SCRATCH_SCHEDULE, TrainingConfig
    from ingest import synthetic

    data = args.out / "dusk_images"
    synthetic.write_demo_images(data, args.images_per_class, seed=11, look="dusk")
    default_flags = [part for name in FROM_SCRATCH_SCHEDULE
                     for part in (f"--{name.replace('_', '-')}", str(getattr(TrainingConfig(), name)))]
    results = {"default schedule (reference)": _run(data, args.out / "default", default_flags),
               "from-scratch schedule": _run(data, args.out / "from_scratch", [])}
    print(f"{2 * args.images_per_class} dusk images, --weights none, image size 160")
    from components.uncertainty import accuracy_interval

    print(f"{'':32}{'accuracy [95% interval]':>26}{'auc':>8}{'epochs':>8}{'trainer s':>11}  (one seed)")
    for name, figures in results.items():
        images = int(figures["eval images"])
        low, high = accuracy_interval(round(figures["accuracy"] * images), images)
        shown = f"{figures['accuracy']:.4f} [{low:.2f}, {high:.2f}]"
        print(f"{name:32}{shown:>26}{figures['auc']:>8.4f}{figures['epochs']:>8}"
              f"{figures['trainer seconds']:>11.0f}")
    reference, candidate = results.values()
    print(f"accuracy gain: {candidate['accuracy'] - reference['accuracy']:+.4f} "
          f"(on {int(candidate['eval images'])} test images); note: {'; '.join(candidate['notes'])}")
    (args.out / "figures.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
