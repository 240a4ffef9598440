"""The steps of a run around the TFX DAG, written once for every orchestrator.

Before the DAG, by whoever holds the root's lease (the local run's process,
the Kubeflow ingest task): look after the metadata store (executions a killed
run left RUNNING are marked CANCELED; outputs whose files are gone are marked
DELETED), record served versions the store missed (orchestration.run.reconcile),
ingest the source as a new span (unchanged data reuses the latest; spans cut
short are moved aside first), and check the spans other tools wrote. What
happened is kept as a `BeforeTheDag` record. After the DAG (the local run;
the Kubeflow exit handler): the run's summary from ML Metadata completed with
that record and the run's outcome, said, and written with the report under
the run's folder on any storage (`after_the_dag`), then the lease released.
Every orchestrator runs the same sequence: lease, `start_run`, its DAG,
`after_the_dag`, release; the lines go to the caller's `say`. A new source
kind, check or summary field is a change here, and every orchestrator has it.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import os
import posixpath
import re
from typing import Any, Callable

from config import DataConfig, beam_policy
from contract.errors import REFUSED, CommandError, RunFailedError
from ingest import carried, foreign_spans, sources, span_report, spans
from orchestration.root import store_health

# Where the lines a user sees go: the command line's output (cli/), a Kubeflow task's log
# (orchestration/engines/kfp_components.py). Library code hands its lines here and prints none itself.
Say = Callable[[str], None]


class RunRefused(CommandError):
    """The run cannot start: the message says why and how to fix it. Nothing was changed."""


@dataclasses.dataclass
class BeforeTheDag:
    """What the steps before the DAG did."""

    ingest: dict[str, Any] | None  # the ingest report of the span the run trains on, if it has one
    table: str  # what to print about the data
    canceled: list[str] = dataclasses.field(default_factory=list)  # nodes a killed run left RUNNING
    missing: list[str] = dataclasses.field(default_factory=list)  # '<type> <uri>' of outputs gone from disk
    took_over: dict[str, str] | None = None  # the stale lease this run took over
    # Served versions ML Metadata did not know (a push or rollback killed before its record), found and recorded
    reconciled: list[str] = dataclasses.field(default_factory=list)
    cleaned: list[str] = dataclasses.field(default_factory=list)  # spans cut short, moved out of the examples root
    freed: list[int] = dataclasses.field(default_factory=lambda: [0, 0])  # canceled executions' temp: folders, bytes
    # {the folder a local root was in: [its records that now name the root where it is, those the root does not
    # hold]} (moved, copied, copied in part)
    relocated: dict[str, list[int]] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> BeforeTheDag:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})

    def notes(self) -> list[str]:
        """The lease taken over and the executions canceled, as the run's summary keeps them."""
        notes = store_health.relocation_notes(self.relocated)
        if self.took_over:
            notes.append(f"took over the pipeline root from run {self.took_over['run_id']}, whose lease was stale "
                         f"({self.took_over['why']})")
        notes += [f"serving folder: {line}" for line in self.reconciled]
        notes += [f"examples: {line}" for line in self.cleaned]
        if self.canceled:
            notes.append(f"an earlier run stopped while {', '.join(self.canceled)} ran (killed?); marked CANCELED "
                         "in ML Metadata")
        if self.freed[0]:
            notes.append(f"removed the temporary folders of {self.freed[0]} canceled executions (feature caches "
                         f"of a killed Trainer or Tuner): {self.freed[1] / 2**20:.1f} MB freed")
        return notes

    def messages(self) -> list[str]:
        """What to tell the user before the run starts: the notes, and the outputs found gone (the summary keeps
        those in a field of their own)."""
        if not self.missing:
            return self.notes()
        return [*self.notes(), f"{len(self.missing)} earlier outputs are gone from disk; marked DELETED in ML "
                "Metadata, so their nodes run again and resolvers pass them over:\n  " + "\n  ".join(self.missing)]


NO_SOURCE = "no_source"  # an ingest report's key: the run was given no source, this is the newest span's


