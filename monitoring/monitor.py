"""`monitor`: a window of served traffic against the served model's own data, the verdict, and what follows.

Steps, each in its own function: the served model and its spans (monitoring.reference); the window
(traffic.window); the measurements of both (monitoring.measure: sizes of every image, colour, score and
pooled features of a sample); the tests and their verdict (monitoring.drift); on drift, the window's images
queued for labels (monitoring.queue); the report (monitoring.report) and the record in ML Metadata
(monitoring.record).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import pathlib
import posixpath
import tempfile
from typing import Iterable, Iterator, Sequence

import numpy as np

from contract import layout, storage
from contract.errors import CommandError, printable
from contract.layout import RunLayout
from contract.traffic import time_text
from monitoring import drift, measure, queue, record, reference, report, tfdv_drift
from monitoring.settings import MIN_REFERENCE, MonitorSettings
from traffic import window as traffic_window

UNREADABLE_LISTED = 20  # the images of a window that could not be measured, named in the result; all are counted


class WindowTooSmallError(CommandError):
    """The window holds too few images that can be measured to test; the line says how many and how many are
    needed."""


class NothingToCheckYet(WindowTooSmallError):
    """The window holds fewer images than a check needs (a served model's first hours), or no model was pushed
    yet: no fault, and a scheduled check says so and succeeds, rather than failing every hour until traffic (or
    the first pushed model) comes."""


@dataclasses.dataclass
class Check:
    result: dict  # what --json prints; drift.json
    page: pathlib.Path | str  # a URI on a root not on this machine (gs://)
    line: str


def read_window(where: RunLayout, settings: MonitorSettings) -> traffic_window.TrafficWindow:
    window = traffic_window.read_window(str(where.traffic_root), max_images=settings.window,
                                        since_ms=settings.since_ms)
    if len(window) < settings.min_window:
        since = f" since {time_text(settings.since_ms)}" if settings.since_ms is not None else ""
        raise NothingToCheckYet(
            f"nothing to check yet: the window holds {len(window)} images of traffic{since} under "
            f"{where.traffic_root}; a check needs at least {settings.min_window} (--min-window)")
    return window


def measure_window(count: int, batches: Iterable[tuple[Sequence[int], list[bytes]]], embedder: measure.Embedder,
                   settings: MonitorSettings):
    """({quantity: values} of the window, lines naming what could not be measured, images measured). `batches`:
    (positions in the window, images) of each of the window's `count` images once, in any order
    (TrafficWindow.batches); only each image's figures are kept, in window order."""
    chosen = np.zeros(count, bool)
    chosen[measure.sample(count, settings.sample, settings.seed)] = True
    heights, widths = np.full(count, np.nan), np.full(count, np.nan)
    refused: dict[int, str] = {}
    measured: list[int] = []  # the positions of the images the embedder is given, in the order given

    def sampled() -> Iterator[bytes]:
        for positions, images in batches:
            for position, data in zip(positions, images):
                size = measure.image_size(data)
                if size:
                    heights[position], widths[position] = size
                if chosen[position]:
                    jpegs, lines = measure.checked([data], [position])
                    refused.update({position: line for line in lines})
                    measured.extend([position] * len(jpegs))
                    yield from jpegs

    seen = embedder.measure(sampled())
    order = np.argsort(measured, kind="stable")
    readable = ~np.isnan(heights)
    values = {measure.HEIGHT: heights[readable], measure.WIDTH: widths[readable],
              **{name: array[order] for name, array in seen.values.items()}}
    unreadable = [refused[position] for position in sorted(refused)]
    unreadable += [f"image {position}: no readable header" for position in np.flatnonzero(~readable)
                   if position not in refused]  # an image named once, for its first fault
    return values, unreadable, len(measured)


def _traced(line: str, window: traffic_window.TrafficWindow) -> str:
    """"image N: why" with where the window's image N was recorded: its span, its record there and its request's
    id, so that it can be found."""
    number, separator, why = line.partition(": ")
    try:
        position = int(number.removeprefix("image "))
        span, record = window.places[position]
    except (ValueError, IndexError):
        return line
    request = window.request_ids[position]
    return (f"{number} (traffic span {span}, record {record}"
            f"{', request ' + printable(str(request)) if request else ''}){separator}{why}")


def in_memory(images: list[bytes]) -> list[tuple[range, list[bytes]]]:
    """A list of images as measure_window's batches (one)."""
    return [(range(len(images)), images)]


def load_embedder(served: reference.ServedModel) -> measure.Embedder:
    path = posixpath.join(served.version_dir, layout.KERAS_MODEL_FILE)
    if not storage.backend.exists(path):
        raise reference.NoServedModelError(f"version {served.version} has no {layout.KERAS_MODEL_FILE} (pushed by an "
                                           "earlier release): its features cannot be measured; nothing was checked")
    if storage.is_local(path):
        return measure.Embedder.load(path)
    with tempfile.TemporaryDirectory() as local:  # Keras opens a path itself; the root's files go through storage
        copy = os.path.join(local, posixpath.basename(layout.KERAS_MODEL_FILE))
        with open(copy, "wb") as out:
            out.write(storage.backend.read(path))
        return measure.Embedder.load(copy)


def check_reference_spans(where: RunLayout, served: reference.ServedModel) -> None:
    """NoServedModelError naming the spans the served version was trained on whose folders are gone: read as
    spans of no images, they said nothing of why the reference was empty."""
    gone = [span for span in served.spans
            if not storage.backend.isdir(layout.span_dir(str(where.examples_root), span))]
    if gone:
        raise reference.NoServedModelError(
            f"the served version {served.version} was trained on span{'s' if len(gone) > 1 else ''} "
            f"{', '.join(map(str, gone))}, whose folder{'s are' if len(gone) > 1 else ' is'} gone from "
            f"{where.examples_root}: its held-out images, the check's reference, cannot be read; nothing was checked")


def measure_reference(where: RunLayout, served: reference.ServedModel, embedder: measure.Embedder,
                      settings: MonitorSettings) -> dict[str, np.ndarray]:
    stored: dict[str, list[float]] = {measure.HEIGHT: [], measure.WIDTH: []}

    def jpegs() -> Iterator[bytes]:
        for jpeg, height, width in reference.held_out_images(str(where.examples_root), served.spans,
                                                             settings.sample):
            stored[measure.HEIGHT].append(height)
            stored[measure.WIDTH].append(width)
            yield jpeg

    seen = embedder.measure(jpegs())
    if len(stored[measure.HEIGHT]) < MIN_REFERENCE:
        raise reference.NoServedModelError(
            f"the held-out splits of spans {served.spans} hold {len(stored[measure.HEIGHT])} images; the reference "
            f"needs at least {MIN_REFERENCE}: nothing was checked")
    return {**{name: np.array(values, float) for name, values in stored.items()}, **seen.values}


def _write_report(folder: str, result: dict, ours: dict, theirs: dict):
    """report.write into `folder`; on a root that is not on this machine (gs://), written here and copied there
    under a hidden name, renamed into place once whole. Returns the page."""
    if storage.is_local(folder):
        return report.write(pathlib.Path(folder), result, ours, theirs, result["tfdv"])
    with tempfile.TemporaryDirectory() as local:
        page = report.write(pathlib.Path(local) / posixpath.basename(folder), result, ours, theirs, result["tfdv"])
        staging = posixpath.join(posixpath.dirname(folder), f".{posixpath.basename(folder)}")
        for path in sorted(page.parent.rglob("*")):  # this machine's files, read here; the root's, through storage
            if path.is_file():
                target = posixpath.join(staging, path.relative_to(page.parent).as_posix())
                storage.backend.makedirs(posixpath.dirname(target))
                storage.backend.write(target, path.read_bytes())
        storage.backend.rename_folder(staging, folder)
    return posixpath.join(folder, page.name)


def check(where: RunLayout, settings: MonitorSettings, store: str | None = None) -> Check:
    """Runs one check of `where`'s traffic; NoServedModelError, WindowTooSmallError or TrafficDataError
    (refusals) before anything is written. `store`: the ML Metadata store as contract.metadata names them
    (a deployment's grpc://HOST:PORT or sqlite:///PATH); default: the root's own SQLite file."""
    try:
        served = reference.served_model(where, store)
    except reference.NothingPushedYet as none:
        raise NothingToCheckYet(f"nothing to check yet: {none}") from None
    check_reference_spans(where, served)
    store = store or str(where.metadata_path)
    window = read_window(where, settings)
    embedder = load_embedder(served)
    ours, unreadable, measured = measure_window(len(window), window.batches(), embedder, settings)
    unreadable = [_traced(line, window) for line in unreadable]
    if measured < min(settings.min_window, settings.sample):
        # A few images that cannot be decoded among the first ones leave nothing to check yet (the next traffic
        # fills the window); a window mostly of them is traffic too damaged to check.
        refusal = WindowTooSmallError if len(unreadable) > measured else NothingToCheckYet
        raise refusal(("nothing to check yet: " if refusal is NothingToCheckYet else "")
                      + f"of the window's {len(window)} images, {measured} of those sampled could be measured "
                      f"({'; '.join(unreadable[:3])}); a check needs at least "
                      f"{min(settings.min_window, settings.sample)}: nothing was checked")
    theirs = measure_reference(where, served, embedder, settings)
    verdict = drift.compare(ours, theirs, settings.false_alarm_rate, measure.VECTORS, settings.seed)
    checked_at = datetime.datetime.now(datetime.timezone.utc)
    folder = posixpath.join(str(where.monitoring_dir), f"check-{checked_at.strftime('%Y%m%dT%H%M%S%fZ')}")
    result = {
        "checked": True, "drift": verdict.drift, "verdict": verdict.line(),
        "tests": [test.to_json() for test in verdict.tests],
        "false_alarm_rate": settings.false_alarm_rate, "served_version": served.version,
        "checked_at": checked_at.isoformat(timespec="seconds"), "report": posixpath.join(folder, report.PAGE),
        "window": {"images": len(window), "sampled": measured, "spans": window.spans,
                   "first": time_text(window.times_ms.min()), "last": time_text(window.times_ms.max()),
                   "other_versions": int(np.count_nonzero(window.versions != served.version))},
        "reference": {"images": len(theirs[measure.SCORE]), "spans": served.spans},
        "unreadable": unreadable[:UNREADABLE_LISTED], "unreadable_count": len(unreadable), "labeling_queue": None,
    }
    if verdict.drift and settings.queue:
        result["labeling_queue"], _ = queue.export_batches(
            str(where.labeling_root), window.batches(), window.scores,
            {"served_version": served.version, "moved": verdict.moved(), "report": result["report"]},
            queue.ingested(str(where.examples_root)))
    try:
        result["tfdv"] = tfdv_drift.compare(ours, theirs, (*measure.SIZES, measure.BRIGHTNESS, measure.SATURATION,
                                                           measure.SCORE))
        page = _write_report(folder, result, ours, theirs)
        result["mlmd_id"] = record.record_check(store, folder, served.model_id, {
            record.DRIFT: verdict.drift, record.SERVED_VERSION: served.version, record.WINDOW_IMAGES: len(window),
            record.FALSE_ALARM_RATE: settings.false_alarm_rate, record.TESTS: result["tests"],
            record.QUEUE: result["labeling_queue"] or ""})
    except BaseException:
        # A queue whose check has no report and no record would name a page that is not there, and hold its
        # images from every later queue: it goes with the check (the next check queues them again).
        if result["labeling_queue"] and storage.backend.exists(result["labeling_queue"]):
            storage.backend.rmtree(result["labeling_queue"])
        raise
    line = f"{verdict.line()}; {len(window)} images against version {served.version}'s data; report {page}"
    if result["labeling_queue"]:
        line += f"; queued for labels: {result['labeling_queue']}"
    elif verdict.drift and settings.queue:
        line += f"; nothing new to queue: each image is in an earlier queue under {where.labeling_root}"
    return Check(result, page, line)
