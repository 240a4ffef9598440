#!/usr/bin/env python3
"""The benchmark suite: every figure next to a reference measured in the same run.

    .venv/bin/python -m benchmarks.suite            # full (make bench)
    .venv/bin/python -m benchmarks.suite --quick    # the same code paths on small data

1. Training: the Trainer's two phases (cached views, and every-epoch
   augmentation) against the plain Keras script on the same images, wall
   time of each phase and in all, and their eval accuracy (benchmarks/trainer.py;
   `make bench-trainer` runs this section alone). Then one trial of `run --tune`'s
   search against that section's Trainer on the same images (benchmarks/trial_cost.py;
   `make bench-trial` alone).
2. Pipeline wall time per component at several sizes: fixed cost and cost per
   image (least squares over the sizes), and the share of everything but the Trainer.
3. Ingest + Transform throughput against a raw single-process decode loop.
4. Bytes on disk per image that Transform writes, against the source JPEGs.
5. Evaluator (TFMA) time against model.evaluate on the same eval split.
6. Serving latency of the pushed model's JPEG signature at batch 1 and 32 against
   the bare Keras model on pre-decoded tensors; TFLite size and single-image
   latency; peak RSS during each component.
7. The traffic sink: images a second on one core against the served model's own
   rate on the same images, its start time, and its peak memory at two batch
   sizes and two traffic volumes (benchmarks/traffic_sink.py).
8. `monitor` over a window of 10,000 images of traffic for the served model of
   section 2 (benchmarks/drift.py; `make bench-drift` adds its alarms on the
   generator's looks).
Figures are medians of --repeats repetitions (the machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from benchmarks import trainer as trainer_bench
from benchmarks.figures import Figure, table
from contract import layout, served

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Settings:
    image_size: int
    pipeline_sizes: tuple[int, ...]
    repeats: int
    run_flags: tuple[str, ...] = ()  # more of the pipeline runs' flags


FULL = Settings(image_size=160, pipeline_sizes=(500, 2000, 8000), repeats=3)
# The quick runs' model as small as the code paths allow: the quick training's (benchmarks/trainer.QUICK).
QUICK = Settings(image_size=96, pipeline_sizes=(80,), repeats=1,
                 run_flags=("--alpha", "0.35", "--base-blocks", str(trainer_bench.QUICK_BASE_BLOCKS),
                            "--fine-tune-from", str(trainer_bench.QUICK_FINE_TUNE_FROM),
                            "--batch-size", "8", "--calibration-images", "16"))


# 2-5. Pipeline runs -------------------------------------------------------------------------------------------

class RssSampler(threading.Thread):
    """Samples the resident memory of a process and its children (a child gone between two reads counts as
    gone, not as the end of the sampling)."""

    def __init__(self, pid: int, every: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples, self.stop = pid, every, [], threading.Event()

    def run(self):
        import psutil

        try:
            process = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self.stop.is_set():
            try:
                tree = [process, *process.children(recursive=True)]
            except psutil.Error:
                break  # the process itself is gone
            rss = 0
            for member in tree:
                with contextlib.suppress(psutil.Error):
                    rss += member.memory_info().rss
            self.samples.append((time.time(), rss))
            time.sleep(self.every)


def _run_cli(*args: str, sample: bool = False) -> tuple[float, list]:
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(ROOT / "pipeline_runner.py"), *args], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = RssSampler(process.pid)
    if sample:
        sampler.start()
    output, _ = process.communicate()
    sampler.stop.set()
    if process.returncode != 0:
        raise RuntimeError(f"pipeline_runner.py {' '.join(args)} failed:\n{output[-3000:]}")
    return time.perf_counter() - started, sampler.samples


def _decode_loop_rate(files: list[pathlib.Path]) -> float:
    from benchmarks.ingest_throughput import decode_loop

    started = time.perf_counter()
    decode_loop(files)
    return len(files) / (time.perf_counter() - started)


def _folder_bytes(folder: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _model_evaluate_seconds(out: pathlib.Path, version_dir: pathlib.Path, size: int) -> float:
    """The plain-Keras way over the same eval split: decode, resize, model.evaluate."""
    import keras
    import tensorflow as tf

    from contract import features
    from trainer import preprocessing

    model = keras.models.load_model(version_dir / layout.KERAS_MODEL_FILE, compile=False)
    model.compile(loss=keras.losses.BinaryCrossentropy(from_logits=True),
                  metrics=[keras.metrics.BinaryAccuracy(threshold=0.0), keras.metrics.AUC(from_logits=True)])
    files = [str(p) for p in sorted((out / "examples").glob("span-*/eval/*"))]
    started = time.perf_counter()
    spec = {features.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
            features.LABEL_KEY: tf.io.FixedLenFeature([1], tf.int64)}

    def decode(serialized):
        parsed = tf.io.parse_example(serialized, spec)
        pixels = tf.cast(preprocessing.decode_and_resize(parsed[features.IMAGE_KEY], size), tf.float32)
        return pixels, tf.cast(parsed[features.LABEL_KEY], tf.float32)

    dataset = tf.data.TFRecordDataset(files).batch(32).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    model.evaluate(dataset, verbose=0)
    return time.perf_counter() - started


def bench_pipeline(settings: Settings, scratch: pathlib.Path) -> tuple[list[Figure], pathlib.Path]:
    from ingest import synthetic

    runs = {}
    for size in settings.pipeline_sizes:
        data, out = scratch / f"images_{size}", scratch / f"out_{size}"
        synthetic.write_demo_images(data, size // 2)
        # One process ingests the folder and runs the DAG, as a user's `run --data-dir` does; ingest's seconds are
        # those its report gives (its own work, not the process's start).
        _, samples = _run_cli("run", "--data-dir", str(data), "--output-dir", str(out), "--image-size",
                              str(settings.image_size), "--weights", "none", "--head-epochs", "1",
                              "--fine-tune-epochs", "1", "--min-accuracy", "0", "--min-eval-examples", "0",
                              *settings.run_flags, sample=True)
        ingest_seconds = json.loads((out / "examples" / "span-1" / "ingest_report.json").read_text())["seconds"]
        summary = json.loads((out / "run_summary.json").read_text())
        runs[size] = {"data": data, "out": out, "ingest": ingest_seconds, "summary": summary, "rss": samples}

    figures = []
    middle = settings.pipeline_sizes[len(settings.pipeline_sizes) // 2]
    components = [n["node_id"] for n in runs[middle]["summary"]["nodes"]]
    for component in components:
        seconds = {size: next((n["seconds"] for n in run["summary"]["nodes"] if n["node_id"] == component), 0.0)
                   for size, run in runs.items()}
        if len(seconds) >= 2:
            sizes = list(seconds)
            mean_n, mean_s = statistics.mean(sizes), statistics.mean(seconds.values())
            slope = sum((n - mean_n) * (seconds[n] - mean_s) for n in sizes) / sum((n - mean_n) ** 2 for n in sizes)
            fixed = mean_s - slope * mean_n
            figures.append(Figure("2 pipeline", f"{component}: fixed s / ms per image", fixed, "s",
                                  target=f"{slope * 1000:.2f} ms/image"))
        for size, value in seconds.items():
            figures.append(Figure("2 pipeline", f"{component} at {size}", value, "s"))
    nodes = runs[middle]["summary"]["nodes"]
    total = sum(n["seconds"] for n in nodes)
    others = total - sum(n["seconds"] for n in nodes if n["node_id"] == "Trainer")
    figures.append(Figure("2 pipeline", f"non-Trainer share at {middle}", others / total * 100, "%",
                          target="<= 35%", met=others / total <= 0.35))

    for size, run in runs.items():
        files = sorted(run["data"].rglob("*.jpg"))
        raw = statistics.median(_decode_loop_rate(files) for _ in range(settings.repeats))
        transform = next(n["seconds"] for n in run["summary"]["nodes"] if n["node_id"] == "Transform")
        ours = size / (run["ingest"] + transform)
        cores = os.cpu_count() or 1
        figures.append(Figure("3 ingest+transform", f"images/s at {size} (per core vs raw)", ours, "img/s", raw,
                              ours / cores / raw, ">= 0.5x per core", ours / cores / raw >= 0.5))
        # Transform writes its graph (and no examples: the Trainer decodes while reading); all it leaves on disk
        # counts, against the source JPEGs it was computed from.
        written = _folder_bytes(run["out"] / "pipeline_root" / "Transform")
        source = sum(p.stat().st_size for p in files)
        figures.append(Figure("4 bytes", f"Transform writes per image at {size}", written / size, "B",
                              source / size, written / source, "<= 1x", written / source <= 1))
        version = _served_version(run["out"])
        evaluator = next(n["seconds"] for n in run["summary"]["nodes"] if n["node_id"] == "Evaluator")
        keras_seconds = statistics.median(_model_evaluate_seconds(run["out"], version, settings.image_size)
                                          for _ in range(settings.repeats))
        figures.append(Figure("5 evaluator", f"TFMA Evaluator at {size}", evaluator, "s", keras_seconds,
                              evaluator / keras_seconds, "<= 2x", evaluator / keras_seconds <= 2))
        for node in run["summary"]["nodes"]:
            start, end = node["started"], node["started"] + max(node["seconds"], 0.25)
            window = [rss for t, rss in run["rss"] if start - 0.25 <= t <= end + 0.25]
            if window and node["seconds"] >= 0.5:
                figures.append(Figure("6 memory", f"peak RSS {node['node_id']} at {size}", max(window) / 2**20, "MiB"))
    smallest = settings.pipeline_sizes[0]
    return figures, _served_version(runs[smallest]["out"])


def _served_version(out: pathlib.Path) -> pathlib.Path:
    """The version folder the run's serving config names (the folder also holds the config itself)."""
    serving = out / "serving_model"
    return serving / str(served.served(str(serving)).version)