def ingest_settings(data: DataConfig) -> spans.IngestSettings:
    return spans.IngestSettings(max_pixels=data.max_image_pixels, train_buckets=data.train_buckets,
                                eval_buckets=data.eval_buckets, test_buckets=data.test_buckets,
                                max_file_bytes=data.max_file_mb << 20, span_window=data.span_window)


def look_after_store(store, current_run: str | None = None, root: str | None = None) -> tuple[list[str], list[str]]:
    """(nodes of other runs left unfinished, now CANCELED; outputs gone from disk, now DELETED).

    Called by the holder of the root's lease only: no other run of the root is working. With `root` (a
    deployment's, whose store other deployments may share), only the root's runs (those with a folder under its
    runs/, which each writes before its DAG) and the artifacts under it: another root's run may be working."""
    if store is None:
        return [], []

    def ours(run: str) -> bool:
        return run != current_run and (root is None or _has_run_folder(root, run))
    canceled = store_health.cancel_unfinished_in(store, ours)
    return canceled, store_health.mark_missing(store, root)


def _has_run_folder(root: str, run: str) -> bool:
    import tensorflow as tf

    from contract.layout import RunLayout

    return tf.io.gfile.isdir(RunLayout(root).run_dir(run))


def ingest(kind: str | None, location: str, examples_root: str, data: DataConfig,
           beam_args=functools.partial(beam_policy.ingest_args, 0)) -> tuple[dict[str, Any] | None, str, list[str]]:
    """Ingests `location` (a source of `kind`, one of ingest.sources.LISTERS) as a span; kind None: the run
    uses the spans already there. Spans cut short and staging folders of a killed ingest are cleaned up first
    (the caller holds the root's lease). Returns (the span's ingest report, a table to print, what the clean-up
    did); RunRefused if there is nothing usable."""
    refuse_window(kind, location, examples_root, data.span_window)
    cleaned, _ = span_report.clean_up(examples_root)
    report, table = _ingest(kind, location, examples_root, data, beam_args)
    return report, "\n".join([*cleaned, table]), cleaned


def refuse_window(kind: str | None, location: str, examples_root: str, window: int) -> None:
    """RunRefused, before any work, for a span window above 1 where labeled queues are (ingest.carried)."""
    if window <= 1:
        return
    try:
        reports = {span: span_report.load_report(examples_root, span)
                   for span in span_report.existing_spans(examples_root)}
        carried.check_window(reports, window, carried.queue_identity(kind, location) if kind and location else None)
    except sources.SourceError as error:
        raise RunRefused(str(error)) from None


def _ingest(kind: str | None, location: str, examples_root: str, data: DataConfig, beam_args):
    if kind is None or not location:
        existing = span_report.existing_spans(examples_root)
        if not existing:
            raise RunRefused(f"no source given and no spans in {examples_root}; pass a source (--data-dir, "
                             "--parquet, --tfds-data-dir or --demo locally; the source parameter on Kubeflow)")
        latest = span_report.load_report(examples_root, existing[-1])
        # the newest span's report, said as not this run's ingest
        return (latest.to_json() | {NO_SOURCE: True} if latest else None,
                f"no source given: running on the spans in {examples_root} (latest: span {existing[-1]})")
    try:
        report = spans.ingest(kind, location, examples_root, ingest_settings(data), beam_args)
    except CommandError:  # a source that cannot be read, no usable images: refused, nothing ingested
        raise
    except Exception as error:
        fault = storage_fault(error)
        if fault is None:
            raise
        raise IngestFailed(f"cannot write the new span under {examples_root}: {fault}; nothing was ingested (its "
                           "staging folder is removed, the spans before it are as they were)") from None
    return report.to_json(), report.table(written_to=span_report.report_path(examples_root, report.span))


class IngestFailed(RunFailedError):
    """The span could not be written (a full disk, a quota, a read-only folder); nothing was ingested. The
    command line words it in one line with exit code 1, as any failed run."""


# A full disk, a file size limit, a quota, a read-only file system, no permission.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES}


