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

from contract import layout, storage
from contract.errors import printable, shown_name
from ingest import sources, system_files

REPORT_FILE = layout.INGEST_REPORT
# In the examples root: every span number ingest has published there, and the labeled queue each held. A span's
# folder may be removed (to stop training on a queue, or by hand); its number is never used again, and a queue
# whose newest span is gone stays stopped, though no report is left that names that span.
NUMBERS_FILE = "span_numbers.json"
STAGING_KIND = "span"  # a span is staged in examples/.span-<hex>/

ACCEPTED = "accepted"
NORMALIZED = "normalized"
DUPLICATE = "duplicate"
QUARANTINED = "quarantined"
OUTCOMES = (ACCEPTED, NORMALIZED, DUPLICATE, QUARANTINED)
NOT_SORTED = "not sorted"  # shown apart from the quarantined, among which the report counts them (shown_counts)


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
    # A sorted labeling queue's span: the SHA-256 of its queue record, the queue's identity (ingest.carried).
    labeled_queue: str | None = None
    # The images of earlier labeled queues' spans this span carries, one entry per span: {"span", "queue",
    # "fingerprint", "examples", "examples_per_split", "examples_per_label", "left_out", "in_source"} (queue and
    # fingerprint: the queue's identity and its content's fingerprint; left_out: images a newer queue holds too;
    # in_source: images the source holds too, kept from the source with the person's label). The examples_*
    # fields above count them in; counts and files_seen are the source's alone.
    carried: list[dict] = dataclasses.field(default_factory=list)
    # Labeled queues not carried because their newest span is gone: {"queue", "span" (the one gone), "earlier"
    # (the span of it that is left, not carried), "name" (its folder)}.
    not_carried: list[dict] = dataclasses.field(default_factory=list)
    # The source's own fingerprint; source_fingerprint, which decides reuse, also covers the carried spans.
    data_fingerprint: str = ""
    # A folder's files and folders an operating system keeps (.DS_Store, ._*, __MACOSX/: ingest.system_files), not
    # read, not counted.
    passed_over: list[str] = dataclasses.field(default_factory=list)

    @property
    def examples_from_source(self) -> int:
        return self.counts[ACCEPTED] + self.counts[NORMALIZED]

    @property
    def examples_carried(self) -> int:
        return sum(entry["examples"] for entry in self.carried)

    @property
    def examples_written(self) -> int:
        return self.examples_from_source + self.examples_carried

    @property
    def own_fingerprint(self) -> str:
        """The fingerprint of the source alone (a report without data_fingerprint carries nothing)."""
        return self.data_fingerprint or self.source_fingerprint

    def to_json(self) -> dict:
        return dataclasses.asdict(self) | {"examples_written": self.examples_written}

    @classmethod
    def from_json(cls, data: dict) -> "IngestReport":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})

    def table(self, max_listed: int = 20, written_to: str | None = None) -> str:
        """What ingest prints; `written_to`: where this report was written, named for the quarantined files past
        `max_listed` (none for a source refused whole: nothing was written)."""
        lines = [f"Ingest of {shown_name(self.source)} -> span {self.span}"
                 + (" (unchanged data: existing span reused)" if self.reused else ""),
                 f"  {'files seen':<14}{self.files_seen:>8}"]
        unsorted = self._not_sorted()
        where = ", ".join(f"{folder} ({count})" if len(unsorted) > 1 else folder for folder, count in unsorted.items())
        lines += [f"  {outcome:<14}{count:>8}" + (f"  left in {where}: move one into cat/ or dog/ of the queue to "
                                                   "ingest it" if outcome == NOT_SORTED else "")
                  for outcome, count in shown_counts({"counts": self.counts, "quarantined": self.quarantined}).items()]
        lines.append("  examples: " + ", ".join(f"{k} {v}" for k, v in self.examples_per_label.items())
                     + " | " + ", ".join(f"{k} {v}" for k, v in self.examples_per_split.items()))
        if self.carried:
            lines.append(f"  of them carried from the labeled queues of earlier spans: {self.examples_carried} ("
                         + ", ".join(f"span {c['span']}: {c['examples']}" for c in self.carried) + ")")
        lines += [f"  {printable(str(e.get('name')))}'s newest span-{e.get('span')} is gone; its earlier "
                  f"span-{e.get('earlier')} is not carried" for e in self.not_carried]
        in_source = sum(entry.get("in_source", 0) for entry in self.carried)
        if in_source and self.labeled_queue:
            lines.append(f"  {in_source} images an earlier labeled queue held are kept as this queue labels them")
        elif in_source:
            lines.append(f"  {in_source} images a labeled queue holds too are kept from the source, in the source's "
                         "split, with the label a person gave them in the queue")
        if self.passed_over:
            # a reused span's report lists what was passed over when it was written, not what the folder holds now
            lines.append(f"  passed over {system_files.passed_over_phrase(self.passed_over)}: not photos, not read"
                         + (f" (each listed in {printable(written_to)})" if written_to and not self.reused else ""))
        listed = [entry for entry in self.quarantined if not is_not_sorted(entry)]
        for entry in listed[:max_listed]:
            lines.append(f"  quarantined {printable(entry['file'])}: {printable(entry['reason'])}")
        if len(listed) > max_listed:
            lines.append(f"  ... and {len(listed) - max_listed} more quarantined"
                         + (f" (all of them in {printable(written_to)})" if written_to else ""))
        elif unsorted and written_to:
            lines.append(f"  each image not sorted is listed in {printable(written_to)}")
        return "\n".join(lines)

    def _not_sorted(self) -> dict[str, int]:
        """A labeling queue's images left unsorted, counted by the folder they were left in."""
        counts: dict[str, int] = {}
        for entry in filter(is_not_sorted, self.quarantined):
            where = sources.left_in(printable(entry["file"]))
            counts[where] = counts.get(where, 0) + 1
        return counts


