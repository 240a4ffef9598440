"""The labeling queue: a drifted window's images, in a folder a person sorts into cat/ and dog/.

labeling/queue-<N>/ holds the images in unsorted/, empty cat/ and dog/ folders, a contact sheet of the first
images with the served model's score, and README.txt saying what to do; its commit record (queue.json: the
count, the served version, the drift report) is written last, by the protocol every span follows
(contract.storage: staged in a hidden folder, renamed into place), so a queue is complete or absent. Sorted,
the folder is a source `ingest --data-dir` takes as the next span (ingest.sources: a queue's own files are
skipped, and an image still in unsorted/ is reported, never ingested), which every later span carries
(ingest.carried).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import time
from typing import Iterable, Sequence

from contract import features, layout, storage

STAGING_KIND = "queue"
SHEET_IMAGES = 60  # the contact sheet shows the first ones: a person sees the kind of image before sorting
_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF8", "gif"), (b"BM", "bmp"),
          (b"RIFF", "webp"))

README = """\
Images of traffic the served model (version {version}) was asked to classify, in a window that drifted from
the data it was trained on ({moved}). Sort them so that the next training learns from them:

1. Move each image from unsorted/ into cat/ or dog/ (leave out what is neither; leave it in unsorted/).
2. Ingest the sorted folder as the next span, from the project's checkout:
       .venv/bin/python pipeline_runner.py ingest --data-dir {folder} --output-dir {root}
   (where the package is installed, as in its container image: cats-vs-dogs ingest ...)
   Images still in unsorted/ are listed in the ingest report as not sorted, and never ingested.
