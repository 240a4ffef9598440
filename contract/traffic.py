"""Serving traffic as the pipeline keeps it: the layout, keys and times every writer and reader of it agrees on.

Layout under a root's traffic folder (layout.RunLayout.traffic_root):
    span-<N>/traffic-<k>.tfrecord   plain TFRecords of tf.Example, one example per image (keys below)
    span-<N>/traffic_report.json    the span's commit record, written last
A traffic span is published by contract.storage's protocol, like a span of
examples: its files are written to a hidden staging folder as its batch fills,
the folder is renamed into place, and its report is written last. A span
without its report, or whose report names a file that is not there, or that is
or holds a symbolic link, is incomplete: no reader counts it. Writers take the
number above the highest folder (a span cut short keeps its number: a reader
may have listed it) and try the next one when another writer took it first.

Only these names, keys and times are the contract: they are what the files say to any reader (TensorFlow,
TFDV, a person), and what the layout and the command line name. The record and report types live in the
`traffic` package with the code that writes and reads them, because they are that code's: a record
serializes itself through TensorFlow and a report validates itself and raises the package's error, and the
contract imports nothing heavy. KServe's inference logger (through the sink) and `predict --record` write
through that package; `monitor` reads windows through it.
"""

import datetime

# The tf.Example keys of a traffic record.
IMAGE_KEY = "image"  # bytes: the encoded image as the client sent it
SHA256_KEY = "image_sha256"  # bytes: hex SHA-256 of the image
SCORE_KEY = "dog_probability"  # float: the served model's answer; NaN where it said the image was invalid
VERSION_KEY = "model_version"  # int64: the served version that answered; UNKNOWN_VERSION when not known
TIME_KEY = "time_ms"  # int64: Unix time of the request, in milliseconds
REQUEST_ID_KEY = "request_id"  # bytes: the request's id (KServe's CloudEvent id; one request may hold many images)
ORIGIN_KEY = "origin"  # bytes: one of ORIGINS
KEYS = (IMAGE_KEY, SHA256_KEY, SCORE_KEY, VERSION_KEY, TIME_KEY, REQUEST_ID_KEY, ORIGIN_KEY)

KSERVE_ORIGIN = "kserve"  # KServe's inference logger, through the traffic sink
PREDICT_ORIGIN = "predict"  # `predict --record`
ORIGINS = (KSERVE_ORIGIN, PREDICT_ORIGIN)
UNKNOWN_VERSION = -1
# The earliest time a record may carry. An older stamp is a sender's clock fault (year 1, a zero), not a request:
# the sink refuses it, and a window's times are shown only within a calendar's range.
EARLIEST_TIME_MS = 946_684_800_000  # 2000-01-01T00:00:00Z

REPORT_FILE = "traffic_report.json"
FILE_PREFIX, FILE_SUFFIX = "traffic-", ".tfrecord"  # span-<N>/traffic-<k>.tfrecord
STAGING_KIND = "traffic"  # staged in traffic/.traffic-<hex>/
STAGING_PREFIX = f".{STAGING_KIND}-"


def time_text(time_ms: int) -> str:
    """A record's time in UTC, ISO 8601 to the second; one no calendar date can show (written by another tool, or
    before EARLIEST_TIME_MS was kept) as its milliseconds."""
    try:
        return datetime.datetime.fromtimestamp(int(time_ms) / 1000, datetime.timezone.utc).isoformat(
            timespec="seconds")
    except (ValueError, OverflowError, OSError):
        return f"{int(time_ms)} ms from the Unix epoch (no calendar date)"