# 6. Serving -----------------------------------------------------------------------------------------------------

def _latency_ms(call, repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def bench_serving(version_dir: pathlib.Path, settings: Settings) -> list[Figure]:
    import keras
    import tensorflow as tf

    from ingest import synthetic
    from trainer import preprocessing
    from trainer.tflite import tflite_logits

    serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    classifier = keras.models.load_model(version_dir / layout.KERAS_MODEL_FILE, compile=False)
    bare = tf.function(lambda x: classifier(x, training=False))
    size = classifier.input_shape[1]
    jpegs = [synthetic.render_image("dog", i) for i in range(32)]
    pixels = tf.cast(preprocessing.decode_and_resize(tf.constant(jpegs), size), tf.float32)
    calls = 20 if settings.repeats == 1 else 100
    figures = []
    for batch, target in ((1, 1.3), (32, None)):
        served = _latency_ms(lambda: serve(image_bytes=tf.constant(jpegs[:batch])), calls)
        reference = _latency_ms(lambda: bare(pixels[:batch]), calls)
        figures.append(Figure("6 serving", f"JPEG signature, batch {batch}", served, "ms", reference,
                              served / reference, f"<= {target}x" if target else None,
                              served / reference <= target if target else None))
    for kind, name in layout.TFLITE_FILES.items():
        path = version_dir / name
        if path.exists():
            one = pixels[:1].numpy()
            latency = _latency_ms(lambda: tflite_logits(str(path), one), calls)
            figures.append(Figure("6 serving", f"TFLite {kind}: single image (incl. load)", latency, "ms"))
            figures.append(Figure("6 serving", f"TFLite {kind}: size", path.stat().st_size / 2**20, "MiB"))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Small data, one repetition: the same code paths.")
    parser.add_argument("--json", type=pathlib.Path, default=pathlib.Path("runs/benchmarks.json"),
                        help="Where to write the figures. Default: runs/benchmarks.json.")
    parser.add_argument("--sizes", type=int, nargs="+", help="Pipeline sizes (images); default 500 2000 8000.")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.sizes:
        settings = dataclasses.replace(settings, pipeline_sizes=tuple(args.sizes))
    from cli import quiet_logs

    quiet_logs.apply()  # as quiet as `run`: the figures, not the libraries' notices
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = pathlib.Path(scratch)
        from benchmarks import trial_cost

        recipe = trainer_bench.QUICK if args.quick else trainer_bench.Recipe()
        (scratch / "training").mkdir()
        figures = [Figure(**f) for f in trainer_bench.bench_training(recipe, scratch / "training")]
        (scratch / "trial").mkdir()
        trained = next(f.value for f in figures if f.name == "training: whole Trainer vs plain Keras")
        figures += [Figure(**f) for f in trial_cost.bench_trial(recipe, scratch / "trial", settings.repeats, trained)]
        pipeline_figures, version_dir = bench_pipeline(settings, scratch)
        figures += pipeline_figures + bench_serving(version_dir, settings)
        from benchmarks import traffic_sink

        figures += traffic_sink.bench_sink(version_dir, args.quick, scratch)
        from benchmarks import drift

        window = drift.QUICK if args.quick else drift.Settings()
        figures += drift.bench_time(version_dir.parents[1], window, with_drift=not args.quick)
    print(table(figures))
    print(f"suite took {time.perf_counter() - started:.0f} s ({'quick' if args.quick else 'full'}); "
          f"{os.cpu_count()} cores")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"settings": dataclasses.asdict(settings),
                                     "figures": [dataclasses.asdict(f) for f in figures]}, indent=2))
    print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
