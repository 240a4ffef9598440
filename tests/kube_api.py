"""A Kubernetes API server's answers for InferenceServices, for tests (no cluster can run here).

Only the outermost boundary is faked: the project talks to it with the real
`kubernetes` client over HTTP, through a kubeconfig as kubectl's. It keeps
InferenceService objects, answers GET and PATCH on
/apis/serving.kserve.io/v1beta1/namespaces/NS/inferenceservices/NAME as the
API server does (Status objects for 401/403/404/415/422), applies a JSON merge
patch (RFC 7386) and validates the result against KServe's published CRD
schema (tests/orchestration/serving/data/kserve/), as the API server validates a
custom resource. A token's rights are the verbs it is granted.
"""

from __future__ import annotations

import copy
import gzip
import inspect
import json
import pathlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonschema
import yaml

from orchestration.serving import kserve

CRD = (pathlib.Path(__file__).parent / "orchestration" / "serving" / "data" / "kserve"
       / "serving.kserve.io_inferenceservices.yaml.gz")
_PATH = re.compile(rf"^/apis/{re.escape(kserve.API_VERSION)}/namespaces/([^/]+)/{kserve.PLURAL}/([^/?]+)$")


def strict(schema):
    """The CRD's OpenAPI schema as `kubectl apply --validate=strict` applies it: a field the schema does not
    know is an error (the API server would drop it), except where the schema keeps unknown fields."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def crd_validator() -> jsonschema.Draft7Validator:
    crd = yaml.load(gzip.open(CRD), Loader=yaml.CSafeLoader)
    assert crd["spec"]["group"] + "/" + crd["spec"]["versions"][0]["name"] == kserve.API_VERSION
    assert crd["spec"]["names"]["kind"] == kserve.KIND
    (version,) = [v for v in crd["spec"]["versions"] if v["served"]]
    return jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))


def kubernetes_validator(model: str) -> jsonschema.Draft7Validator:
    """Kubernetes' own schema of a core object, `model` the official client's class of it ("V1Deployment",
    "V1Service"): the client (`kubernetes` in the lock) is generated from the API server's OpenAPI spec, and
    each class carries its fields' JSON names and types, and which are required (the setters that refuse None).
    Strict as `kubectl apply --validate=strict`: a field the schema does not know is an error."""
    from kubernetes import client

    definitions: dict[str, dict] = {}

    def schema_of(kind: str) -> dict:
        if kind.startswith("list[") and kind.endswith("]"):
            return {"type": "array", "items": schema_of(kind[5:-1])}
        if kind.startswith("dict(") and kind.endswith(")"):
            return {"type": "object", "additionalProperties": schema_of(kind[5:-1].split(", ", 1)[1])}
        scalar = {"str": {"type": "string"}, "int": {"type": "integer"}, "float": {"type": "number"},
                  "bool": {"type": "boolean"}, "datetime": {"type": "string"}, "date": {"type": "string"},
                  "object": {}}  # object: IntOrString, RawExtension and the like
        if kind in scalar:
            return scalar[kind]
        define(kind)
        return {"$ref": f"#/definitions/{kind}"}

    def define(name: str) -> None:
        if name in definitions:
            return
        definitions[name] = {}
        cls = getattr(client, name)
        required = [cls.attribute_map[attr] for attr in cls.openapi_types
                    if "must not be `None`" in inspect.getsource(getattr(cls, attr).fset)]
        definitions[name] = {"type": "object", "additionalProperties": False, "required": required,
                             "properties": {cls.attribute_map[attr]: schema_of(kind)
                                            for attr, kind in cls.openapi_types.items()}}

    define(model)
    return jsonschema.Draft7Validator({"$ref": f"#/definitions/{model}", "definitions": definitions})


def merge_patch(target, patch):
    """RFC 7386: objects merge key by key, null removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


class FakeKubernetesAPI:
    """Serves on 127.0.0.1; `objects` {(namespace, name): InferenceService}, `grants` {token: {verbs}},
    `requests` [(method, path, content type)] in order."""

    def __init__(self, grants: dict[str, set[str]]):
        self.objects: dict[tuple[str, str], dict] = {}
        self.grants = grants
        self.requests: list[tuple[str, str, str]] = []
        self.validator = crd_validator()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, manifest: dict) -> None:
        meta = manifest["metadata"]
        self.objects[(meta["namespace"], meta["name"])] = {**copy.deepcopy(manifest),
                                                           "metadata": {**meta, "generation": 1}}

    def kubeconfig(self, path: pathlib.Path, token: str) -> pathlib.Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.address}}],
            "users": [{"name": "test", "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}]}))
        return path

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._answer(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                                    "reason": reason, "code": code})

            def _serve(self, verb: str) -> None:
                api.requests.append((self.command, self.path, self.headers.get("Content-Type", "")))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                if token not in api.grants:
                    return self._status(401, "Unauthorized", "Unauthorized")
                match = _PATH.match(self.path.split("?")[0])
                if not match:
                    return self._status(404, "NotFound", "the server could not find the requested resource")
                namespace, name = match.groups()
                if verb not in api.grants[token]:
                    return self._status(403, "Forbidden", f'{kserve.PLURAL}.{kserve.GROUP} "{name}" is forbidden: '
                                        f'cannot {verb} resource "{kserve.PLURAL}" in namespace "{namespace}"')
                current = api.objects.get((namespace, name))
                if current is None:
                    return self._status(404, "NotFound", f'{kserve.PLURAL}.{kserve.GROUP} "{name}" not found')
                if verb == "get":
                    return self._answer(200, current)
                if self.headers.get("Content-Type") != "application/merge-patch+json":
                    return self._status(415, "UnsupportedMediaType", "expected a merge patch")
                merged = merge_patch(current, json.loads(body))
                errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in api.validator.iter_errors(
                    {key: value for key, value in merged.items() if key != "metadata"})]
                if errors:
                    return self._status(422, "Invalid", "; ".join(errors))
                if merged["spec"] != current["spec"]:
                    merged["metadata"]["generation"] = current["metadata"]["generation"] + 1
                api.objects[(namespace, name)] = merged
                return self._answer(200, merged)

            def do_GET(self):
                self._serve("get")

            def do_PATCH(self):
                self._serve("patch")

        return Handler
