"""Events in KServe's inference logger format, and a sink in this process, for the sink's tests.

KServe's agent (pkg/logger of kserve/kserve) sends binary-mode CloudEvents:
ce-specversion, ce-id (the same for a request and its response), ce-type
org.kubeflow.serving.inference.request / .response, ce-source, ce-time,
ce-recordedtime and the extensions inferenceservicename, namespace,
component, endpoint and metadata, with the request's Content-Type and the body
as sent or as TF Serving answered. Structured mode is the same event as one
JSON document.
"""

import base64
import json
import socket

from traffic import pairing
from traffic.settings import SinkSettings

SOURCE = "http://cats-vs-dogs-predictor.default/"


def kserve_headers(kind: str, event_id: str, when: str = "2026-11-24T10:00:00.123456789Z") -> dict:
    """The headers KServe's logger worker sends (binary mode, cloudevents sdk-go)."""
    return {"ce-specversion": "1.0", "ce-id": event_id, "ce-type": f"org.kubeflow.serving.inference.{kind}",
            "ce-source": SOURCE, "ce-time": when, "ce-recordedtime": when, "ce-inferenceservicename": "cats-vs-dogs",
            "ce-namespace": "default", "ce-component": "predictor", "ce-endpoint": "", "ce-metadata": "{}",
            "content-type": "application/json"}


def request_body(images: list[bytes], nested: bool = False) -> bytes:
    instances = [{"image_bytes": {"b64": base64.b64encode(i).decode()}} if nested
                 else {"b64": base64.b64encode(i).decode()} for i in images]
    return json.dumps({"instances": instances}).encode()


def response_body(scores: list[float | None]) -> bytes:
    """TF Serving's row-format answer of serving_default (an invalid image: NaN and valid false)."""
    return json.dumps({"predictions": [
        {"dog_probability": float("nan") if s is None else s, "class_name": "" if s is None else "dog",
         "valid": s is not None, "error": "cannot decode" if s is None else ""} for s in scores]}).encode()


def structured(kind: str, event_id: str, body: bytes, as_base64: bool = False) -> tuple[dict, bytes]:
    event = {"specversion": "1.0", "id": event_id, "type": f"org.kubeflow.serving.inference.{kind}",
             "source": SOURCE, "time": "2026-11-24T10:00:03Z", "datacontenttype": "application/json",
             "inferenceservicename": "cats-vs-dogs"}
    if as_base64:
        event["data_base64"] = base64.b64encode(body).decode()
    else:
        event["data"] = json.loads(body)
    return {"content-type": "application/cloudevents+json"}, json.dumps(event).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def make_sink(tmp_path, clock=None, **settings) -> pairing.TrafficSink:
    return pairing.TrafficSink(str(tmp_path / "traffic"), SinkSettings(**settings), lambda: 3,
                               clock=clock or Clock())
