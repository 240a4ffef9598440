"""KServe inference logger events read: a CloudEvent's attributes, a TF Serving REST request's images and a
response's answers, as pure functions of headers, bytes and JSON (Refused for what they do not take).

KServe's agent beside the predictor (spec.predictor.logger, mode all) POSTs
every request and every answered response (HTTP 200 only) as a CloudEvent
(pkg/logger of kserve/kserve): binary mode, the body as the client sent it or
as TF Serving answered, `ce-type` org.kubeflow.serving.inference.request or
.response, the same `ce-id` for a request and its response, `ce-time` when it
happened, and the extensions inferenceservicename, namespace, component,
endpoint, metadata and recordedtime. Structured mode is the same event as one
JSON document.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
from typing import Mapping
from urllib.parse import unquote

from cloudevents.core.bindings import http as ce_http
from cloudevents.core.exceptions import BaseCloudEventException
from dateutil.parser import isoparse

from contract import features, layout
from contract.errors import first_line, printable
from contract.traffic import EARLIEST_TIME_MS, time_text
from traffic.reasons import (
    BAD_BASE64,
    BAD_JSON,
    NOT_A_CLOUDEVENT,
    NOT_A_PREDICTION,
    NOT_TEXT,
    OTHER_SIGNATURE,
    TIME_OUT_OF_RANGE,
    TOO_MANY_INSTANCES,
    WRONG_TYPE,
    Refused,
)

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"


@dataclasses.dataclass
class Event:
    kind: str  # REQUEST_TYPE or RESPONSE_TYPE
    id: str
    time_ms: int
    payload: object  # the parsed JSON body


def parse_event(headers: Mapping[str, str], body: bytes, now_ms: int) -> Event:
    """The CloudEvent of an HTTP message, binary or structured mode (the cloudevents SDK's reading of it)."""
    headers = {name.lower(): value for name, value in headers.items()}
    if _structured(headers):  # a ce- header beside it (a proxy's) would make the SDK read it in binary mode
        headers = {name: value for name, value in headers.items() if not name.startswith("ce-")}
    try:
        _require_attributes(headers, body)
        event = ce_http.from_http_event(ce_http.HTTPMessage(headers=headers, body=body))
    except (BaseCloudEventException, ValueError, TypeError, KeyError, AttributeError, RecursionError) as error:
        raise Refused(NOT_A_CLOUDEVENT, first_line(error)[:300]) from None
    kind = event.get_type()
    if kind not in (REQUEST_TYPE, RESPONSE_TYPE):
        raise Refused(WRONG_TYPE, f"ce-type {printable(str(kind))[:100]!r}")
    time_ms = _event_time_ms(event.get_time(), now_ms)
    event_id = str(event.get_id())
    try:
        event_id.encode("utf-8")  # JSON's \\u escapes can spell a lone surrogate, which no answer can carry
    except UnicodeEncodeError as error:
        raise Refused(NOT_TEXT, f"its id holds {printable(event_id[error.start])} at index {error.start}, a lone "
                                "surrogate") from None
    data = event.get_data()
    if isinstance(data, (bytes, str)):
        try:
            data = json.loads(data)
        except (ValueError, RecursionError) as error:
            raise Refused(BAD_JSON, first_line(error)[:200]) from None
    if not isinstance(data, dict):
        raise Refused(NOT_A_PREDICTION, "the body is not a JSON object")
    return Event(kind, event_id, time_ms, data)


def _event_time_ms(moment, now_ms: int) -> int:
    """The event's time: the sender's clock, but never ahead of the sink's (windows are the newest records by time,
    and a record stamped in the future would stay in every window until then); the sink's when it gives none.
    Refused when it is before EARLIEST_TIME_MS."""
    if moment is None:
        return now_ms
    try:
        time_ms = int(moment.timestamp() * 1000)
    except (ValueError, OverflowError, OSError):
        time_ms = None
    if time_ms is None or time_ms < EARLIEST_TIME_MS:
        raise Refused(TIME_OUT_OF_RANGE, f"ce-time {printable(moment.isoformat())[:60]} is before "
                                         f"{time_text(EARLIEST_TIME_MS)}: the sender's clock is wrong")
    return min(time_ms, now_ms)


def _structured(headers: dict[str, str]) -> bool:
    """Structured mode is told by its content type (the HTTP binding's rule), not by a ce- header beside it."""
    return headers.get("content-type", "").lower().startswith("application/cloudevents")


def _require_attributes(headers: dict[str, str], body: bytes) -> None:
    """ValueError naming a required attribute the event lacks (the SDK would make up an id, and a time, for an
    event without one, and a made-up id matches nothing), or a time the SDK cannot read (its own errors name neither
    the attribute nor its value: "invalid literal for int() with base 10", "must be timezone aware")."""
    if not _structured(headers):
        given = {name[3:]: value for name, value in headers.items() if name.startswith("ce-")}
        named = "ce-time"
        time = unquote(given["time"]) if "time" in given else None  # a header's value is percent-encoded
    else:
        document = json.loads(body)
        given = document if isinstance(document, dict) else {}
        named, time = "time", given.get("time")
    missing = [name for name in ("specversion", "id", "type", "source") if name not in given]
    if missing:
        raise ValueError(f"no {', '.join(missing)} attribute")
    if "time" in given:
        shown = f"{named} {printable(json.dumps(time))[:60]}"
        try:
            moment = isoparse(time)  # as the SDK reads it: ISO 8601, of which RFC 3339 is a part
        except (ValueError, TypeError, OverflowError) as error:
            raise ValueError(f"{shown} cannot be read as a time (RFC 3339, such as 2026-11-24T10:00:00Z: "
                             f"{first_line(error)})") from None
        if moment.tzinfo is None:  # the SDK refuses it without naming the value
            raise ValueError(f"{shown} has no time zone (RFC 3339, such as 2026-11-24T10:00:00Z)")


def _image_of(instance, where: str) -> bytes:
    """An instance of TF Serving's REST API for the input image_bytes: {"b64": ...} or {"image_bytes": {"b64":
    ...}}."""
    if isinstance(instance, dict) and set(instance) == {"image_bytes"}:
        instance = instance["image_bytes"]
    if not (isinstance(instance, dict) and set(instance) == {"b64"} and isinstance(instance["b64"], str)):
        raise Refused(NOT_A_PREDICTION, f"{where} is not an image ({{\"b64\": ...}} or {{\"image_bytes\": "
                                        "{\"b64\": ...}})")
    try:
        image = base64.b64decode(instance["b64"], validate=True)
    except (binascii.Error, ValueError) as error:
        raise Refused(BAD_BASE64, f"{where}: {first_line(error)}") from None
    return image  # empty: the model answers it as no image, and the other images of its request are kept


def _at_most(count: int, limit: int | None, what: str) -> None:
    if limit is not None and count > limit:
        raise Refused(TOO_MANY_INSTANCES, f"{count} {what}, above the limit of {limit} (--max-instances)",
                      status=413)


def request_images(payload: dict, max_instances: int | None = None) -> list[bytes]:
    """The images of a TF Serving REST predict request: row format {"instances": [...]} or columnar
    {"inputs": [...]} / {"inputs": {"image_bytes": [...]}}; at most `max_instances` of them."""
    signature = payload.get("signature_name", "serving_default")
    if signature != "serving_default":
        raise Refused(OTHER_SIGNATURE, f"signature_name {printable(str(signature))[:80]!r}")
    if "instances" in payload:
        key, instances = "instances", payload["instances"]
    elif "inputs" in payload:
        key, instances = "inputs", payload["inputs"]
        if isinstance(instances, dict) and set(instances) == {"image_bytes"}:
            instances = instances["image_bytes"]
    else:
        raise Refused(NOT_A_PREDICTION, "neither \"instances\" nor \"inputs\"")
    if not isinstance(instances, list) or not instances:
        raise Refused(NOT_A_PREDICTION, f"\"{key}\" is not a list of images")
    _at_most(len(instances), max_instances, "images")
    return [_image_of(instance, f"{key}[{index}]") for index, instance in enumerate(instances)]


def _score(answer, where: str) -> float:
    if isinstance(answer, dict):
        valid = answer.get(features.VALID_OUTPUT, True)
        if not isinstance(valid, bool):  # TF Serving writes a bool output as true or false, never "false"
            raise Refused(NOT_A_PREDICTION, f"{where}: {features.VALID_OUTPUT} {printable(str(valid))[:40]} is not "
                                            "true or false")
        if not valid:
            return math.nan
        answer = answer.get(features.PROBABILITY_OUTPUT)
    elif isinstance(answer, list) and len(answer) == 1:
        answer = answer[0]
    if answer is None:
        return math.nan
    if isinstance(answer, bool) or not isinstance(answer, (int, float)):
        raise Refused(NOT_A_PREDICTION, f"{where} holds no {features.PROBABILITY_OUTPUT}")
    score = float(answer) if isinstance(answer, float) or abs(answer) <= 1 else math.inf
    if not (math.isnan(score) or 0 <= score <= 1):
        raise Refused(NOT_A_PREDICTION, f"{where}: {features.PROBABILITY_OUTPUT} {printable(str(answer))[:40]} is "
                                        "not a probability")
    return score


def response_scores(payload: dict, max_instances: int | None = None) -> tuple[list[float], int | None]:
    """(a score per image, the version the response names or None) of a TF Serving REST predict response:
    {"predictions": [...]} (row) or {"outputs": ...} (columnar); at most `max_instances` answers."""
    named = payload.get("model_version")
    version = layout.version_number(str(named)) if isinstance(named, (int, str)) and not isinstance(named, bool) \
        else None
    if "predictions" in payload and isinstance(payload["predictions"], list):
        answers = payload["predictions"]
    elif "outputs" in payload:
        outputs = payload["outputs"]
        if isinstance(outputs, dict) and isinstance(outputs.get(features.PROBABILITY_OUTPUT), list):
            valid = outputs.get(features.VALID_OUTPUT, [True] * len(outputs[features.PROBABILITY_OUTPUT]))
            if not isinstance(valid, list) or len(valid) != len(outputs[features.PROBABILITY_OUTPUT]):
                raise Refused(NOT_A_PREDICTION, f"\"outputs\" holds a {features.VALID_OUTPUT} that is not a list "
                                                f"as long as its {features.PROBABILITY_OUTPUT}")
            answers = [{features.PROBABILITY_OUTPUT: p, features.VALID_OUTPUT: v}
                       for p, v in zip(outputs[features.PROBABILITY_OUTPUT], valid)]
        elif isinstance(outputs, list):
            answers = outputs
        else:
            raise Refused(NOT_A_PREDICTION, f"\"outputs\" holds no {features.PROBABILITY_OUTPUT}")
    else:
        raise Refused(NOT_A_PREDICTION, "neither \"predictions\" nor \"outputs\"")
    _at_most(len(answers), max_instances, "answers")
    return [_score(answer, f"answer {index}") for index, answer in enumerate(answers)], version