def storage_fault(error: BaseException) -> str | None:
    """One line for an error that is the storage's (see _STORAGE_ERRNOS), however it arrived: raised here, or
    re-raised by a Beam worker as text ("RuntimeError: OSError: [Errno 28] ..."); None for any other error."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _STORAGE_ERRNOS:
            return f"[Errno {seen.errno}] {os.strerror(seen.errno)}"
        seen = seen.__cause__ or seen.__context__
    found = re.search(r"\[Errno (\d+)\]", str(error))
    if found and int(found.group(1)) in _STORAGE_ERRNOS:
        return f"[Errno {found.group(1)}] {os.strerror(int(found.group(1)))}"
    if "No space left on device" in str(error):
        return "No space left on device"
    return None


def check_spans(examples_root: str, window: int, max_pixels: int = DataConfig.max_image_pixels,
                max_file_mb: int = DataConfig.max_file_mb) -> None:
    """Spans written without an ingest report (by another tool) are read record by record first."""
    problems = foreign_spans.window_problems(examples_root, window, max_pixels,
                                             foreign_spans.record_limit(max_file_mb))
    if problems:
        raise RunRefused(
            f"the data gate stopped the run before ImportExampleGen: {len(problems)} problem"
            f"{'s' if len(problems) != 1 else ''} in spans written without an ingest report (fix or remove them, "
            "or ingest the images with `ingest`):\n  " + "\n  ".join(problems))


def before_the_dag(store, examples_root: str, kind: str | None, location: str, data: DataConfig, *,
                   current_run: str | None = None, beam_args=functools.partial(beam_policy.ingest_args, 0),
                   took_over: dict | None = None, serving_dir: str | None = None,
                   pipeline_name: str = "", root: str | None = None,
                   pipeline_root: str | None = None) -> BeforeTheDag:
    """Every step before the DAG, in order; RunRefused when the run cannot start. `root`: a deployment's, whose
    store other deployments may share (look_after_store); `pipeline_root`: a local run's, where what canceled
    executions left is removed."""
    refuse_window(kind, location, examples_root, data.span_window)
    # a local run's own store: outputs recorded where its root was before it was moved are its own, found here
    from orchestration.run import reconcile  # here: it loads TFMA, which `ingest` alone never needs

    relocated, followed = (reconcile.follow_a_moved_root(store, os.path.dirname(os.path.abspath(pipeline_root)),
                                                         serving_dir)
                           if store is not None and pipeline_root and root is None else ({}, None))
    canceled, missing = look_after_store(store, current_run, root)
    freed = list(store_health.remove_canceled_temp(store, pipeline_root)) if pipeline_root else [0, 0]
    # Before the baseline is resolved: the model actually served must be the one the candidate is judged against.

    reconciled = (list(reconcile.reconcile(store, serving_dir, pipeline_name, scoped=root is not None).values())
                  if store is not None and serving_dir else []) + ([followed] if followed else [])
    report, table, cleaned = ingest(kind, location, examples_root, data, beam_args)
    check_spans(examples_root, data.span_window, data.max_image_pixels, data.max_file_mb)
    return BeforeTheDag(ingest=report, table=table, canceled=canceled, missing=missing, took_over=took_over,
                        reconciled=reconciled, cleaned=cleaned, freed=freed, relocated=relocated)


def start_run(store, examples_root: str, kind: str | None, location: str, data: DataConfig, *, say: Say,
              clear_previous: Callable[[], None] | None = None, **before) -> BeforeTheDag:
    """The first half of every run, once its lease is held (the local run's process, the Kubeflow ingest task):
    the steps before the DAG (before_the_dag, with `before`'s keywords), then the previous run's output cleared
    (`clear_previous`, where the run writes where the one before it did), then what they found said: the table,
    then the messages. The second half is after_the_dag, which releases the lease.

    The previous output goes once the steps accepted the run, or failed (whatever happens to this run, it is
    never read as this run's own); a refusal leaves it."""
    try:
        found = before_the_dag(store, examples_root, kind, location, data, **before)
    except BaseException as error:
        if clear_previous is not None and not (isinstance(error, CommandError) and error.exit_code == REFUSED):
            clear_previous()
        raise
    if clear_previous is not None:
        clear_previous()
    for line in (found.table, *found.messages()):
        say(line)
    return found


def complete_summary(summary, before: BeforeTheDag | None, *, error: str | None = None,
                     beam_args: list[str] = (), notes: list[str] = ()) -> None:
    """Adds what happened outside ML Metadata to a summary read from it (reporting.run_summary)."""
    if before is not None:
        summary.ingest = ({k: before.ingest[k] for k in ("span", "reused", "files_seen")}
                          | {NO_SOURCE: bool(before.ingest.get(NO_SOURCE))}
                          | {"counts": span_report.shown_counts(before.ingest),
                             "carried": sum(entry.get("examples", 0) for entry in before.ingest.get("carried", []))}
                          if before.ingest else None)
        summary.missing = list(before.missing)
        notes = [*notes, *before.notes()]
    summary.notes = [*notes, *summary.notes]  # the summary's own: files of the model it could not read
    summary.beam_args = list(beam_args)
    if error is not None:
        summary.error = error


class ReportNotWritten(RunFailedError):
    """The run ended (its summary is printed) but its summary file or report could not be written."""


def after_the_dag(summary, before: BeforeTheDag | None, folder: str, training: dict, *, say: Say,
                  error: str | None = None, beam_args: list[str] = (), notes: list[str] = (),
                  release: Callable[[], str | None] | None = None) -> str:
    """Every step after the DAG: the summary read from ML Metadata completed (complete_summary) and said, then
    written as <folder>/run_summary.json (whole or not at all) and the report as <folder>/report/ (`folder` a
    local path or a gs:// URI); then, whatever became of them, the lease released (`release`, where the run holds
    one beyond this call; the line it returns is said). Returns the report page's path; ReportNotWritten when
    either cannot be written."""
    try:
        return _summary_and_report(summary, before, folder, training, say=say, error=error, beam_args=beam_args,
                                   notes=notes)
    finally:  # the run is over
        released = release() if release is not None else None
        if released:
            say(released)


def _summary_and_report(summary, before: BeforeTheDag | None, folder: str, training: dict, *, say: Say,
                        error: str | None, beam_args: list[str], notes: list[str]) -> str:
    from contract import layout, storage
    from reporting import run_summary

    complete_summary(summary, before, error=error, beam_args=beam_args, notes=notes)
    say(summary.text())
    path = posixpath.join(folder, layout.SUMMARY_FILE)
    try:
        storage.backend.makedirs(folder)
        run_summary.write_json(summary, path)
    except Exception as exc:  # OSError here, tf.errors.OpError on an object store
        raise ReportNotWritten(f"the run summary could not be written to {path}: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
    say(f"summary written to {path}")
    try:
        page = _write_report(summary, folder, training, before.ingest if before else None)
    except Exception as exc:  # the run itself is done; say what went wrong with its report
        raise ReportNotWritten(f"the run report could not be written: {type(exc).__name__}: {exc}") from None
    say(f"report: {page}")
    return page


def _write_report(summary, folder: str, training: dict, ingest_report: dict | None) -> str:
    """A local folder gets the report in place (reporting.run_report replaces it whole); a URI a copy of one
    rendered here."""
    import tempfile

    from contract import layout, storage
    from reporting import run_report

    if "://" not in folder:
        return str(run_report.write_report(summary, folder, training, ingest_report))
    with tempfile.TemporaryDirectory() as local:
        page = run_report.write_report(summary, local, training, ingest_report)
        final = posixpath.join(folder, layout.REPORT_DIR)
        storage.backend.rmtree(final)
        for figure_or_page in sorted(page.parent.iterdir()):
            storage.backend.write(posixpath.join(final, figure_or_page.name), figure_or_page.read_bytes())
    return posixpath.join(final, page.name)