3. Every span ingested after it carries its images: the next `pipeline_runner.py run --data-dir DATA
   --output-dir {root}` (the nightly schedule's line) trains on DATA and on this queue, and on it again
   whenever DATA changes.

{count} images; contact_sheet.png shows the first {shown} with the served model's dog probability.
The drift report: {report}
"""


_QUEUED_NAME = re.compile(r"[0-9]{6}-([0-9a-f]{12})\.[a-z]+")  # export's file names: <index>-<sha256 prefix>.<ext>


def queued_digests(labeling_root: str) -> set[str]:
    """The sha256 prefixes (export's names carry them, wherever a person moved the file) of the images in the
    committed queues under `labeling_root`: a check of a window that overlaps an earlier one queues only what is
    new, never the same image twice."""
    found: set[str] = set()
    if not storage.backend.isdir(labeling_root):
        return found
    for name in storage.backend.listdir(labeling_root):
        folder = posixpath.join(labeling_root, name)
        if layout.queue_number(name) is None or not storage.backend.exists(posixpath.join(folder, layout.QUEUE_RECORD)):
            continue
        found.update(match.group(1) for path in storage.backend.files(folder)
                     if (match := _QUEUED_NAME.fullmatch(posixpath.basename(path))))
    return found


def ingested(examples_root: str) -> tuple[set[str], int]:
    """(the sha256 prefixes in export's names, the highest queue number) of the labeling queues ingested as spans
    under `examples_root`, read from their records' source names: a queue whose folder was deleted or moved after
    its ingest still counts, so that its images are not queued again, nor its number given to another queue."""
    import io

    import tensorflow as tf

    from ingest import carried, span_report
    from traffic.records import TrafficDataError
    from traffic.tfrecord import read_tfrecords

    prefixes, highest = set(), 0
    for span in span_report.existing_spans(examples_root):
        try:
            report = span_report.load_report(examples_root, span)
        except span_report.DamagedReportError:  # ingest and the runs name it; a check passes over it
            continue
        if report is None or not report.labeled_queue:
            continue
        highest = max(highest, layout.queue_number(posixpath.basename(report.source.rstrip("/"))) or 0)
        for _, path in carried.own_files(layout.span_dir(examples_root, span)):
            # read through contract.storage (a bucket's root as any other); a damaged file stops nothing here
            try:
                records = list(read_tfrecords(io.BytesIO(storage.backend.read(path)), path))
            except TrafficDataError:  # ingest and the runs name a damaged span
                continue
            for record in records:
                source = tf.train.Example.FromString(record).features.feature[features.SOURCE_KEY]
                match = _QUEUED_NAME.fullmatch(posixpath.basename(source.bytes_list.value[0].decode()))
                if match:
                    prefixes.add(match.group(1))
    return prefixes, highest


def _extension(data: bytes) -> str:
    return next((name for magic, name in _MAGIC if data.startswith(magic)), "bin")


def next_number(labeling_root: str, at_least: int = 1) -> int:
    if not storage.backend.isdir(labeling_root):
        return at_least
    numbers = [n for name in storage.backend.listdir(labeling_root) if (n := layout.queue_number(name)) is not None]
    return max(max(numbers, default=0) + 1, at_least)


SHEET_TILE = 160


def _tile(name: str, data: bytes, score: float | None) -> tuple:
    """(name, a JPEG of at most SHEET_TILE px a side or None, score, why unreadable or None) of one image: the
    sheet keeps this, not the image's bytes, while the queue's images pass."""
    import io

    from PIL import Image

    from ingest.images import RejectedImage, check_image

    try:
        picture = Image.open(io.BytesIO(check_image(data).jpeg), formats=("JPEG",)).convert("RGB")
    except RejectedImage as rejection:
        return name, None, score, rejection.reason
    picture.thumbnail((SHEET_TILE, SHEET_TILE))
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=90)
    return name, out.getvalue(), score, None


def _sheet(tiles: list[tuple]) -> bytes | None:
    """The contact sheet PNG of up to SHEET_IMAGES of _tile's entries."""
    import io

    from inference import contact_sheet
    from inference.predict import Prediction

    predictions, jpegs = [], {}
    for name, thumbnail, score, reason in tiles[:SHEET_IMAGES]:
        if thumbnail is None:
            predictions.append(Prediction(name, None, None, reason))
            continue
        jpegs[len(predictions)] = thumbnail
        known = score is not None and score == score
        label = features.LABEL_NAMES[int(score >= 0.5)] if known else "?"
        predictions.append(Prediction(name, label, float(score) if known else 0.0))
    if not predictions:
        return None
    out = io.BytesIO()
    contact_sheet.render(predictions, jpegs, tile=SHEET_TILE, columns=6).save(out, format="PNG")
    return out.getvalue()


def export(labeling_root: str, images: list[bytes], scores, record: dict,
           known: tuple[set[str], int] = (set(), 0)) -> tuple[str | None, int]:
    """export_batches of a list of images."""
    return export_batches(labeling_root, [(range(len(images)), images)], scores, record, known)


def export_batches(labeling_root: str, batches: Iterable[tuple[Sequence[int], list[bytes]]], scores,
                   record: dict, known: tuple[set[str], int] = (set(), 0)) -> tuple[str | None, int]:
    """Publishes the images (duplicates once: the first given; none that an earlier queue holds) as the next
    queue-<N>; returns (its folder, images written), (None, 0) when every image is queued already. `batches`:
    (positions in the window, images), as TrafficWindow.batches reads them: each written as it comes, named by its
    position. `scores`: the served model's score at each position (NaN where unknown); `record`: more fields of
    queue.json (served_version, moved, report); `known`: the queues ingested already (`ingested`), whose images
    are not queued again and whose numbers are not used again. Called under the root's lease: a staging folder a
    killed check left is removed."""
    labeling_root = str(labeling_root)
    storage.backend.makedirs(labeling_root)
    storage.remove_staging(labeling_root, [f".{STAGING_KIND}-"])
    seen, written = queued_digests(labeling_root) | known[0], 0
    sheet: list[tuple[int, tuple]] = []  # (position, _tile's entry) of the first SHEET_IMAGES by position
    staging = posixpath.join(labeling_root, storage.staging_name(STAGING_KIND))
    try:
        for folder in (layout.QUEUE_UNSORTED, *features.LABEL_NAMES):
            storage.backend.makedirs(posixpath.join(staging, folder))
        for positions, images in batches:
            for index, data in zip(positions, images):
                digest = hashlib.sha256(data).hexdigest()
                if digest[:12] in seen:
                    continue
                seen.add(digest[:12])
                name = f"{index:06d}-{digest[:12]}.{_extension(data)}"
                storage.backend.write(posixpath.join(staging, layout.QUEUE_UNSORTED, name), data)
                written += 1
                score = float(scores[index]) if scores is not None and len(scores) > index else None
                if len(sheet) < SHEET_IMAGES or index < sheet[-1][0]:
                    sheet = sorted([*sheet, (index, _tile(name, data, score))], key=lambda entry: entry[0])
                    del sheet[SHEET_IMAGES:]
        if not written:
            return None, 0
        picture = _sheet([entry[1] for entry in sheet])
        if picture:
            storage.backend.write(posixpath.join(staging, layout.CONTACT_SHEET), picture)
        return _publish(labeling_root, staging, written, record, known[1] + 1), written
    finally:
        if storage.backend.exists(staging):
            storage.backend.rmtree(staging)


def _publish(labeling_root: str, staging: str, count: int, record: dict, at_least: int = 1) -> str:
    number = next_number(labeling_root, at_least)
    while True:
        final = posixpath.join(labeling_root, layout.queue_name(number))
        text = README.format(version=record.get("served_version"), moved=", ".join(record.get("moved", [])) or "-",
                             folder=final, root=posixpath.dirname(labeling_root), count=count,
                             shown=min(count, SHEET_IMAGES), report=record.get("report", "-"))
        storage.backend.write(posixpath.join(staging, layout.QUEUE_README), text.encode())
        commit = json.dumps({"queue": number, "images": count, "created_at": time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}, indent=2).encode()
        try:
            storage.publish(staging, final, layout.QUEUE_RECORD, commit)
            return final
        except storage.AlreadyExistsError:  # another check published this number first
            number += 1
