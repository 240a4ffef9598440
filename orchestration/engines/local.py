"""The local orchestrator: one run of the pipeline on this machine.

Ingests the source as a new span, checks spans other tools wrote, builds the
pipeline with pipeline.create_pipeline, runs it on TFX's LocalDagRunner with a
SQLite ML Metadata store and Beam's DirectRunner (arguments from
config.beam_policy), then writes the run's summary and report. Every
path comes from contract.layout.RunLayout over the output directory. A run
holds the output directory's lock from its first write to its last.

Nothing is written or removed before a run is accepted: the output directory
must be a pipeline root (orchestration.root.marker) and the source must exist
before the lease is taken, and the previous run's summary and report go only
once the steps before the DAG have accepted the run (or failed: then they
would pass for this run's). A refusal (exit 2) comes before TensorFlow is
imported wherever it can, so it is quick.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import pathlib
import shutil
import time
from typing import TYPE_CHECKING, Collection

from config import PipelineConfig, TuningConfig, beam_policy
from contract import interrupts, layout, startup
from contract.errors import FAILED, INTERRUPTED, OK, InterruptedRunError, RunFailedError, first_line
from contract.layout import RunLayout
from ingest import sources, synthetic
from orchestration.root import marker, run_settings, store_health
from orchestration.root.run_lock import exclusive_run

if TYPE_CHECKING:  # only for the annotations: lifecycle imports TensorFlow, which a refusal must not wait for
    from orchestration.run.lifecycle import Say

DEMO = sources.DEMO  # the generated demo images; every other kind is one of ingest.sources.LISTERS


@dataclasses.dataclass(frozen=True)
class Source:
    """What a run ingests: an image folder, a Parquet file or folder, a TFDS data_dir, or the generated demo."""

    kind: str  # DEMO or a kind of ingest.sources.LISTERS
    location: pathlib.Path | None = None  # None for the demo, whose images go under the output directory
    demo_images: int = synthetic.DEMO_IMAGES_PER_CLASS


def ingest(config: PipelineConfig, output_dir: pathlib.Path, source: Source, beam_workers: int = 0, *,
           say: Say) -> int:
    """Only ingests the source as a span (under the lock); returns the exit code. A CommandError (exit 2) when
    there is nothing usable."""
    where = RunLayout(output_dir.resolve())
    marker.inspect(where.root)  # a folder of the user's is named as such first, whatever else is wrong
    check_source(source)
    # SIGTERM (a scheduler's stop) as a Ctrl-C: the span's staging folder removed, the Beam workers ended, one line
    with interrupts.TermAsCtrlC(), exclusive_run(output_dir, claim=True) as held:
        with startup.loading_libraries():
            from orchestration.run import lifecycle  # here: a refusal before it needs no TensorFlow

        _say(say, held.adopted)
        kind, location = _source_location(where, source)
        _, table, _ = lifecycle.ingest(kind, location, str(where.examples_root), config.data,
                                       functools.partial(beam_policy.ingest_args, beam_workers))
    say(table)
    return OK


def run(config: PipelineConfig, output_dir: pathlib.Path, source: Source | None, *, beam_workers: int = 0,
        allow_anomalies: bool = False, notes: list[str] = (), tuning: TuningConfig | None = None,
        fixed_settings: Collection[str] = (), record: tuple[run_settings.Recorded, list[str]] | None = None,
        say: Say) -> int:
    """Ingests `source` (None: runs on the spans already there) and runs the pipeline; returns the exit code:
    0 done, 1 the pipeline failed, 130 interrupted (a CommandError with exit code 2: refused before it started).
    `notes` (settings chosen for the user) are said first and kept in the run summary; every line goes to `say`.
    `tuning`: search the hyperparameters first, within this budget; `fixed_settings`: training fields the user
    set, which no search changes (pipeline.create_pipeline); `record`: the settings kept with the root for its next
    runs (orchestration.root.run_settings), written once its ingest accepted the run, and the lines that say what they
    change, said then and kept with the notes."""
    where = RunLayout(output_dir.resolve())
    for note in notes:
        say(note)
    marker.inspect(where.root)  # a folder of the user's is named as such first, whatever else is wrong
    check_source(source, where)
    with interrupts.TermAsCtrlC(), exclusive_run(output_dir, claim=True) as held:
        _say(say, held.adopted)
        # Under the lease: a lock on the store is then another program's, never a run of this root.
        store_health.check(where.metadata_path)
        return _run_locked(config, where, source, beam_workers, allow_anomalies,
                           [*notes, *filter(None, [held.adopted])], held.lease.took_over,
                           {"tuning": tuning, "fixed_settings": tuple(fixed_settings)}, record, say)


def check_source(source: Source | None, where: RunLayout | None = None) -> None:
    """What can be known of the source before anything is written: it exists, or (none given, for a run in
    `where`) there are spans to run on. sources.SourceError (exit 2) if not; the ingest checks the rest."""
    if source is None:
        if where is not None and not _has_spans(where.examples_root):
            raise sources.SourceError(
                f"no source given and no spans in {where.examples_root}; pass a source (--data-dir, --parquet, "
                "--tfds-data-dir or --demo): nothing was changed")
        return
    if source.kind == DEMO:
        return
    location = str(source.location)
    if source.kind == "folder" and not os.path.isdir(location):
        raise sources.SourceError(f"data directory {location!r} does not exist or is not a directory: nothing "
                                  "was changed")
    if not os.path.exists(location):
        raise sources.SourceError(f"{source.kind} source {location!r} does not exist: nothing was changed")


def _has_spans(examples_root: pathlib.Path) -> bool:
    return examples_root.is_dir() and any(layout.span_number(p.name) is not None and p.is_dir()
                                          for p in examples_root.iterdir())


def _say(say: Say, line: str | None) -> None:
    if line:
        say(line)


def _source_location(where: RunLayout, source: Source | None) -> tuple[str | None, str]:
    """(kind, location) of lifecycle.ingest; the demo's images are generated first."""
    if source is None:
        return None, ""
    if source.kind == DEMO:
        synthetic.write_demo_images(where.demo_images, source.demo_images)
        return "folder", str(where.demo_images)
    return source.kind, str(source.location)


