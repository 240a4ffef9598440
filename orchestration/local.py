"""The local orchestrator: one run of the pipeline on this machine.

Ingests the source as a new span, checks spans other tools wrote, builds the
pipeline with pipeline.create_pipeline, runs it on TFX's LocalDagRunner with a
SQLite ML Metadata store and Beam's DirectRunner (arguments from
orchestration.beam_policy), then writes the run's summary and report. Every
path comes from contract.layout.RunLayout over the output directory. A run
holds the output directory's lock from its first write to its last.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import pathlib
import shutil
import sys

from tfx import v1 as tfx

from config import PipelineConfig
from contract.layout import RunLayout
from ingest import sources, spans, synthetic
from orchestration import beam_policy, store_health
from orchestration.run_lock import exclusive_run
from pipeline import pipeline as pipeline_lib
from reporting import run_report, run_summary

DEMO = "demo"  # the generated demo images; every other kind is one of ingest.sources.LISTERS


@dataclasses.dataclass(frozen=True)
class Source:
    """What a run ingests: an image folder, a Parquet file or folder, a TFDS data_dir, or the generated demo."""

    kind: str  # DEMO or a kind of ingest.sources.LISTERS
    location: pathlib.Path | None = None  # None for the demo, whose images go under the output directory
    demo_images: int = synthetic.DEMO_IMAGES_PER_CLASS


# Exit codes of a run.
OK, FAILED, REFUSED, INTERRUPTED = 0, 1, 2, 130


def ingest(config: PipelineConfig, output_dir: pathlib.Path, source: Source, beam_workers: int = 0) -> int:
    """Only ingests the source as a span (under the lock); returns the exit code."""
    with exclusive_run(output_dir):
        report = _ingest(config, RunLayout(output_dir.resolve()), source, beam_workers)
    return OK if report else REFUSED


def run(config: PipelineConfig, output_dir: pathlib.Path, source: Source | None, *, beam_workers: int = 0,
        allow_anomalies: bool = False, notes: list[str] = ()) -> int:
    """Ingests `source` (None: runs on the spans already there) and runs the pipeline; returns the exit code:
    0 done, 1 the pipeline failed, 2 refused before it started, 130 interrupted. `notes` (settings chosen for
    the user) are printed first and kept in the run summary."""
    where = RunLayout(output_dir.resolve())
    store_health.check(where.metadata_path)
    for note in notes:
        print(note, flush=True)
    with exclusive_run(output_dir):
        return _run_locked(config, where, source, beam_workers, allow_anomalies, list(notes))


def _ingest(config: PipelineConfig, where: RunLayout, source: Source, beam_workers: int):
    """Ingests the source; returns the report, or prints the error and returns None."""
    if source.kind == DEMO:
        synthetic.write_demo_images(where.demo_images, source.demo_images)
        kind, location = "folder", where.demo_images
    else:
        kind, location = source.kind, source.location
    settings = spans.IngestSettings(max_pixels=config.data.max_image_pixels, train_buckets=config.data.train_buckets,
                                    eval_buckets=config.data.eval_buckets)
    try:
        report = spans.ingest(kind, location, where.examples_root, settings,
                              functools.partial(beam_policy.ingest_args, beam_workers))
    except (sources.SourceError, spans.NoUsableImagesError) as error:
        print(f"error: {error}", file=sys.stderr)
        return None
    print(report.table(), flush=True)
    return report


def _run_locked(config: PipelineConfig, where: RunLayout, source: Source | None, beam_workers: int,
                allow_anomalies: bool, notes: list[str]) -> int:
    where.root.mkdir(parents=True, exist_ok=True)
    # The previous run's summary and report go now: whatever happens to this run, they are never read as its own.
    where.summary_path.unlink(missing_ok=True)
    shutil.rmtree(where.report_dir, ignore_errors=True)
    where.tfdv_statistics_page.unlink(missing_ok=True)

    if source is not None:
        report = _ingest(config, where, source, beam_workers)
        if report is None:
            return REFUSED
        ingest_report = report.to_json()
    elif spans.existing_spans(where.examples_root):
        latest_span = spans.existing_spans(where.examples_root)[-1]
        latest = spans.load_report(where.examples_root, latest_span)
        ingest_report = latest.to_json() if latest else None
        print(f"no source given: running on the spans in {where.examples_root} (latest: span {latest_span})")
    else:
        print(f"error: no source given and no spans in {where.examples_root}; pass --data-dir, --parquet, "
              "--tfds-data-dir or --demo", file=sys.stderr)
        return REFUSED

    problems = spans.window_problems(where.examples_root, config.data.span_window)
    if problems:
        print(f"error: the data gate stopped the run before ImportExampleGen: {len(problems)} problem"
              f"{'s' if len(problems) != 1 else ''} in spans written without an ingest report (fix or remove "
              f"them, or ingest the images with `ingest`):\n  " + "\n  ".join(problems), file=sys.stderr)
        return REFUSED
    beam_args = beam_policy.component_args(
        beam_workers, spans.examples_in_spans(where.examples_root, config.data.span_window))
    pipeline = pipeline_lib.create_pipeline(
        config,
        examples_root=str(where.examples_root),
        pipeline_root=str(where.pipeline_root),
        serving_dir=str(where.serving_dir),
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(where.metadata_path)),
        beam_pipeline_args=beam_args,
        allow_anomalies=allow_anomalies,
    )
    # This process holds the lock: a RUNNING execution in the store belongs to a run that was killed.
    abandoned = store_health.cancel_unfinished(where.metadata_path, frozenset())
    if abandoned:
        print(f"an earlier run stopped while {', '.join(abandoned)} ran (killed?); marked CANCELED in ML Metadata",
              flush=True)
    earlier_runs = store_health.run_ids(where.metadata_path)
    missing = store_health.mark_missing_in_file(where.metadata_path)
    if missing:
        print(f"{len(missing)} earlier outputs are gone from disk; marked DELETED in ML Metadata, so their nodes run "
              "again and resolvers pass them over:\n  " + "\n  ".join(missing), flush=True)
    error, interrupted = None, False
    try:
        tfx.orchestration.LocalDagRunner().run(pipeline)
    except KeyboardInterrupt:
        interrupted = True
        canceled = store_health.cancel_unfinished(where.metadata_path, earlier_runs)
        error = "interrupted (Ctrl-C)" + (f" while {', '.join(canceled)} ran (marked CANCELED in ML Metadata)"
                                          if canceled else "")
    except Exception as exc:  # the summary reports it; the exit code says it
        error = f"{type(exc).__name__}: {exc}"
        logging.debug("pipeline failed", exc_info=True)
    summary = run_summary.summarize(str(where.metadata_path), config.name, exclude_runs=earlier_runs)
    if summary.run_id is None and error is None:
        error = "the pipeline recorded no run in ML Metadata"
    summary.error = error
    summary.beam_args = beam_args
    summary.missing = missing
    summary.notes = notes
    summary.ingest = {k: ingest_report[k] for k in ("span", "reused", "files_seen", "counts")} \
        if ingest_report else None
    print(summary.text())
    code = INTERRUPTED if interrupted else FAILED if summary.failed else OK
    try:
        run_summary.write_json(summary, str(where.summary_path))
    except OSError as exc:
        print(f"error: the run summary could not be written to {where.summary_path}: {exc.strerror or exc}",
              file=sys.stderr)
        return code or FAILED
    print(f"summary written to {where.summary_path}")
    try:
        page = run_report.write_report(summary, where.root, dataclasses.asdict(config.training), ingest_report)
        print(f"report: {page}")
    except Exception as exc:  # the run itself is done; say what went wrong with its report
        print(f"error: the run report could not be written: {type(exc).__name__}: {exc}", file=sys.stderr)
        return code or FAILED
    return code
