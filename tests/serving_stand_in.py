"""A stand-in for TF Serving's REST API on loopback, running an exported SavedModel: no TF Serving binary or Docker
engine exists here, so the tests put this at their outermost boundary.

It answers what a client of the docs sends: `GET /v1/models/NAME` (the version's status) and
`POST /v1/models/NAME[/versions/N]:predict` with `{"instances": [...]}` in row format, where a string input's value
is `{"b64": ...}` (TF Serving decodes base64 for inputs named `*_bytes` or given as such an object) or, for a
signature of one input, the instance itself. The answer is `{"predictions": [...]}`, one object per instance when the
signature has several outputs, NaN written as TF Serving writes it (`NaN`); an error is `{"error": "..."}` with 400.

The model is loaded as TF Serving's C++ loader loads it (inference.tf_serving.SessionBundle): the graph imported
into a session, the variables restored by the graph's own restore op, the warm-up requests replayed, each signature
run by its tensors' names.
"""

from __future__ import annotations

import base64
import http.server
import json
import re
import threading

import numpy as np

from contract import features
from inference.tf_serving import SessionBundle

_PREDICT = re.compile(r"/v1/models/([^/:]+)(?:/versions/([0-9]+))?:predict")


class ServingStandIn:
    def __init__(self, model_dir: str, name: str = "cats-vs-dogs", version: int = 1):
        self.name, self.version = name, version
        self.bundle = SessionBundle(model_dir)
        self.bundle.replay_warmup()
        (self.input_name,) = self.bundle.signatures[features.SERVING_SIGNATURE].inputs
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.requests = 0

    def __enter__(self) -> ServingStandIn:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.bundle.close()

    def predict(self, body: dict) -> dict:
        """TF Serving's row format: the instances decoded, the signature run, one answer per instance."""
        instances = body.get("instances")
        if not isinstance(instances, list):
            raise ValueError("Missing 'instances' key")
        values = [instance.get(self.input_name, instance) if isinstance(instance, dict) and "b64" not in instance
                  else instance for instance in instances]
        if not all(isinstance(value, dict) and set(value) == {"b64"} for value in values):
            raise ValueError(f"each instance of {self.input_name} must be {{\"b64\": ...}}")
        images = [base64.b64decode(value["b64"], validate=True) for value in values]
        outputs = self.bundle.run(features.SERVING_SIGNATURE, {self.input_name: np.array(images, dtype=object)})
        rows = []
        for index in range(len(images)):
            rows.append({name: _json_value(array[index]) for name, array in outputs.items()})
        return {"predictions": rows}

    def _handler(self):
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet: the tests read the answers
                pass

            def _answer(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path != f"/v1/models/{stand_in.name}":
                    return self._answer(404, {"error": f"Servable not found for request: {self.path}"})
                self._answer(200, {"model_version_status": [{"version": str(stand_in.version), "state": "AVAILABLE",
                                                             "status": {"error_code": "OK", "error_message": ""}}]})

            def do_POST(self):
                match = _PREDICT.fullmatch(self.path)
                if not match or match.group(1) != stand_in.name or match.group(2) not in (None, str(stand_in.version)):
                    return self._answer(404, {"error": f"Servable not found for request: {self.path}"})
                stand_in.requests += 1
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                    self._answer(200, stand_in.predict(body))
                except (ValueError, TypeError, AttributeError) as error:
                    self._answer(400, {"error": str(error)})

        return Handler


def _json_value(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (np.floating, float)):
        return float(value)  # json.dumps writes NaN as NaN, as TF Serving does
    if isinstance(value, np.bool_):
        return bool(value)
    return value.item() if hasattr(value, "item") else value