def _accept(config: PipelineConfig, where: RunLayout, source: Source | None, beam_workers: int,
            took_over: dict | None, say: Say):
    """The steps before the DAG (lifecycle.start_run), which clear the previous run's summary and report."""
    with startup.loading_libraries():
        from orchestration.run import lifecycle

    try:
        kind, location = _source_location(where, source)
    except BaseException:  # the demo's images could not be written: as the steps before the DAG failing
        _clear_last_run(where)
        raise
    # This process holds the root's lease: a RUNNING execution in the store belongs to a run that was killed.
    return lifecycle.start_run(
        store_health.open_store(where.metadata_path), str(where.examples_root), kind, location, config.data,
        say=say, clear_previous=functools.partial(_clear_last_run, where),
        beam_args=functools.partial(beam_policy.ingest_args, beam_workers), took_over=took_over,
        serving_dir=str(where.serving_dir), pipeline_name=config.name, pipeline_root=str(where.pipeline_root))


def _publish(where: RunLayout, run_folder: pathlib.Path) -> pathlib.Path:
    """The run's summary and report copied to the root, the report listing the root's runs; ReportNotWritten when
    the copy fails (the run's own folder keeps them)."""
    from orchestration.run import lifecycle
    from reporting import run_index

    version, rolled_back_to = _served_versions(where)
    try:
        return run_index.publish(pathlib.Path(where.root), run_folder, version, rolled_back_to)
    except OSError as error:
        raise lifecycle.ReportNotWritten(f"the run's report is in {run_folder}, but could not be copied to "
                                         f"{where.report_dir}: {error.strerror or first_line(error)}") from None


def republish_report(root: str | os.PathLike) -> str | None:
    """The root's report page made again from the newest run's, its list of runs naming the version served now
    (after a rollback, which runs no pipeline); a line saying what went wrong when it could not be, else None."""
    from reporting import run_index

    where = RunLayout(pathlib.Path(root).resolve())
    newest = run_index.runs(pathlib.Path(where.root))
    if not newest:
        return None
    try:
        run_index.publish(pathlib.Path(where.root), pathlib.Path(where.runs_dir, newest[0]["folder"]),
                          *_served_versions(where))
    except OSError as error:
        return f"the root's report page still names the version served before: {error.strerror or error}"
    return None


def _served_versions(where: RunLayout) -> tuple[int | None, int | None]:
    """The version the serving config names, and the one it is a rollback to (None when it is not one)."""
    import json

    from contract import metadata as metadata_lib
    from contract import served

    try:
        config = served.read_config(str(where.serving_dir))
    except served.ConfigError:  # one `models` names as damaged: no version is marked as served
        config = None
    version = config.version if config is not None else None
    rolled_back_to, seen = None, {version}
    while True:  # a rollback to a version that was itself a rollback: the run pushed the one at the chain's end
        try:
            record = json.loads(pathlib.Path(where.serving_dir, str(rolled_back_to or version),
                                             layout.PUSH_RECORD_FILE).read_text())
        except (OSError, ValueError):
            break
        target = record.get(metadata_lib.ROLLED_BACK_TO) if isinstance(record, dict) else None
        if type(target) is not int or target in seen:  # noqa: E721 - true and false are not versions
            break
        rolled_back_to = target
        seen.add(target)
    return version, rolled_back_to


