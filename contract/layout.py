"""Where stored things live: a run root, a span of examples and a pushed model version.

Every package that writes or reads these places takes the names from here. A
run root is a local --output-dir, a path on a Kubeflow deployment's volume or a
gs:// URI: RunLayout joins with pathlib for a local Path and with posixpath for
a string, so the same names hold for all three.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import posixpath
import re
from typing import Generic, TypeVar

from contract.errors import CommandError

Location = TypeVar("Location", str, pathlib.Path)


@dataclasses.dataclass(frozen=True)
class RunLayout(Generic[Location]):
    """Everything of one pipeline, all under one root."""

    root: Location

    def _join(self, *parts: str) -> Location:
        if isinstance(self.root, pathlib.PurePath):
            return self.root.joinpath(*parts)
        return posixpath.join(self.root, *parts)

    @property
    def examples_root(self) -> Location:
        """span-<N>/ folders, written by ingest, read by ImportExampleGen."""
        return self._join("examples")

    @property
    def traffic_root(self) -> Location:
        """span-<N>/ folders of served traffic (contract.traffic), written by the traffic sink and
        `predict --record`, read by `monitor`."""
        return self._join("traffic")

    @property
    def pipeline_root(self) -> Location:
        """TFX's artifacts."""
        return self._join("pipeline_root")

    @property
    def metadata_path(self) -> Location:
        """The SQLite ML Metadata store of a local run."""
        return self._join("metadata.sqlite")

    @property
    def serving_dir(self) -> Location:
        """Pushed versions: serving_model/<version>/, TF Serving's layout."""
        return self._join("serving_model")

    @property
    def summary_path(self) -> Location:
        """The latest local run's summary."""
        return self._join(SUMMARY_FILE)

    @property
    def run_settings_path(self) -> Location:
        """The settings the root's local runs were given, newest of each (orchestration.root.run_settings)."""
        return self._join(RUN_SETTINGS_FILE)

    @property
    def report_dir(self) -> Location:
        """The latest local run's HTML report (index.html and its figures)."""
        return self._join(REPORT_DIR)

    @property
    def tfdv_statistics_page(self) -> Location:
        """TFDV's interactive statistics page of the latest run, beside the report (it needs internet)."""
        return self._join("tfdv_statistics.html")

    @property
    def demo_images(self) -> Location:
        """Where `run --demo` generates its images."""
        return self._join("demo_images")

    @property
    def predictions_dir(self) -> Location:
        """Where `predict` writes its contact sheet unless told otherwise."""
        return self._join("predictions")

    @property
    def schema_path(self) -> Location:
        """Deployments: the image's curated schema, installed here by the ingest task so that ImportSchemaGen
        reads the schema of the code that runs."""
        return self._join("schema", "schema.pbtxt")

    @property
    def runs_dir(self) -> Location:
        """Deployments: runs/<run id>/{run_summary.json, report/}, one folder per Kubeflow run."""
        return self._join("runs")

    def run_dir(self, run_id: str) -> Location:
        """Deployments: runs/<run id>/ of one run (characters a file name cannot hold become '_')."""
        return self._join("runs", re.sub(r"[^A-Za-z0-9._-]", "_", run_id))

    @property
    def schedule_log(self) -> Location:
        """What a local cron entry's runs print."""
        return self._join("scheduled_runs.log")

    @property
    def monitoring_dir(self) -> Location:
        """`monitor`'s drift reports: check-<UTC time>/{index.html, figures, drift.json}, one folder per check."""
        return self._join("monitoring")

    @property
    def labeling_root(self) -> Location:
        """queue-<N>/ folders: a drifted window's images for a person to sort into cat/ and dog/."""
        return self._join("labeling")


SUMMARY_FILE = "run_summary.json"
RUN_SETTINGS_FILE = "run_settings.json"
TASKS_DIR = "tasks"  # runs/<run id>/tasks/<task>.json: what each task of a deployment's run did
# The Kubeflow package's own tasks beside the TFX nodes' (which are named by node id); each keeps a task record.
INGEST_TASK = "ingest"
ROLLOUT_TASK = "rollout"
REPORT_TASK = "report"
MONITOR_TASK = "monitor"  # the monitoring package's one task (no task record: its check is in ML Metadata)
REPORT_DIR = "report"
REPORT_PAGE = "index.html"
CONTACT_SHEET = "contact_sheet.png"

# A span under the examples root: span-<N>/{train,eval,test}/<TFRecord files> and span-<N>/ingest_report.json.
# The Trainer learns from train and keeps the epoch with the lowest loss on eval (a validation split); the
# Evaluator scores and blesses on test, which played no part in either. Spans written before there was a test
# split, or by another tool, may have train and eval only: their eval split then does both jobs.
TRAIN_SPLIT, SELECTION_SPLIT, TEST_SPLIT = "train", "eval", "test"
SPLITS = (TRAIN_SPLIT, SELECTION_SPLIT, TEST_SPLIT)
REQUIRED_SPLITS = (TRAIN_SPLIT, SELECTION_SPLIT)
INGEST_REPORT = "ingest_report.json"  # a span's commit record: written last, a span is complete with it
# In a span folder from its first object until its report is written: a span that has it and no report was cut
# short (a span with neither was written by another tool). Its name sorts before every other file of a span.
SPAN_UNCOMMITTED = ".uncommitted"
# ASCII digits only: str.isdigit() and \d accept '²' and '٣', which int() refuses or reads as another number.
_DIGITS = re.compile(r"[0-9]+")
_SPAN_DIR = re.compile(r"span-(.+)")
# ImportExampleGen's input: any file of the split folder (it reads gzipped and plain TFRecords alike).
SPLIT_PATTERNS = {split: f"span-{{SPAN}}/{split}/*" for split in SPLITS}


