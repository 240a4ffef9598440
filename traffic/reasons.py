"""Why the sink refuses an event or loses records: the reasons its counts, /stats and span reports are kept by,
and Refused, which carries one with its HTTP status."""

from __future__ import annotations

from contract.errors import printable

# Why an event is refused.
NOT_A_CLOUDEVENT = "not a CloudEvent"
WRONG_TYPE = "not an inference request or response"
TOO_LARGE = "too large"
BUSY = "too many events arriving at once"
TOO_SLOW = "body sent too slowly"
BAD_JSON = "bad JSON"
NOT_A_PREDICTION = "not a prediction request or response of this model"
BAD_BASE64 = "bad base64"
OTHER_SIGNATURE = "another signature than serving_default"
DUPLICATE = "duplicate event id"
TIME_OUT_OF_RANGE = "time out of range"
NOT_TEXT = "text that is not Unicode"
INTERNAL = "internal error"
TOO_MANY_INSTANCES = "too many images in one event"
CLIENT_GONE = "connection closed mid-body"
MISMATCH = "response does not match its request"
# Why records are lost.
EMPTY_IMAGE = "empty image"
NO_RESPONSE = "no response in time"
NO_REQUEST = "response without its request in time"
PENDING_FULL = "pending table full"
SHUTDOWN = "shut down before the response came"


class Refused(Exception):
    """An event the sink does not take: `reason` is counted, `detail` says what exactly. Internal: answered
    with its HTTP status; it never ends the command."""

    def __init__(self, reason: str, detail: str, status: int = 400):
        detail = printable(detail)  # it quotes what the sender sent, and goes into a log line
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.status = reason, detail, status
