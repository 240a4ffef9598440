#!/usr/bin/env python3
"""Ingest throughput against a plain single-process decode loop over the same files.

The reference is the least work any ingest must do: read each file and decode
it once (PIL, single process, one core). Ingest, which decodes on every core,
is compared per core of the machine. Ingest also checks the image with TensorFlow's
decoder, hashes it, de-duplicates, assigns splits and writes
TFRecords, on Beam with 1 worker (in process) and 2 worker processes.
Each figure is the median of --repeats runs; ratios are against the
reference measured in the same run.

    .venv/bin/python -m benchmarks.ingest_throughput --images 2000 --repeats 3
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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from ingest.synthetic import DEMO_SIDES  # noqa: E402


def decode_loop(files: list[pathlib.Path]) -> None:
    """The reference: read and decode each file once with PIL, in one process."""
    from PIL import Image

    for path in files:
        with Image.open(path) as image:
            image.convert("RGB").load()


def _timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="Generated images (half cats, half dogs).")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per measurement; the median is reported.")
    parser.add_argument("--sides", type=int, nargs=2, default=list(DEMO_SIDES), metavar=("MIN", "MAX"),
                        help="Side range of the generated images in pixels (PetImages' photos are mostly "
                             "up to 500 px a side).")
    parser.add_argument("--json", type=pathlib.Path, help="Also write the figures here.")
    args = parser.parse_args(argv)

    from cli import quiet_logs

    quiet_logs.apply()  # as quiet as `run`: the figures, not the libraries' notices
    from config import beam_policy
    from ingest import spans, synthetic

    with tempfile.TemporaryDirectory() as scratch:
        data = pathlib.Path(scratch) / "images"
        synthetic.write_demo_images(data, args.images // 2, sides=tuple(args.sides))
        files = sorted(data.rglob("*.jpg"))
        megabytes = sum(p.stat().st_size for p in files) / 1e6
        reference = _timed(lambda: decode_loop(files), args.repeats)

        def ingest(workers: int):
            def run():
                out = tempfile.mkdtemp(dir=scratch)
                spans.ingest("folder", data, out, beam_args=lambda items: beam_policy.ingest_args(workers, items))
            return run

        one = _timed(ingest(1), args.repeats)
        two = _timed(ingest(2), args.repeats)

    rate = {"reference decode loop (1 process)": len(files) / reference,
            "ingest, 1 worker": len(files) / one, "ingest, 2 workers": len(files) / two}
    print(f"{len(files)} generated JPEGs of {args.sides[0]}-{args.sides[1]} px, {megabytes:.1f} MB, "
          f"{os.cpu_count()} cores, median of {args.repeats}")
    print(f"{'':36}{'images/s':>10}{'vs reference':>14}{'per core vs ref.':>18}")
    for name, value in rate.items():
        # ingest uses every core even in one process (it decodes a batch of images on all of them at once); the
        # reference decodes on one
        cores = 1 if name.startswith("reference") else os.cpu_count() or 1
        ratio = value / rate["reference decode loop (1 process)"]
        print(f"{name:36}{value:>10.0f}{ratio:>13.2f}x{ratio / cores:>17.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"images": len(files), "sides": args.sides, "megabytes": megabytes,
                                         "repeats": args.repeats,
                                         "images_per_second": rate}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