def judged_split(split_names) -> str:
    """The split the Evaluator scores and blesses on, of an Examples artifact with these splits."""
    return TEST_SPLIT if TEST_SPLIT in split_names else SELECTION_SPLIT


# A labeling queue: queue-<N>/{unsorted/<images>, cat/, dog/, contact_sheet.png, README.txt} and its commit
# record QUEUE_RECORD, written last (contract.storage.publish), so a queue is complete or not there. `ingest`
# takes a sorted queue as a class folder; what is left in unsorted/ is reported, never ingested.
QUEUE_RECORD = "queue.json"
QUEUE_UNSORTED = "unsorted"
QUEUE_README = "README.txt"
_QUEUE_DIR = re.compile(r"queue-(.+)")


def queue_name(number: int) -> str:
    return f"queue-{number}"


def queue_number(folder_name: str) -> int | None:
    """N of a folder named queue-N, None for any other name."""
    match = _QUEUE_DIR.fullmatch(folder_name)
    return _number(match.group(1)) if match else None


def span_name(span: int) -> str:
    return f"span-{span}"


def span_number(folder_name: str) -> int | None:
    """N of a folder named span-N, None for any other name."""
    match = _SPAN_DIR.fullmatch(folder_name)
    return _number(match.group(1)) if match else None


# TF Serving's versions and ML Metadata's span properties are 64-bit integers, and the next folder takes the
# highest number plus one: a larger name can never be served or recorded, so it is not a number of ours.
MAX_NUMBER = 2**62


def _number(digits: str) -> int | None:
    """The number ASCII `digits` write the way this pipeline names folders (no leading zero: "007" would name
    the same number as a second folder "7"), up to MAX_NUMBER."""
    if not _DIGITS.fullmatch(digits) or len(digits) > len(str(MAX_NUMBER)):
        return None
    number = int(digits)
    return number if str(number) == digits and number <= MAX_NUMBER else None


class NumbersExhaustedError(CommandError):
    """The highest number a span or version can have is taken: the next one could be neither listed nor served."""


def next_number(highest: int, folder: str | os.PathLike, kind: str) -> int:
    """The number after `highest` for a new `kind` (span, version) in `folder`; NumbersExhaustedError, before
    anything is written, where `highest` is already MAX_NUMBER."""
    if highest >= MAX_NUMBER:
        raise NumbersExhaustedError(f"{folder} holds {kind} {highest}, the highest number a {kind} can have "
                                    f"(2**62): no later {kind} can be written; move that folder out of it")
    return highest + 1


def span_dir(examples_root: str | os.PathLike, span: int) -> str:
    return posixpath.join(str(examples_root), span_name(span))


# A TFX Model artifact keeps the SavedModel in this subfolder (tfx.utils.path_utils; a test checks they agree).
SERVING_MODEL_SUBDIR = "Format-Serving"
# Beside the SavedModel of a version: TF Serving reads only the warm-up file from assets.extra and ignores
# the rest, which is kept for people and tools.
ASSETS_EXTRA = "assets.extra"
KERAS_MODEL_FILE = posixpath.join(ASSETS_EXTRA, "model.keras")  # Grad-CAM needs the layers
TFLITE_FILES = {"float16": posixpath.join(ASSETS_EXTRA, "model_float16.tflite"),
                "int8": posixpath.join(ASSETS_EXTRA, "model_int8.tflite")}
TFLITE_FIDELITY_FILE = posixpath.join(ASSETS_EXTRA, "tflite_fidelity.json")
TRAINING_HISTORY_FILE = posixpath.join(ASSETS_EXTRA, "training_history.json")
PUSH_RECORD_FILE = posixpath.join(ASSETS_EXTRA, "push.json")
# The SHA-256 of every other file of a pushed version, in `sha256sum` format (check a copy with
# `cd <version> && sha256sum -c assets.extra/SHA256SUMS`).
DIGESTS_FILE = posixpath.join(ASSETS_EXTRA, "SHA256SUMS")
# What the model is for, what it was trained and evaluated on, its known limits (components.model_card).
MODEL_CARD_FILE = posixpath.join(ASSETS_EXTRA, "model_card.md")
# In the serving folder, beside the versions: TF Serving's model config naming the served version
# (contract.served).
SERVING_CONFIG_FILE = "models.config"
KSERVE_MODEL_MOUNT = "/mnt/models"  # where KServe puts an InferenceService's storageUri contents in its pod
# TF Serving replays these requests (a TFRecord of PredictionLog) when it loads the version.
WARMUP_FILE = posixpath.join(ASSETS_EXTRA, "tf_serving_warmup_requests")


def version_number(folder_name: str) -> int | None:
    """N of a pushed version's folder (TF Serving's layout: ASCII digits), None for any other name."""
    return _number(folder_name)


def serving_model_dir(model_uri: str | os.PathLike) -> str:
    """The SavedModel folder inside a TFX Model artifact."""
    return posixpath.join(str(model_uri), SERVING_MODEL_SUBDIR)


# A pipeline root's marker, at its top level: written when the pipeline makes a folder its root (a first run or
# ingest), so that `run` and `ingest` never take a folder of the user's for one (orchestration.root.marker has the
# rule).
ROOT_MARKER = ".cats-vs-dogs-root"
ROOT_MARKER_TOOL = "cats-vs-dogs-tfx"
# A file a Kubeflow task writes into a root and removes at once, to find out whether it can write there.
WRITE_PROBE_PREFIX = ".write-probe-"