def is_not_sorted(entry: dict) -> bool:
    """Whether a quarantined entry is a labeling queue's image a person left unsorted."""
    return str(entry.get("reason", "")).startswith(sources.NOT_SORTED_PREFIX)


def shown_counts(report: dict) -> dict[str, int]:
    """A report's outcome counts (its JSON) as the table and the run summary show them: a labeling queue's images
    left unsorted apart, as "not sorted" (the report counts them among the quarantined, as it lists them)."""
    counts = dict(report["counts"])
    unsorted = sum(1 for entry in report.get("quarantined", []) if isinstance(entry, dict) and is_not_sorted(entry))
    if unsorted and isinstance(counts.get(QUARANTINED), int):
        unsorted = min(unsorted, counts[QUARANTINED])  # a report at odds with itself shows no negative count
        counts[QUARANTINED] -= unsorted
        counts[NOT_SORTED] = unsorted
    return counts


def _numbered_spans(root: str) -> list[int]:
    if not storage.backend.isdir(root):
        return []
    return sorted(n for name in storage.backend.listdir(root)
                  if (n := layout.span_number(name)) is not None and storage.backend.isdir(posixpath.join(root, name)))


def report_path(examples_root: str | os.PathLike, span: int) -> str:
    return posixpath.join(layout.span_dir(str(examples_root), span), REPORT_FILE)


def existing_spans(examples_root: str | os.PathLike) -> list[int]:
    """The spans a run may read: complete ones and those another tool wrote, not those cut short."""
    root = str(examples_root)
    return [span for span in _numbered_spans(root) if not is_cut_short(root, span)]


def is_cut_short(examples_root: str | os.PathLike, span: int) -> bool:
    """A span ingest began to publish and never committed: its report is missing and its marker is there, or
    it holds no file at all. On Cloud Storage a folder's first object is its directory marker ("span-N/", which
    sorts first): a rename killed after that one object, or a move aside killed after its last file, leaves a
    folder with no file in it, which no tool writes as a span."""
    folder = layout.span_dir(examples_root, span)
    if storage.backend.exists(posixpath.join(folder, REPORT_FILE)):
        return False
    return (storage.backend.exists(posixpath.join(folder, layout.SPAN_UNCOMMITTED))
            or not storage.backend.files(folder))


def aside_dir(examples_root: str | os.PathLike) -> str:
    """Where spans cut short go: beside the examples root, where ImportExampleGen does not look."""
    return str(examples_root).rstrip("/") + storage.ASIDE_SUFFIX


def _aside_number(name: str) -> int | None:
    return layout.span_number("-".join(name.split("-")[:2]))


def clean_up(examples_root: str | os.PathLike) -> tuple[list[str], int]:
    """Moves spans cut short out of the examples root and removes staging folders a killed ingest left.

    Returns (what was done, one line each; the highest span number ever used, moved-aside spans included).
    Called only under the root's lease."""
    root = str(examples_root)
    done = [f"removed the staging folder {name} a killed ingest left"
            for name in storage.remove_staging(root, [f".{STAGING_KIND}-"])]
    done += storage.move_links_aside(root, aside_dir(root), lambda name: layout.span_number(name) is not None)
    for span in [s for s in _numbered_spans(root) if is_cut_short(root, s)]:
        moved = storage.move_aside(layout.span_dir(root, span), aside_dir(root), layout.span_name(span),
                                   layout.SPAN_UNCOMMITTED)
        done.append(f"span {span} was cut short while it was written (no {REPORT_FILE}): moved to {moved}; "
                    "its number is not used again")
    return done, highest_span_number(root)


