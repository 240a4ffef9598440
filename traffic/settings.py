"""The traffic sink's settings (its flags), apart from the sink so that building the command line imports no
TensorFlow."""

from __future__ import annotations

import dataclasses
import math

from contract.errors import CommandError
from contract.settings import setting


class SinkSettingsError(CommandError):
    """A traffic sink setting that cannot work; the message names the flag."""


@dataclasses.dataclass(frozen=True)
class SinkSettings:
    host: str = setting("127.0.0.1", "The address to listen on (0.0.0.0 in a pod).")
    batch_size: int = setting(500, "Images per traffic span: the batch is published when it holds this many.")
    batch_seconds: float = setting(60.0, "... or when its oldest image has waited this long (seconds).")
    sample_rate: float = setting(1.0, "The share of requests recorded, chosen by a hash of the request id (a "
                                      "request's images are all kept or all left out).")
    max_event_mb: float = setting(16.0, "Events larger than this are refused (413).")
    max_instances: int = setting(1000, "Events of more images (or answers) than this are refused whole (413): "
                                       "an event of a million tiny images would hold the sink for seconds.")
    pending_seconds: float = setting(30.0, "How long a request waits for its response (and a response for its "
                                           "request) before its images are counted lost.")
    pending_mb: float = setting(64.0, "The most memory held by requests and responses waiting for their other "
                                      "half (their images' bytes and a fixed cost per image or answer); above "
                                      "it the oldest waiting is counted lost.")
    header_seconds: float = setting(10.0, "A connection idle this long after its last answer is closed "
                                          "(uvicorn's keep-alive timeout; uvicorn puts no time limit on a "
                                          "request's headers).")
    max_connections: int = setting(256, "Connections open at once, at most; a request on one more is answered 503 "
                                        "once its headers are whole (uvicorn's limit_concurrency).")

    def __post_init__(self):
        rules = {"batch_size": (self.batch_size >= 1, "at least 1"),
                 "batch_seconds": (self.batch_seconds > 0, "above 0"),
                 "sample_rate": (0 < self.sample_rate <= 1, "above 0 and at most 1"),
                 "max_event_mb": (self.max_event_mb > 0, "above 0"),
                 "max_instances": (self.max_instances >= 1, "at least 1"),
                 "pending_seconds": (self.pending_seconds > 0, "above 0"),
                 "pending_mb": (self.pending_mb > 0, "above 0"),
                 "header_seconds": (self.header_seconds > 0, "above 0"),
                 "max_connections": (self.max_connections >= 1, "at least 1")}
        for name, (ok, rule) in rules.items():
            value = getattr(self, name)
            if not ok or not _finite(value) or abs(value) > MAX_SETTING:
                shown = str(value) if len(str(value)) <= 30 else f"{str(value)[:20]}... ({len(str(value))} digits)"
                bound = "" if "at most" in rule else f", at most {MAX_SETTING:g}"  # a rule with its own upper bound
                raise SinkSettingsError(f"--{name.replace('_', '-')} {shown}: must be {rule}{bound}")


# Any setting above this is a typing slip, and an integer of hundreds of digits overflows float conversions
# (math.isfinite, time arithmetic) as a traceback.
MAX_SETTING = 1e12


def _finite(value) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
