"""A traffic record (one image of one request, with the served model's answer) and a span's report, as written.

The keys and file names are contract.traffic's; these are the types that write and read them.
"""

from __future__ import annotations

import dataclasses
import hashlib

import tensorflow as tf

from contract.errors import CommandError
from contract.traffic import (
    IMAGE_KEY,
    ORIGIN_KEY,
    ORIGINS,
    REQUEST_ID_KEY,
    SCORE_KEY,
    SHA256_KEY,
    TIME_KEY,
    VERSION_KEY,
)


class TrafficDataError(CommandError):
    """A committed traffic span cannot be read as written; the message names the file and what is wrong."""


@dataclasses.dataclass(frozen=True)
class TrafficRecord:
    """One image of one request, with the served model's answer."""

    image: bytes
    score: float  # NaN: the server said the image was invalid
    version: int  # UNKNOWN_VERSION when the server's answer did not say and no served version was known
    time_ms: int
    request_id: str
    origin: str

    def __post_init__(self):
        if self.origin not in ORIGINS:
            raise ValueError(f"origin {self.origin!r} is not one of {ORIGINS}")

    def serialized(self) -> bytes:
        example = tf.train.Example()
        feature = example.features.feature
        feature[IMAGE_KEY].bytes_list.value.append(self.image)
        feature[SHA256_KEY].bytes_list.value.append(hashlib.sha256(self.image).hexdigest().encode())
        feature[SCORE_KEY].float_list.value.append(self.score)
        feature[VERSION_KEY].int64_list.value.append(self.version)
        feature[TIME_KEY].int64_list.value.append(self.time_ms)
        feature[REQUEST_ID_KEY].bytes_list.value.append(self.request_id.encode("utf-8", "backslashreplace"))
        feature[ORIGIN_KEY].bytes_list.value.append(self.origin.encode())
        return example.SerializeToString()


@dataclasses.dataclass
class TrafficReport:
    """A traffic span's commit record: what it holds, and what its batch did not keep."""

    span: int
    records: int
    files: dict[str, int]  # file name -> records in it; a span is complete when all are there
    first_time_ms: int | None
    last_time_ms: int | None
    model_versions: list[int]
    origins: list[str]
    # Since the span before, by this writer: requests left out by the sampling rate, and events refused or
    # records lost (a storage fault, a request whose response never came), each by reason.
    sampled_out: int = 0
    refused: dict[str, int] = dataclasses.field(default_factory=dict)
    lost: dict[str, int] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict, path: str) -> "TrafficReport":
        try:
            report = cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})
        except TypeError as error:
            raise TrafficDataError(f"{path} is damaged ({error})") from None
        problem = report.shape_problem()
        if problem:
            raise TrafficDataError(f"{path} is damaged ({problem})")
        return report

    def shape_problem(self) -> str | None:
        """What makes the fields unusable (readers count, compare and list them), None if nothing."""
        def number(value, none_too=False):
            return (value is None and none_too) or (isinstance(value, int) and not isinstance(value, bool))

        if not isinstance(self.files, dict) or not all(isinstance(name, str) and number(count)
                                                       for name, count in self.files.items()):
            return "its files are not a JSON object of record counts"
        if not all(number(getattr(self, name), none_too=name.endswith("time_ms"))
                   for name in ("span", "records", "first_time_ms", "last_time_ms")):
            return "its span, records or times are not whole numbers"
        if not isinstance(self.model_versions, list) or not all(map(number, self.model_versions)):
            return "its model_versions are not a list of whole numbers"
        return None