def highest_span_number(examples_root: str | os.PathLike) -> int:
    """The highest span number ever used: spans cut short and moved aside count (a reader may have seen them), and
    so do removed ones the numbers file records."""
    root = str(examples_root)
    return max(_numbered_spans(root) + storage.aside_numbers(aside_dir(root), _aside_number)
               + list(numbers_used(root)), default=0)


def numbers_used(examples_root: str | os.PathLike) -> dict[int, str | None]:
    """{span number: the labeled queue it held, or None} of every span ingest published under the root, present
    or removed since ({} on a root from before the numbers file). DamagedReportError names the file when it
    cannot be read as written."""
    path = posixpath.join(str(examples_root), NUMBERS_FILE)
    if not storage.backend.exists(path):
        return {}
    try:
        entries = storage.read_json(path).get("spans")
    except storage.UnreadableFileError as error:
        entries, problem = None, error.reason
    else:
        problem = "its spans are not a list of {\"span\": number, \"labeled_queue\": text or null}"
    if isinstance(entries, list) and all(
            isinstance(e, dict) and type(e.get("span")) is int and 0 < e["span"] <= layout.MAX_NUMBER
            and isinstance(e.get("labeled_queue"), (str, type(None))) for e in entries):
        return {e["span"]: e["labeled_queue"] for e in entries}
    raise DamagedReportError(f"{path} is damaged ({problem}); restore it, or remove it (span numbers of spans "
                             "removed before are then free again, and a queue stopped by removing its newest span "
                             "may be carried again)")


def record_number(examples_root: str | os.PathLike, span: int, labeled_queue: str | None,
                  present: dict[int, str | None]) -> None:
    """Adds a span about to be published to the numbers file (before it is renamed into place: a number a
    reader may see is always recorded), with the spans `present` (those of a root from before the file)."""
    used = {**present, **numbers_used(examples_root), span: labeled_queue}
    document = {"spans": [{"span": number, "labeled_queue": queue} for number, queue in sorted(used.items())]}
    storage.backend.write(posixpath.join(str(examples_root), NUMBERS_FILE), json.dumps(document, indent=1).encode())


def load_report(examples_root: str | os.PathLike, span: int) -> IngestReport | None:
    """The span's ingest report, or None for a span written by another tool (or whose upload did not finish)."""
    path = report_path(examples_root, span)
    if not storage.backend.exists(path):
        return None
    try:
        report = IngestReport.from_json(storage.read_json(path))
        problem = _shape_problem(report)
        if problem is None:
            return report
    except storage.UnreadableFileError as error:
        problem = error.reason
    except (ValueError, TypeError, KeyError) as error:  # JSON of another shape
        problem = f"{type(error).__name__}: {error}"
    raise DamagedReportError(f"{path} is damaged ({problem}); restore it, or remove the folder span-{span} to "
                             "ingest its data again as a new span")


def _shape_problem(report: IngestReport) -> str | None:
    """What makes a report's fields unusable (readers count, sum and list them), None if nothing."""
    if not isinstance(report.counts, dict) or not all(isinstance(report.counts.get(k), int) for k in OUTCOMES):
        return f"its counts are not a number for each of {', '.join(OUTCOMES)}"
    for name in ("examples_per_label", "examples_per_split", "quarantined", "duplicates", "normalized", "carried",
                 "not_carried", "passed_over"):
        if not isinstance(getattr(report, name), dict if name.startswith("examples") else list):
            return f"its {name} is not a JSON {'object' if name.startswith('examples') else 'list'}"
    for name, keys in (("quarantined", ("file", "reason")), ("duplicates", ("file", "duplicate_of")),
                       ("normalized", ("file", "change"))):
        if not all(isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in keys)
                   for entry in getattr(report, name)):
            return f"an entry of its {name} is not an object with a string for {' and '.join(keys)}"
    if not all(isinstance(path, str) for path in report.passed_over):
        return "an entry of its passed_over is not a string"
    for entry in report.carried:
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), int) for k in ("span", "examples")):
            return "an entry of its carried is not an object with a number for span and examples"
    if not all(isinstance(entry, dict) and isinstance(entry.get("span"), int) for entry in report.not_carried):
        return "an entry of its not_carried is not an object with a number for span"
    if not isinstance(report.labeled_queue, (str, type(None))) or not isinstance(report.data_fingerprint, str):
        return "its labeled_queue or data_fingerprint is not a string"
    return None
