"""A span's ingest report: what happened to every file or record of its source.

span-<N>/ingest_report.json beside the span's TFRecords. The run summary, the
report, the model card and the Beam policy read it; a span without one was
written by another tool (or its upload did not finish).
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath

import tensorflow as tf

from contract import layout
from ingest import sources

REPORT_FILE = layout.INGEST_REPORT

ACCEPTED = "accepted"
NORMALIZED = "normalized"
DUPLICATE = "duplicate"
QUARANTINED = "quarantined"
OUTCOMES = (ACCEPTED, NORMALIZED, DUPLICATE, QUARANTINED)


class DamagedReportError(sources.SourceError):
    """A span's ingest report cannot be read; the message names the file."""


@dataclasses.dataclass
class IngestReport:
    source: str  # "<kind>:<location>"
    span: int
    reused: bool  # True when the latest span already held exactly this data
    source_fingerprint: str
    files_seen: int
    counts: dict[str, int]  # per outcome; they add up to files_seen
    examples_per_label: dict[str, int]
    examples_per_split: dict[str, int]
    quarantined: list[dict[str, str]]  # {"file", "reason"}
    duplicates: list[dict[str, str]]  # {"file", "duplicate_of"}
    normalized: list[dict[str, str]]  # {"file", "change"}
    seconds: float = 0.0  # wall time of the check-and-write work (not listing or process start)

    @property
    def examples_written(self) -> int:
        return self.counts[ACCEPTED] + self.counts[NORMALIZED]

    def to_json(self) -> dict:
        return dataclasses.asdict(self) | {"examples_written": self.examples_written}

    @classmethod
    def from_json(cls, data: dict) -> "IngestReport":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})

    def table(self, max_listed: int = 20) -> str:
        lines = [f"Ingest of {self.source} -> span {self.span}"
                 + (" (unchanged data: existing span reused)" if self.reused else ""),
                 f"  {'files seen':<14}{self.files_seen:>8}"]
        lines += [f"  {outcome:<14}{self.counts[outcome]:>8}" for outcome in OUTCOMES]
        lines.append("  examples: " + ", ".join(f"{k} {v}" for k, v in self.examples_per_label.items())
                     + " | " + ", ".join(f"{k} {v}" for k, v in self.examples_per_split.items()))
        for entry in self.quarantined[:max_listed]:
            lines.append(f"  quarantined {entry['file']}: {entry['reason']}")
        if len(self.quarantined) > max_listed:
            lines.append(f"  ... and {len(self.quarantined) - max_listed} more quarantined (see {REPORT_FILE})")
        return "\n".join(lines)


def existing_spans(examples_root: str | os.PathLike) -> list[int]:
    root = str(examples_root)
    if not tf.io.gfile.isdir(root):
        return []
    names = [name.rstrip("/") for name in tf.io.gfile.listdir(root)]
    return sorted(n for name in names
                  if (n := layout.span_number(name)) is not None and tf.io.gfile.isdir(posixpath.join(root, name)))


def load_report(examples_root: str | os.PathLike, span: int) -> IngestReport | None:
    """The span's ingest report, or None for a span written by another tool (or whose upload did not finish)."""
    path = posixpath.join(layout.span_dir(examples_root, span), REPORT_FILE)
    if not tf.io.gfile.exists(path):
        return None
    try:
        with tf.io.gfile.GFile(path) as f:
            return IngestReport.from_json(json.load(f))
    except (ValueError, TypeError, KeyError) as error:  # bad JSON, or JSON of another shape
        raise DamagedReportError(
            f"{path} is damaged ({type(error).__name__}: {error}); restore it, or remove the folder "
            f"span-{span} to ingest its data again as a new span") from None


def examples_in_spans(examples_root: str | os.PathLike, last: int) -> int | None:
    """Examples written to the `last` newest spans, from their ingest reports; None if one has no report."""
    reports = [load_report(examples_root, span) for span in existing_spans(examples_root)[-last:]]
    return sum(r.examples_written for r in reports) if reports and all(reports) else None
