"""Turns a data source into a span of tf.Example TFRecords for ImportExampleGen.

Layout under the examples root (contract.layout):
    span-<N>/train/images-*.tfrecord       accepted images of the train split
    span-<N>/eval/images-*.tfrecord        ... of the eval split (the Trainer's choice of epoch)
    span-<N>/test/images-*.tfrecord        ... of the test split (the Evaluator's judgement)
    span-<N>/<split>/queue-span-<K>.tfrecord  images of span K's labeled queue, carried (ingest.carried)
    span-<N>/ingest_report.json            what happened to every file or record
The work runs on Beam (ingest.span_pipeline) with the arguments the caller gives for the number of
items (config.beam_policy decides them for a run). The report is
ingest.span_report's; spans other tools wrote are ingest.foreign_spans' job. A span
is written to a hidden folder, renamed into place and committed by its report
last (contract.storage), so no reader counts half a span, on any storage.
Ingesting data whose content equals the latest span's source, with the same
labeled queues to carry, writes nothing: the pipeline then finds the same span
and reruns from cache. The split comes
from the source when it gives one (e.g. train/ and validation/ folders; a
source with one held-out split has it divided between eval and test), else
from the image's content hash, so one image lands in the same split in every
span and never in two.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import posixpath
import time
from typing import Callable, Iterable, Sequence

import tensorflow as tf

from config.beam_policy import IN_PROCESS
from contract import features, layout, storage
from contract.errors import CommandError
from ingest import carried as carrying
from ingest import listing, sources, span_pipeline
from ingest.span_pipeline import IngestSettings
from ingest.span_report import (
    DUPLICATE,
    NORMALIZED,
    OUTCOMES,
    QUARANTINED,
    REPORT_FILE,
    STAGING_KIND,
    IngestReport,
    existing_spans,
    highest_span_number,
    load_report,
    numbers_used,
    record_number,
)

# Ingest writes plain TFRecords: JPEG bytes do not compress (see the README's Performance section).
SPLITS = layout.SPLITS

class NoUsableImagesError(CommandError, ValueError):
    """Every file was quarantined; the report says why."""


def _fingerprint(kind: str, location: str, settings: IngestSettings, listed: listing.Listing | None,
                 leave_out: str | None = None) -> str:
    """Content hash of the source's files (an operating system's own left out) and the settings that shape the
    span; `listed`: a folder source's listing.list_folder, as its items are made of; `leave_out`: the pipeline's
    output folder, never part of the source."""
    shaping = {k: v for k, v in dataclasses.asdict(settings).items() if k not in ("max_file_bytes", "span_window")}
    digest = hashlib.sha256(json.dumps([kind, shaping]).encode())
    single = not tf.io.gfile.isdir(location) if sources.is_uri(location) else os.path.isfile(location)
    if single:
        files = [("", location)]
    else:
        files, problems, _ = listed or listing.list_folder(location, leave_out)
        for relative, problem in problems:
            digest.update(_name_bytes(f"{relative}\0{problem}\0"))
    capped = kind == "folder"  # the cap is on image files, not on Parquet or TFDS files of many images
    for relative, path in files:
        digest.update(_name_bytes(relative) + b"\0")
        _hash_file(digest, path, settings.max_file_bytes if capped else None)
    return digest.hexdigest()


def _name_bytes(name: str) -> bytes:
    """A file name's own bytes, also for a name that is not UTF-8."""
    return name.encode("utf-8", "surrogateescape")


def _hash_file(digest, path: str, max_bytes: int | None) -> None:
    try:
        if max_bytes is not None:  # image files, read whole as the check reads them
            digest.update(sources.read_bytes(path, max_bytes))
            return
        with sources.open_binary(path) as f:  # Parquet and TFDS files, which can be gigabytes
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except sources.FileTooLarge as rejection:  # quarantined unread; its size stands for its bytes
        digest.update(f"\0above the cap: {rejection.size}\0".encode())
    except sources.NotRegularFile as rejection:  # quarantined unopened
        digest.update(f"\0{rejection}\0".encode())
    except OSError:  # quarantined by the check; once readable, its bytes change the fingerprint
        digest.update(b"\0unreadable\0")


