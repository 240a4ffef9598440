"""Which traffic spans are committed, which are not and why, and the clean-up of those a killed writer left.

A span is committed when its report is there and names files that are all there, with no symbolic link
(contract.storage's publishing protocol); readers count committed spans alone.
"""

from __future__ import annotations

import os
import posixpath
import time

import tensorflow as tf

from contract import layout, storage
from contract.traffic import REPORT_FILE, STAGING_PREFIX
from traffic.records import TrafficDataError, TrafficReport

# A span left incomplete longer than this is no publication in progress (a writer renames its span into place,
# then writes its report at once): the sink's start moves it aside.
PUBLISH_GRACE_SECONDS = 600


def numbered(traffic_root: str) -> list[int]:
    """The numbers of the span-<N> folders, committed or not, in order."""
    if not storage.backend.isdir(traffic_root):
        return []
    return sorted(n for name in storage.backend.listdir(traffic_root) if (n := layout.span_number(name)) is not None)


def link_problem(traffic_root: str) -> str | None:
    """Why a local traffic folder cannot be used (it is a symbolic link: writing, removing or reading through it
    would touch the folder it points at), None if it can."""
    root = str(traffic_root)
    if storage.is_local(root) and os.path.islink(root):
        return f"{root} is a symbolic link (to {os.readlink(root)}), and links are never followed"
    return None


def span_dir(traffic_root: str, span: int) -> str:
    return layout.span_dir(traffic_root, span)


def load_report(traffic_root: str, span: int) -> TrafficReport:
    path = posixpath.join(span_dir(str(traffic_root), span), REPORT_FILE)
    try:
        return TrafficReport.from_json(storage.read_json(path), path)
    except storage.UnreadableFileError as error:
        raise TrafficDataError(str(error)) from None


def incomplete_reason(traffic_root: str, span: int) -> str | None:
    """Why span-<span> is not a committed traffic span (None: it is)."""
    folder = span_dir(str(traffic_root), span)
    linked = storage.link_problem(folder)
    if linked:
        return linked
    if not storage.backend.exists(posixpath.join(folder, REPORT_FILE)):
        return f"no {REPORT_FILE} (cut short while it was written)"
    report = load_report(traffic_root, span)
    missing = sorted(set(report.files) - set(storage.backend.files(folder)))
    if missing:
        return f"{len(missing)} of the files its report names are missing ({', '.join(missing[:3])})"
    return None


def committed_spans(traffic_root: str) -> list[int]:
    """The traffic spans a reader may read, oldest first."""
    root = str(traffic_root)
    linked = link_problem(root)
    if linked:
        raise TrafficDataError(f"traffic cannot be read: {linked}")
    return [span for span in numbered(root) if incomplete_reason(root, span) is None]


def incomplete_spans(traffic_root: str) -> dict[int, str]:
    """{span: why} of the numbered folders that are no committed span: a writer killed while it published one
    (its images are lost), or a folder of another hand."""
    root = str(traffic_root)
    found = {}
    for span in numbered(root):
        try:
            reason = incomplete_reason(root, span)
        except TrafficDataError as error:
            reason = str(error)
        if reason:
            found[span] = reason
    return found


def aside_dir(traffic_root: str) -> str:
    """Where incomplete spans go: beside the traffic folder, where no reader looks."""
    return str(traffic_root).rstrip("/") + storage.ASIDE_SUFFIX


def _aside_number(name: str) -> int | None:
    return layout.span_number("-".join(name.split("-")[:2]))


def highest_number(traffic_root: str) -> int:
    """The highest span number ever used: those moved aside count (a reader may have seen them)."""
    return max(numbered(traffic_root) + storage.aside_numbers(aside_dir(traffic_root), _aside_number), default=0)


def _newest_change(folder: str) -> float:
    """The time of the newest change to `folder` or a file in it, as Unix seconds."""
    paths = [folder] + [posixpath.join(folder, name) for name in storage.backend.files(folder)]
    return max(tf.io.gfile.stat(path).mtime_nsec / 1e9 for path in paths)


def move_incomplete_aside(traffic_root: str, now: float | None = None) -> list[str]:
    """Moves the incomplete spans untouched for PUBLISH_GRACE_SECONDS aside (their numbers are not used again)
    and names the younger ones; a line for each. Only for the root's one traffic sink, at its start."""
    root, now = str(traffic_root), time.time() if now is None else now
    lines = []
    for span, reason in incomplete_spans(root).items():
        folder = span_dir(root, span)
        if now - _newest_change(folder) < PUBLISH_GRACE_SECONDS:
            lines.append(f"{folder} is no committed span yet ({reason}): left as it is, in case a writer is "
                         "publishing it")
            continue
        moved = storage.move_aside(folder, aside_dir(root), layout.span_name(span), REPORT_FILE)
        lines.append(f"{folder} is no committed span ({reason}): a writer stopped while it published it, or "
                     f"another hand made it; moved to {moved}, its number is not used again")
    return lines


def remove_staging(traffic_root: str) -> list[str]:
    """Removes the staging folders a killed writer left; returns their names. Only for a writer that is the
    root's one traffic writer (the sink at its start): another writer's open batch would go with them."""
    if link_problem(traffic_root):
        return []  # not the root's folder: nothing in it is the writer's to remove
    return storage.remove_staging(str(traffic_root), [STAGING_PREFIX])
