"""Serving on the cluster: a KServe InferenceService over the root's pushed versions.

KServe's TensorFlow runtime starts TF Serving with --model_base_path at the
folder its storageUri names, so storageUri is <root>/serving_model, the folder
that holds the numbered versions (1/, 2/, ...). TF Serving serves the highest
version and polls the folder, so a push or a rollback (a new highest version)
reaches clients with no change to the manifest. `compile` writes the manifest
beside the package; `kubectl apply -f` deploys it.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re

import yaml

from contract.layout import RunLayout

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
MODEL_FORMAT = "tensorflow"  # KServe's TensorFlow Serving runtime
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # a DNS-1035 label: the name becomes a Service's


class ServingError(ValueError):
    """A serving setting that cannot work; the message names the flag."""


@dataclasses.dataclass(frozen=True)
class Serving:
    """The InferenceService's own settings (`compile --serving-*`)."""

    name: str = "cats-vs-dogs"
    namespace: str = "default"
    cpu: str = "1"
    memory: str = "2Gi"
    service_account: str | None = None  # one with read access to a gs:// root (KServe's storage initializer)

    def __post_init__(self):
        if not _NAME.match(self.name) or len(self.name) > 45:
            raise ServingError(f"--serving-name {self.name!r}: lower-case letters, digits and '-', starting with "
                               "a letter, at most 45 characters (KServe derives Service names from it)")
        if not _NAME.match(self.namespace):
            raise ServingError(f"--serving-namespace {self.namespace!r}: not a Kubernetes namespace name")


def storage_uri(root: str, pvc: str | None, pvc_mount: str) -> str | None:
    """The URI KServe reads the versions from: the gs:// URI, or pvc://<claim>/<path on it>; None for a root
    only this machine can read (a local rehearsal)."""
    serving_dir = RunLayout(root).serving_dir
    if root.startswith("gs://"):
        return serving_dir
    if pvc:
        return f"pvc://{pvc}/{posixpath.relpath(serving_dir, pvc_mount)}"
    return None


def manifest(serving: Serving, uri: str) -> dict:
    """The InferenceService as a Kubernetes object."""
    resources = {"cpu": serving.cpu, "memory": serving.memory}
    predictor: dict = {"model": {"modelFormat": {"name": MODEL_FORMAT}, "storageUri": uri,
                                 "resources": {"requests": dict(resources), "limits": dict(resources)}}}
    if serving.service_account:
        predictor["serviceAccountName"] = serving.service_account
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": serving.name, "namespace": serving.namespace,
                         "labels": {"app.kubernetes.io/part-of": "cats-vs-dogs-pipeline"}},
            "spec": {"predictor": predictor}}


def manifest_path(package: str) -> str:
    """Beside the package: pipeline.yaml -> pipeline.inferenceservice.yaml."""
    stem = package[:-len(".yaml")] if package.endswith(".yaml") else package.rsplit(".", 1)[0]
    return f"{stem}.inferenceservice.yaml"


def write_manifest(path: str, serving: Serving, uri: str) -> str:
    with open(path, "w") as f:
        f.write("# KServe InferenceService over the pipeline's pushed versions: kubectl apply -f " +
                posixpath.basename(path) + "\n")
        yaml.safe_dump(manifest(serving, uri), f, sort_keys=False)
    return path