def ingest(kind: str, location: str | os.PathLike, examples_root: str | os.PathLike,
           settings: IngestSettings = IngestSettings(),
           beam_args: Callable[[int], Sequence[str]] = lambda items: IN_PROCESS) -> IngestReport:
    """Writes a new span from a source, or reuses the latest if its data is the same.

    kind: one of sources.LISTERS: "folder" (class folders or Kaggle names), "parquet" or "tfds" (a TFDS data_dir).
    beam_args: the Beam arguments for a number of items.
    """
    location = str(location)
    if kind not in sources.LISTERS:
        raise sources.SourceError(f"unknown source kind {kind!r}; expected one of {sorted(sources.LISTERS)}")
    if not (tf.io.gfile.exists(location) if sources.is_uri(location) else os.path.exists(location)):
        raise sources.SourceError(f"{kind} source {location!r} does not exist")
    # A folder is listed once: its items are the files its fingerprint read.
    is_folder = tf.io.gfile.isdir(location) if sources.is_uri(location) else os.path.isdir(location)
    examples_root = str(examples_root)
    output_root = posixpath.dirname(examples_root.rstrip("/"))  # <root>/examples: the root is never data
    listed = listing.list_folder(location, output_root) if kind == "folder" and is_folder else None
    data_fingerprint = _fingerprint(kind, location, settings, listed, output_root)
    queue = carrying.queue_identity(kind, location)
    reports = {span: load_report(examples_root, span) for span in existing_spans(examples_root)}
    recorded = numbers_used(examples_root)
    carrying.check_window(reports, settings.span_window, queue)
    if reports:
        latest = reports[max(reports)]
        # What the next span would carry: a queue whose newest span was removed after the latest span (only the
        # numbers file names it) is carried no more, so the latest span, which carries its superseded span, is
        # not the same data.
        queues, _ = carrying.to_carry(reports, max([*reports, *recorded]) + 1, queue, recorded)
        if latest is not None and (latest.source_fingerprint == carrying.fingerprint(data_fingerprint, queues)
                                   or carrying.holds(latest, queue, data_fingerprint)):
            return dataclasses.replace(latest, reused=True, passed_over=_passed_over(listed, latest.passed_over))
    # Above spans cut short too: a reader may have seen them.
    span = layout.next_number(highest_span_number(examples_root), examples_root, "span")
    queues, dropped = carrying.to_carry(reports, span, queue, recorded)
    items = list(sources.folder_items(location, listed) if listed else sources.LISTERS[kind](location))

    # The span is built in a hidden folder beside its final place, where Beam's workers can write (on Dataflow
    # or a portable runner they are not this process), and published by contract.storage's protocol: renamed
    # into place, its ingest report (the commit record) last. The staging folder starts with a marker whose name
    # sorts before every other file, so that on an object store, where a rename goes object by object in name
    # order, a span cut short is marked incomplete from its first file on, and never read as a span another tool
    # wrote (before it comes only the folder's own directory marker: a folder with no file is cut short too).
    staging = posixpath.join(examples_root, storage.staging_name(STAGING_KIND))
    storage.backend.makedirs(staging)
    try:
        storage.backend.write(posixpath.join(staging, layout.SPAN_UNCOMMITTED), b"")
        started = time.time()
        carried = carrying.gather(examples_root, queues)
        divide = span_pipeline.divides_held_out(item.split for item in items)
        splits = carrying.data_splits(examples_root, reports) if queue is not None else {}
        outcomes = span_pipeline.write_shards(items, staging, settings, beam_args(len(items)), divide, carried.images,
                             queue is not None, splits) if items else []
        carrying.write(staging, carried, {o.replaces for o in outcomes if o.replaces})
        seconds = time.time() - started
        logging.info("ingest: %d items in %.1f s", len(items), seconds)

        report = _report(f"{kind}:{sources.printable(location)}", span, carrying.fingerprint(data_fingerprint, queues),
                         outcomes, carried.entries)
        report.seconds, report.labeled_queue, report.data_fingerprint = round(seconds, 3), queue, data_fingerprint
        report.not_carried, report.passed_over = dropped, _passed_over(listed, [])
        if report.files_seen != len(items) or sum(report.counts.values()) != report.files_seen:
            raise RuntimeError(f"ingest lost track of items: {len(items)} listed, {report.files_seen} with an "
                               f"outcome, counts {report.counts}")
        if not report.examples_from_source:
            raise NoUsableImagesError(f"no usable images in {kind} source {location}:\n{report.table()}")
        for split in SPLITS:
            tf.io.gfile.makedirs(posixpath.join(staging, split))  # an empty split is still a split
        record_number(examples_root, span, queue,
                      {number: report.labeled_queue for number, report in reports.items() if report is not None})
        publish_span(staging, layout.span_dir(examples_root, span), report)
    finally:
        storage.backend.rmtree(staging)
    return report


def _passed_over(listed: listing.Listing | None, otherwise: list[str]) -> list[str]:
    """What the folder holds now that was passed over, as a report can hold it (a name that is not UTF-8 as \\xNN)."""
    return [sources.printable(path) for path in listed.passed_over] if listed is not None else otherwise


def publish_span(staging: str, target: str, report: IngestReport) -> None:
    """The staged span (its marker first, then its TFRecords) becomes `target`, its report written last."""
    storage.publish(staging, target, REPORT_FILE, json.dumps(report.to_json(), indent=2).encode())
    storage.backend.remove(posixpath.join(target, layout.SPAN_UNCOMMITTED))
    for split in SPLITS:  # an object store has no empty folders: an empty split's is made again
        storage.backend.makedirs(posixpath.join(target, split))


def _report(source: str, span: int, fingerprint: str, outcomes: Iterable[span_pipeline.Outcome],
            carried: list[dict]) -> IngestReport:
    """The span's report: the source's outcomes, and its examples counted with the ones it carries."""
    rows = sorted(outcomes, key=lambda o: o.item_id)
    return IngestReport(
        source=source, span=span, reused=False, source_fingerprint=fingerprint, files_seen=len(rows),
        counts={kind: sum(1 for r in rows if r.outcome == kind) for kind in OUTCOMES},
        examples_per_label={name: sum(1 for r in rows if r.label == index)
                            + sum(c["examples_per_label"][name] for c in carried)
                            for index, name in enumerate(features.LABEL_NAMES)},
        examples_per_split={split: sum(1 for r in rows if r.split == split)
                            + sum(c["examples_per_split"][split] for c in carried) for split in SPLITS},
        carried=carried,
        quarantined=[{"file": r.item_id, "reason": r.detail} for r in rows if r.outcome == QUARANTINED],
        duplicates=[{"file": r.item_id, "duplicate_of": r.detail} for r in rows if r.outcome == DUPLICATE],
        normalized=[{"file": r.item_id, "change": r.detail} for r in rows if r.outcome == NORMALIZED],
    )