class WeightsNotFetched(RunFailedError):
    """--weights imagenet, and the file Keras' MobileNetV2 loads could not be downloaded."""


def _fetch_weights(config: PipelineConfig, before, where: RunLayout, say: Say) -> None:
    """--weights imagenet: the file Keras' MobileNetV2 loads, into Keras' cache now, before the first component:
    a machine without network is told so once the ingest is done, not at the Trainer after the statistics and
    Transform. Only a run on a new span must train, and fails here (its summary says why); one whose ingest reused
    its span (an unchanged folder, every night) or that was given no source may find its Trainer cached, and goes on
    with a warning (a Trainer that must train then stops on the weights, as it says), where a Trainer of the root
    ever wrote a model (none there: nothing can be cached)."""
    from config import WEIGHTS_IMAGENET

    if config.training.weights != WEIGHTS_IMAGENET:
        return
    from trainer import weights_files

    try:
        weights_files.fetch_imagenet_file(config.training.alpha, config.data.image_size)
    except OSError as error:
        problem = (f"--weights imagenet: {error}. Without network access, download the file elsewhere and pass its "
                   "path as --weights, or use --weights none")
        from contract import metadata as node_ids
        from orchestration.run.lifecycle import NO_SOURCE

        trained = pathlib.Path(where.pipeline_root, node_ids.TRAINER, "model")
        new_span = before.ingest and not before.ingest.get("reused") and not before.ingest.get(NO_SOURCE)
        if new_span or not (trained.is_dir() and any(trained.iterdir())):
            raise WeightsNotFetched(problem) from None
        say(f"warning: {problem} (this run goes on: it ingested no new data, so its Trainer may be cached)")


def _clear_last_run(where: RunLayout) -> None:
    """The last run's summary goes (it must not be read as this run's); its report is replaced by a page that
    says a run is under way and lists every run's report, the served model's marked."""
    from reporting import run_index

    where.summary_path.unlink(missing_ok=True)
    where.tfdv_statistics_page.unlink(missing_ok=True)
    try:
        run_index.started(pathlib.Path(where.root), *_served_versions(where))
    except OSError as error:
        logging.warning("the root's report page could not be replaced: %s", error)
        shutil.rmtree(where.report_dir, ignore_errors=True)


def _cancel_unfinished(where: RunLayout, earlier_runs: frozenset[str], cause: str = "Ctrl-C") -> list[str]:
    """store_health.cancel_unfinished for a stopped run; InterruptedRunError when another program kept the store
    locked through all of ML Metadata's retries (a backup, an sqlite3 shell): nothing more can be recorded then."""
    try:
        return store_health.cancel_unfinished(where.metadata_path, earlier_runs)
    except RuntimeError as error:
        if "Concurrent writes aborted" not in str(error):  # ML Metadata's own, after its retries on a locked store
            raise
        raise InterruptedRunError(
            f"interrupted ({cause}); the ML Metadata store {where.metadata_path} stayed locked by another process, so "
            "the component that ran is not marked CANCELED and no summary was written (the next run marks it)"
        ) from None


