#!/usr/bin/env python3
"""`monitor` measured: its time over a large window, and how often it alarms on the generator's looks.

    .venv/bin/python -m benchmarks.drift                 # make bench-drift: both, on a model trained here
    .venv/bin/python -m benchmarks.drift --quick         # the same code paths on small data

1. Time: `pipeline_runner.py monitor` (a fresh process, as cron starts it) over a window of --window images
   (10,000), with no drift and with drift (then the labeling queue of every image is written too), against a
   raw decode of the same images with PIL in one process. The window's images are a few hundred generated ones,
   each repeated with a JPEG comment of its own (distinct bytes, the same decoding work), so that making them
   costs seconds.
2. Looks (ingest.synthetic): a model is trained on the cartoon look (seed 0) by the pipeline itself; windows of
   cartoon images with fresh seeds must alarm no more often than the stated false-alarm rate (the count over
   --null-windows windows, with its exact 95% interval); windows of each other look must alarm, and the table
   gives the share of --look-windows windows that alarmed at each window size. Each window is checked with
   monitor's own steps (monitoring.monitor: the same measurements, tests and shares of the rate), in one
   process, against the reference measured once.
3. Memory: the peak resident memory of `pipeline_runner.py monitor` (a fresh process) over windows of large
   JPEGs (Settings.memory_windows: 200 and 2,000 images of about 0.5 MB, the generator's cartoon look at
   2,200-2,400 pixels a side saved again at quality 100), and the larger's peak over the smaller's. The images'
   sizes drift from the training data's, so each check also writes the labeling queue of its whole window.
   monitor holds a batch of images, never the window: the ratio stays near 1 (`--skip-looks --skip-time` runs
   this alone).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import struct
import subprocess
import sys
import tempfile
import time

from benchmarks.figures import Figure, table

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = pathlib.Path(__file__).resolve().parents[1]
NULL_LOOK = "cartoon"


@dataclasses.dataclass(frozen=True)
class Settings:
    train_images: int = 400  # per class / 2: what the model is trained on (80% train, 20% held out)
    image_size: int = 160
    window: int = 10_000
    distinct: int = 400  # generated images the timed window repeats
    null_windows: int = 40
    null_window_size: int = 100
    look_windows: int = 5
    window_sizes: tuple[int, ...] = (25, 50, 100, 200)
    false_alarm_rate: float = 0.05
    memory_windows: tuple[int, int] = (200, 2_000)
    memory_distinct: int = 20  # large images generated; the windows repeat them, each made distinct
    memory_sides: tuple[int, int] = (2_200, 2_400)
    memory_sample: int = 100  # --sample of those checks: the same model work at both sizes


QUICK = Settings(train_images=80, image_size=96, window=400, distinct=60, null_windows=4, null_window_size=40,
                 look_windows=1, window_sizes=(40,), memory_windows=(40, 200), memory_distinct=4,
                 memory_sides=(900, 1_000), memory_sample=30)


def train(scratch: pathlib.Path, settings: Settings) -> pathlib.Path:
    """A root whose served model the pipeline trained on the cartoon look (random weights: the timing is the
    architecture's, the alarms the features')."""
    from ingest import synthetic

    data, out = scratch / "images", scratch / "root"
    synthetic.write_demo_images(data, settings.train_images // 2)
    _cli("run", "--data-dir", str(data), "--output-dir", str(out), "--image-size", str(settings.image_size),
         "--weights", "none", "--head-epochs", "1", "--fine-tune-epochs", "1", "--min-accuracy", "0",
         "--min-eval-examples", "0", "--allow-anomalies")
    return out


def _cli(*args: str) -> float:
    return _cli_peak(*args)[0]


def _cli_peak(*args: str) -> tuple[float, float]:
    """(seconds, peak resident memory in MB) of `pipeline_runner.py *args` in a fresh process."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        child = subprocess.Popen([sys.executable, str(ROOT / "pipeline_runner.py"), *args], cwd=ROOT, stdout=out,
                                 stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            out.seek(0)
            raise RuntimeError(f"pipeline_runner.py {' '.join(args)} failed:\n{out.read()[-4000:].decode()}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024  # Linux gives kB


def distinct_copies(jpegs: list[bytes], count: int, first: int = 0) -> list[bytes]:
    """`count` images cycling through `jpegs`, each made distinct by a JPEG comment (COM segment) after SOI: copy
    `first`, `first` + 1, ..."""
    out = []
    for index in range(first, first + count):
        jpeg = jpegs[index % len(jpegs)]
        comment = f"copy {index}".encode()
        out.append(jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + jpeg[2:])
    return out


def _decode_seconds(jpegs: list[bytes]) -> float:
    import io

    from PIL import Image

    started = time.perf_counter()
    for data in jpegs:
        with Image.open(io.BytesIO(data)) as image:
            image.convert("RGB").load()
    return time.perf_counter() - started


def bench_time(root: pathlib.Path, settings: Settings, with_drift: bool = True) -> list[Figure]:
    """Section 1: monitor over a window of settings.window images, without drift and (`with_drift`) with it."""
    import shutil

    from contract.layout import RunLayout
    from monitoring import looks

    where = RunLayout(root)
    figures = []
    cases = ((NULL_LOOK, "no drift"), ("sketch", "drift, queue written"))
    for look, what in cases if with_drift else cases[:1]:
        shutil.rmtree(where.traffic_root, ignore_errors=True)
        window = distinct_copies(looks.images(look, settings.distinct), settings.window)
        looks.write_traffic(str(where.traffic_root), window, version=1)
        seconds = _cli("monitor", "--output-dir", str(root), "--window", str(settings.window))
        decode = _decode_seconds(window)
        figures.append(Figure("8 monitor", f"monitor, {settings.window} images, {what}", seconds, "s", decode,
                              seconds / decode, "< 60 s" if settings.window >= 10_000 else None,
                              seconds < 60 if settings.window >= 10_000 else None))
    return figures


def large_jpegs(settings: Settings) -> list[bytes]:
    """settings.memory_distinct cartoon images at settings.memory_sides, saved again at quality 100 (about 0.5 MB
    each at the full settings)."""
    import io

    from PIL import Image

    from contract import features
    from ingest import synthetic
    from monitoring import looks

    out = []
    for index in range(settings.memory_distinct):
        drawn = synthetic.render_image(features.LABEL_NAMES[index % 2], index // 2, looks.FRESH_SEED,
                                       settings.memory_sides, NULL_LOOK)
        saved = io.BytesIO()
        with Image.open(io.BytesIO(drawn)) as image:
            image.save(saved, format="JPEG", quality=100, subsampling=0)
        out.append(saved.getvalue())
    return out


def bench_memory(root: pathlib.Path, settings: Settings) -> list[Figure]:
    """Section 3: monitor's peak memory over windows of large JPEGs at two sizes, and their ratio."""
    import math
    import shutil

    from contract.layout import RunLayout
    from contract.traffic import PREDICT_ORIGIN
    from traffic.records import TrafficRecord
    from traffic.writer import TrafficWriter

    where = RunLayout(root)
    distinct = large_jpegs(settings)
    peaks, figures = [], []
    for size in settings.memory_windows:
        for folder in (where.traffic_root, where.labeling_root):
            shutil.rmtree(folder, ignore_errors=True)
        writer = TrafficWriter(str(where.traffic_root), batch_size=500, max_seconds=3600)
        window_bytes = 0
        for index in range(size):  # written one at a time: the benchmark holds no window either
            (jpeg,) = distinct_copies([distinct[index % len(distinct)]], 1, first=index)
            window_bytes += len(jpeg)
            writer.add(TrafficRecord(jpeg, math.nan, 1, 1_000_000 + index, f"request-{index}", PREDICT_ORIGIN))
        writer.flush()
        seconds, peak = _cli_peak("monitor", "--output-dir", str(root), "--window", str(size), "--sample",
                                  str(settings.memory_sample), "--json")
        queued = len(os.listdir(os.path.join(str(where.labeling_root), "queue-1", "unsorted")))
        peaks.append(peak)
        figures.append(Figure("10 monitor memory", f"peak RSS, {size} images of {window_bytes / size / 2**20:.2f} "
                              f"MB ({window_bytes / 2**20:.0f} MB; {queued} queued; {seconds:.0f} s)", peak, "MB"))
    ratio = peaks[1] / peaks[0]
    figures.append(Figure("10 monitor memory", f"peak at {settings.memory_windows[1]} over peak at "
                          f"{settings.memory_windows[0]} images", peaks[1], "MB", peaks[0], ratio, "< 1.15x",
                          ratio < 1.15))
    return figures


def _clopper_pearson(alarms: int, trials: int) -> tuple[float, float]:
    from scipy import stats

    low = stats.beta.ppf(0.025, alarms, trials - alarms + 1) if alarms else 0.0
    high = stats.beta.ppf(0.975, alarms + 1, trials - alarms) if alarms < trials else 1.0
    return float(low), float(high)


def bench_looks(root: pathlib.Path, settings: Settings) -> tuple[list[Figure], list[dict]]:
    """Section 2: the alarm rate of fresh cartoon windows, and of each other look by window size."""
    from contract import layout
    from contract.layout import RunLayout
    from ingest import synthetic
    from monitoring import drift, looks, measure, monitor, reference
    from monitoring.settings import MonitorSettings

    where = RunLayout(root)
    served = reference.served_model(where)
    embedder = measure.Embedder.load(os.path.join(served.version_dir, layout.KERAS_MODEL_FILE))
    options = MonitorSettings(false_alarm_rate=settings.false_alarm_rate, sample=10_000)
    theirs = monitor.measure_reference(where, served, embedder, options)

    def alarms(look: str, size: int, windows: int, first_seed: int) -> tuple[int, list[list[str]]]:
        moved = []
        for index in range(windows):
            images = looks.images(look, size, seed=first_seed + index)
            ours, _, _ = monitor.measure_window(len(images), monitor.in_memory(images), embedder, options)
            moved.append(drift.compare(ours, theirs, settings.false_alarm_rate, measure.VECTORS, index).moved())
        return sum(bool(m) for m in moved), moved

    rows = []
    count, moved = alarms(NULL_LOOK, settings.null_window_size, settings.null_windows, looks.FRESH_SEED)
    low, high = _clopper_pearson(count, settings.null_windows)
    rows.append({"look": NULL_LOOK, "window": settings.null_window_size, "windows": settings.null_windows,
                 "alarms": count, "interval": [low, high], "moved": moved})
    figures = [Figure("9 drift looks", f"{NULL_LOOK} (trained look), fresh seeds: alarm rate at "
                      f"{settings.null_window_size}", count / settings.null_windows * 100, "%",
                      settings.false_alarm_rate * 100, None, f"<= {settings.false_alarm_rate:.0%} "
                      f"(95% interval {low:.0%}-{high:.0%})", low <= settings.false_alarm_rate)]
    for look in synthetic.LOOKS:
        if look == NULL_LOOK:
            continue
        needed = None
        for size in settings.window_sizes:
            count, moved = alarms(look, size, settings.look_windows, looks.FRESH_SEED + 500)
            rows.append({"look": look, "window": size, "windows": settings.look_windows, "alarms": count,
                         "moved": moved})
            figures.append(Figure("9 drift looks", f"{look}: alarm rate at {size}",
                                  count / settings.look_windows * 100, "%"))
            if needed is None and count == settings.look_windows:
                needed = size
        figures.append(Figure("9 drift looks", f"{look}: smallest window that always alarmed",
                              float(needed or 0), "images", target="alarms" if needed else "never alarmed",
                              met=needed is not None))
    return figures, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Small data: the same code paths.")
    parser.add_argument("--skip-looks", action="store_true", help="Leave out the looks (section 2).")
    parser.add_argument("--skip-time", action="store_true", help="Leave out the timing (section 1).")
    parser.add_argument("--skip-memory", action="store_true", help="Leave out the memory (section 3).")
    parser.add_argument("--json", type=pathlib.Path, default=pathlib.Path("runs/drift.json"),
                        help="Where to write the figures. Default: runs/drift.json.")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else Settings()
    from cli import quiet_logs

    quiet_logs.apply()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        root = train(pathlib.Path(scratch), settings)
        figures = [] if args.skip_time else bench_time(root, settings)
        rows: list[dict] = []
        if not args.skip_looks:
            looks_figures, rows = bench_looks(root, settings)
            figures += looks_figures
        if not args.skip_memory:
            figures += bench_memory(root, settings)
    print(table(figures))
    print(f"drift benchmark took {time.perf_counter() - started:.0f} s ({'quick' if args.quick else 'full'}); "
          f"{os.cpu_count()} cores")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"settings": dataclasses.asdict(settings), "looks": rows,
                                     "figures": [dataclasses.asdict(f) for f in figures]}, indent=2))
    print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
