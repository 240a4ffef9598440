#!/usr/bin/env python3
"""Ingest throughput against a plain single-process decode loop over the same files.

The reference is the least work any ingest must do: read each file and decode
it once (PIL, single process, one core). Ingest, which decodes on every core,
is compared per core of the machine. Ingest also checks the image with TensorFlow's
decoder, hashes it, de-duplicates, assigns splits and writes
TFRecords, on Beam with 1 worker (in process) and 2 worker processes.
Each figure is the median of --repeats rounds; each round times the
reference and each ingest in turn (in reverse order every other round), so
that a machine that runs slower or faster for a while moves both: the
per-core ratio is also given round by round, each ingest against the
reference of its own round.

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

from benchmarks import figures  # noqa: E402
from cli.flags import count  # noqa: E402
from ingest.synthetic import DEMO_SIDES  # noqa: E402


def decode_loop(files: list[pathlib.Path]) -> None:
    """The reference: read and decode each file once with PIL, in one process."""
    from PIL import Image

    for path in files:
        with Image.open(path) as image:
            image.convert("RGB").load()


def rounds(measured: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds of each of `measured`'s functions, `repeats` rounds of each in turn: in the dict's order, then in
    reverse, and so on, so that none is always the first after the previous round's work (its files still being
    written out, its caches warm)."""
    seconds: dict[str, list[float]] = {name: [] for name in measured}
    for round_ in range(repeats):
        for name, fn in (list(measured.items()) if round_ % 2 == 0 else list(measured.items())[::-1]):
            started = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - started)
    return seconds


def per_core_by_round(seconds: dict[str, list[float]], reference: str, cores: int) -> dict[str, list[float]]:
    """Each measurement's rate per core against the reference's rate in the same round (the reference runs on one
    core; ingest on every core, even in one process: it decodes a batch of images on all of them at once)."""
    return {name: [base / spent / cores for base, spent in zip(seconds[reference], times, strict=True)]
            for name, times in seconds.items() if name != reference}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=count(2), default=2000,
                        help="Generated images (half cats, half dogs; an odd count is one fewer).")
    parser.add_argument("--repeats", type=count(1), default=3,
                        help="Rounds of the measurements; the median is reported.")
    parser.add_argument("--sides", type=int, nargs=2, default=list(DEMO_SIDES), metavar=("MIN", "MAX"),
                        help="Side range of the generated images in pixels (PetImages' photos are mostly "
                             "up to 500 px a side).")
    parser.add_argument("--json", type=pathlib.Path, help="Also write the figures here.")
    args = parser.parse_args(argv)
    if args.json and (reason := figures.unwritable(args.json)):
        parser.error(f"--json: {reason}")
    if not 1 <= args.sides[0] <= args.sides[1]:
        parser.error(f"--sides: MIN {args.sides[0]} and MAX {args.sides[1]} must be 1 <= MIN <= MAX")

    from cli import quiet_logs

    quiet_logs.apply()  # as quiet as `run`: the figures, not the libraries' notices
    from config import beam_policy
    from ingest import spans, synthetic

    with tempfile.TemporaryDirectory() as scratch:
        data = pathlib.Path(scratch) / "images"
        synthetic.write_demo_images(data, args.images // 2, sides=tuple(args.sides))
        files = sorted(data.rglob("*.jpg"))
        megabytes = sum(p.stat().st_size for p in files) / 1e6

        def ingest(workers: int):
            def run():
                out = tempfile.mkdtemp(dir=scratch)
                spans.ingest("folder", data, out, beam_args=lambda items: beam_policy.ingest_args(workers, items))
            return run

        reference_name = "reference decode loop (1 process)"
        seconds = rounds({reference_name: lambda: decode_loop(files), "ingest, 1 worker": ingest(1),
                          "ingest, 2 workers": ingest(2)}, args.repeats)

    cores = os.cpu_count() or 1
    rate = {name: len(files) / statistics.median(times) for name, times in seconds.items()}
    by_round = per_core_by_round(seconds, reference_name, cores)
    print(f"{len(files)} generated JPEGs of {args.sides[0]}-{args.sides[1]} px, {megabytes:.1f} MB, "
          f"{cores} cores, median of {args.repeats}")
    print(f"{'':36}{'images/s':>10}{'vs reference':>14}{'per core vs ref.':>18}")
    for name, value in rate.items():
        ratio = value / rate[reference_name]
        print(f"{name:36}{value:>10.0f}{ratio:>13.2f}x{ratio / (1 if name == reference_name else cores):>17.2f}x")
    for name, ratios in by_round.items():
        print(f"{name}, per core against its round's reference: "
              + ", ".join(f"{ratio:.2f}x" for ratio in ratios) + f" (median {statistics.median(ratios):.2f}x)")
    if args.json:
        args.json.write_text(json.dumps({"images": len(files), "sides": args.sides, "megabytes": megabytes,
                                         "repeats": args.repeats, "cores": cores, "images_per_second": rate,
                                         "seconds": seconds,
                                         "per_core_ratio_by_round": by_round}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
