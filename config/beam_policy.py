"""The one Beam policy: how Beam's DirectRunner runs ingest and the TFX components.

In process, or in worker processes. Workers cost their start (each imports
TensorFlow) and moving every element between processes, so they pay off only
with enough work and cores: the thresholds below come from the measurements in
the README's Performance section. `--beam-workers N` overrules the policy:
1 runs in process, N > 1 in N worker processes. Other runners (Dataflow) are
Beam arguments of their own: `compile --beam-arg`.
"""

from __future__ import annotations

import os

IN_PROCESS = ("--direct_running_mode=in_memory",)
# Arguments that restate Beam's own defaults (the DirectRunner, in this process). Given any Beam argument at all,
# TFX's Beam components package TFX as a source distribution for remote workers, a copy of its tree and a
# `setup.py sdist`, in every Beam component of every run, for a file a DirectRunner never reads (its cost:
# docs/performance.md).
BEAM_DEFAULTS = frozenset({*IN_PROCESS, "--direct_num_workers=1"})

# Ingest decodes, checks and hashes every image and moves its bytes between workers for the duplicate check: on
# few cores that traffic costs more than the second worker gains (docs/performance.md, "Ingest on 2 cores").
INGEST_MIN_ITEMS = 3000
INGEST_MIN_CORES = 4
# The data components (ImportExampleGen, StatisticsGen) gain from workers from about this many examples; the
# Evaluator never does (its model already uses every core), and it gets the same arguments.
COMPONENTS_MIN_EXAMPLES = 50_000


def _worker_processes(workers: int) -> list[str]:
    # 0: Beam counts the cores of the machine that runs the component, at run time.
    return ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]


def direct_runner_args(workers: int, work: int | None, min_work: int, min_cores: int = 1) -> list[str]:
    """DirectRunner arguments for `work` items (None: not known before the run, e.g. on Kubeflow).

    workers: 1 in process; N > 1 N worker processes; 0 decides: in process when
    the work is known and below `min_work` or the machine has fewer than
    `min_cores` cores, else one worker process per core.
    """
    if workers == 1:
        return list(IN_PROCESS)
    if workers > 1:
        return _worker_processes(workers)
    if work is not None and (work < min_work or (os.cpu_count() or 1) < min_cores):
        return list(IN_PROCESS)
    return _worker_processes(0)


def ingest_args(workers: int, items: int) -> list[str]:
    """For ingesting `items` files or records."""
    return direct_runner_args(workers, items, INGEST_MIN_ITEMS, INGEST_MIN_CORES)


def component_args(workers: int = 0, examples: int | None = None) -> list[str]:
    """For the TFX components of a run that reads `examples` examples."""
    return direct_runner_args(workers, examples, COMPONENTS_MIN_EXAMPLES)


def tfx_args(args: list[str]) -> list[str]:
    """The Beam arguments to hand TFX's components: `args` less those that only restate Beam's defaults."""
    return [arg for arg in args if arg not in BEAM_DEFAULTS]


def fast_tfrecord_checksums() -> None:
    """Beam's TFRecord sink and source checksum every record (CRC-32C) with python-snappy when it is installed, else
    with crcmod: 23 us for a 12 KB image, about 4% of an ingest. google-crc32c, which Google Cloud Storage's client
    brings along, computes the same checksum in 0.5 us. Given to Beam in each process that imports ingest.spans
    (Beam's workers import it to run ingest's steps) or runs the pipeline; a no-op where Beam already has a function
    or google-crc32c has no compiled code."""
    try:
        import google_crc32c
        from apache_beam.io import tfrecordio
    except ImportError:
        return
    if google_crc32c.implementation == "c" and not getattr(tfrecordio._default_crc32c_fn, "fn", None):
        tfrecordio._default_crc32c_fn.fn = google_crc32c.value