def _run_locked(config: PipelineConfig, where: RunLayout, source: Source | None, beam_workers: int,
                allow_anomalies: bool, notes: list[str], took_over: dict | None, search: dict,
                record: tuple[run_settings.Recorded, list[str]] | None, say: Say) -> int:
    before = _accept(config, where, source, beam_workers, took_over, say)
    if record is not None:  # once the run is accepted: a run refused by its ingest changes nothing
        run_settings.write(where.root, record[0])
        for line in record[1]:
            say(line)
        notes = [*record[1], *notes]
    # Here, not at the top: `ingest` runs no pipeline, TFX's DSL takes seconds to import, and a refused run
    # needs none of it.
    with startup.loading_libraries():
        from tfx.orchestration.local.local_dag_runner import LocalDagRunner
        from tfx.orchestration.metadata import sqlite_metadata_connection_config

        from ingest import foreign_spans
        from orchestration.engines import tfx_node
        from pipeline import pipeline as pipeline_lib

    # A span another tool wrote has no report to count it: its records are counted (as far as the threshold), so a
    # small one runs in process rather than start a worker process per core (each imports TensorFlow). Only when
    # the policy decides: --beam-workers N needs no count.
    examples = foreign_spans.examples_in_window(where.examples_root, config.data.span_window,
                                                beam_policy.COMPONENTS_MIN_EXAMPLES) if beam_workers == 0 else None
    beam_args = beam_policy.component_args(beam_workers, examples)
    pipeline = pipeline_lib.create_pipeline(
        config,
        examples_root=str(where.examples_root),
        pipeline_root=str(where.pipeline_root),
        serving_dir=str(where.serving_dir),
        metadata_connection_config=sqlite_metadata_connection_config(str(where.metadata_path)),
        beam_pipeline_args=beam_args,
        allow_anomalies=allow_anomalies,
        **search,
    )
    earlier_runs = store_health.run_ids(where.metadata_path)
    error, interrupted, terms = None, False, interrupts.terms()
    # SIGINT recorded as well as raised: a Ctrl-C a finalizer swallows (the Evaluator's, the Trainer's) still stops
    # the run before its push (ServingPusher checks).
    ctrl_c = interrupts.Interrupts()
    try:
        with tfx_node.failed_resolutions_raise(), ctrl_c:  # a failed resolver stops the run
            _fetch_weights(config, before, where, say)
            LocalDagRunner().run(pipeline)
    except KeyboardInterrupt:
        interrupted = True
    except Exception as exc:  # the summary reports it; the exit code says it
        # A Ctrl-C that C code turned into another error, or printed and dropped before failing with one of its own
        interrupted = interrupts.from_ctrl_c(exc) or ctrl_c.interrupted
        error = f"{type(exc).__name__}: {exc}"
        logging.debug("pipeline failed", exc_info=True)
    finally:
        ctrl_c.close()  # again, should a Ctrl-C have cut its __exit__ short: no later run is blamed for it
    # From here the run only writes what it did: a Ctrl-C (a second one, pressed a moment after the first, or one
    # as a completed run finishes) waits until the summary and report are whole; the run's own code stands.
    with interrupts.Deferred() as deferred:
        code = _write_outcome(config, where, before, earlier_runs, error, interrupted and interrupts.cause(terms),
                              beam_args, notes, say)
    if deferred.received:
        say("Ctrl-C (or SIGTERM): it came while the run wrote its summary and report, which were written first"
            + ("" if interrupted else f"; the run had {'completed' if code == OK else 'failed'} by then"))
    return code


def _write_outcome(config: PipelineConfig, where: RunLayout, before, earlier_runs: frozenset[str],
                   error: str | None, interrupted: str | bool, beam_args: list[str], notes: list[str], say: Say) -> int:
    """After the DAG: what ran marked (CANCELED if stopped), the run's summary and report written in its own folder
    and copied to the root; returns the exit code. `interrupted`: what stopped the run ("Ctrl-C", "SIGTERM"), or
    False."""
    from contract import served
    from orchestration.run import lifecycle
    from reporting import run_summary

    if interrupted:
        canceled = _cancel_unfinished(where, earlier_runs, interrupted)
        error = f"interrupted ({interrupted})" + (f" while {', '.join(canceled)} ran (marked CANCELED in ML Metadata)"
                                          if canceled else "")
    summary = run_summary.summarize(str(where.metadata_path), config.name, exclude_runs=earlier_runs)
    if summary.run_id is None and error is None:
        error = "the pipeline recorded no run in ML Metadata"
    # what is served after the run (a rollback may have replaced an earlier push): said in the summary's pushed line
    state = served.served(str(where.serving_dir))
    # 0: nothing pushed yet; None: the config names a version no server can load (said by `models`), or none known
    summary.served_version = state.version if state.version is not None else (0 if state.named is None else None)
    summary.served_problem = state.problem()
    if summary.served_problem and error is None and not interrupted:
        # a run on unchanged data pushes nothing: what was served before it, deleted or changed since, stays unservable
        error = (f"nothing a server can load is served: {summary.served_problem}; `models` lists the versions, "
                 "`rollback --to N` serves one of them again")
    code = INTERRUPTED if interrupted else FAILED if (summary.failed or error) else OK
    # The run's own folder, as a Kubeflow run's; then its summary and report are the root's newest (run_index).
    run_folder = pathlib.Path(where.run_dir(summary.run_id or f"local-{time.strftime('%Y%m%dT%H%M%S')}"))
    try:
        lifecycle.after_the_dag(summary, before, str(run_folder), dataclasses.asdict(config.training), say=say,
                                error=error, beam_args=beam_args, notes=notes)
        say(f"report of this root's runs (the newest shown): {_publish(where, run_folder)}")
    except lifecycle.ReportNotWritten as failure:
        if interrupted:  # the run's own outcome; a run that failed, or had none to report, exits as failed
            raise InterruptedRunError(str(failure)) from None
        raise
    return code
