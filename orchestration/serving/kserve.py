"""Serving on the cluster: a KServe InferenceService over the root's pushed versions.

KServe's TensorFlow runtime starts TF Serving over the folder its storageUri
names, mounted or copied at /mnt/models, so storageUri is <root>/serving_model,
the folder that holds the numbered versions (1/, 2/, ...) and the serving
config.

How a push or a rollback (a new highest version) reaches clients depends on
the root. A PVC is mounted into the predictor: TF Serving sees the new folder
at its next poll, with no change to the manifest. A gs:// (or s3://) root is
copied into the pod once, by KServe's storage initializer, when the pod
starts: TF Serving polls that copy, so a new version reaches clients only with
a new revision of the InferenceService. Changing the predictor's pod
annotation ROLLOUT_ANNOTATION to the version is such a change (KServe passes
`spec.predictor.annotations` to the pod): `rollout_patch` is that JSON merge
patch, `roll_out` sends it through the Kubernetes API (a pipeline task with its
pod's service account, `rollback` with the user's kubeconfig), and
`rollout_command` is the kubectl line that does the same by hand.

TF Serving loads only the version the serving config names (contract.served:
<root>/serving_model/models.config, which the pusher and `rollback` write
after a version's commit record): the predictor starts it with
--model_config_file at the config's place in the pod and re-reads it every
--serving-config-poll-seconds. A fresh pod whose copy holds partial version
folders (a push stopped before its commit record) loads the named version
only. KServe's runtime passes --model_name and --model_base_path as well; TF
Serving ignores both when --model_config_file is given. KServe before 0.20
replaces the runtime's arguments with the predictor's, 0.20 appends them: the
predictor's arguments therefore repeat the runtime's ports.

KServe's TensorFlow runtime defaults to an old TF Serving image (2.6.2 as late
as KServe 0.20); the manifest pins `runtimeVersion` to the TF Serving release
of the TensorFlow that exports the model (`--serving-runtime-version`).
`compile` writes the manifest beside the package; `kubectl apply -f` deploys it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
import re

import yaml

from contract import layout
from contract.errors import CommandError, RunFailedError, first_line
from contract.layout import RunLayout
from contract.settings import setting

GROUP, GROUP_VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
API_VERSION = f"{GROUP}/{GROUP_VERSION}"
KIND = "InferenceService"
MODEL_FORMAT = "tensorflow"  # KServe's TensorFlow Serving runtime
ROLLOUT_ANNOTATION = "cats-vs-dogs.example/served-version"
COPIED_ONCE_SCHEMES = ("gs://", "s3://")  # storageUris KServe's storage initializer copies at pod start
MODEL_MOUNT = layout.KSERVE_MODEL_MOUNT
# The ports and timeout of KServe's kserve-tensorflow-serving runtime (config/runtimes/), repeated for releases
# whose predictor arguments replace the runtime's.
RUNTIME_ARGS = ("--port=9000", "--rest_api_port=8080", "--rest_api_timeout_in_ms=60000")


# tensorflow/serving's image for each TensorFlow release line the lock files have held (its tags are TF
# Serving's releases, which follow TensorFlow's major.minor).
SERVING_RELEASES = {"2.16": "2.16.1"}


def matching_serving_release(tensorflow_version: str) -> str:
    """The tensorflow/serving image tag for the TensorFlow that exports the model."""
    line = ".".join(tensorflow_version.split(".")[:2])
    if line not in SERVING_RELEASES:
        raise ServingError(f"no known TF Serving release for TensorFlow {tensorflow_version}: pass "
                           "--serving-runtime-version with the tensorflow/serving tag of that line")
    return SERVING_RELEASES[line]


def _exporting_tensorflow() -> str:
    from importlib import metadata

    return metadata.version("tensorflow")
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # a DNS-1035 label: the name becomes a Service's


class ServingError(CommandError, ValueError):
    """A serving setting that cannot work; the message names the flag."""


@dataclasses.dataclass(frozen=True)
class Serving:
    """The InferenceService's own settings (`compile --serving-*`)."""

    name: str = setting("cats-vs-dogs", "The InferenceService's name (also the model's name in predict URLs).")
    namespace: str = setting("default", "Its namespace (with Kubeflow profiles: your profile's).")
    cpu: str = setting("1", "CPU request and limit of the predictor.")
    memory: str = setting("2Gi", "Memory request and limit of the predictor.")
    service_account: str | None = setting(
        None, "A service account that can read a gs:// root (KServe's storage initializer uses its credentials).")
    config_poll_seconds: int = setting(
        30, "How often TF Serving re-reads the serving config (models.config) that names the served version.")
    traffic_sink: bool = setting(
        True, "Deploy the traffic sink (a Deployment and a Service on --image) beside the InferenceService and point "
              "KServe's inference logger at it: every request and response is recorded under <root>/traffic.")
    runtime_version: str | None = setting(
        None, "The tensorflow/serving image tag the predictor runs. Default: the release matching the TensorFlow "
              "that exports the model (KServe's own default is far older).")

    def __post_init__(self):
        if not _NAME.match(self.name) or len(self.name) > 45:
            raise ServingError(f"--serving-name {self.name!r}: lower-case letters, digits and '-', starting with "
                               "a letter, at most 45 characters (KServe derives Service names from it)")
        if not _NAME.match(self.namespace):
            raise ServingError(f"--serving-namespace {self.namespace!r}: not a Kubernetes namespace name")
        if isinstance(self.config_poll_seconds, bool) or not isinstance(self.config_poll_seconds, int) \
                or self.config_poll_seconds < 1:
            raise ServingError(f"--serving-config-poll-seconds {self.config_poll_seconds!r}: a whole number of "
                               "seconds, at least 1")
        if self.runtime_version is not None and not re.fullmatch(r"\d+\.\d+\.\d+(-gpu)?", self.runtime_version):
            raise ServingError(f"--serving-runtime-version {self.runtime_version!r}: a tensorflow/serving tag "
                               "such as 2.16.1 (or 2.16.1-gpu)")

    @property
    def runtime(self) -> str:
        return self.runtime_version or matching_serving_release(_exporting_tensorflow())


def storage_uri(root: str, pvc: str | None, pvc_mount: str) -> str | None:
    """The URI KServe reads the versions from: the gs:// URI, or pvc://<claim>/<path on it>; None for a root
    only this machine can read (a local rehearsal)."""
    serving_dir = RunLayout(root).serving_dir
    if root.startswith("gs://"):
        return serving_dir
    if pvc:
        return f"pvc://{pvc}/{posixpath.relpath(serving_dir, pvc_mount)}"
    return None


def server_args(serving: Serving) -> list[str]:
    """TF Serving's arguments: the runtime's ports, and the serving config that names the served version."""
    return [*RUNTIME_ARGS, f"--model_config_file={posixpath.join(MODEL_MOUNT, layout.SERVING_CONFIG_FILE)}",
            f"--model_config_file_poll_wait_seconds={serving.config_poll_seconds}"]


@dataclasses.dataclass(frozen=True)
class TrafficSink:
    """The traffic sink deployed beside the InferenceService (`cats-vs-dogs traffic-sink`): KServe's logger sends
    it every request and response. One replica, replaced rather than rolled (a starting sink removes the batch
    a killed one left staged, so two must never write one root at once)."""

    image: str
    root: str
    pvc: str | None = None
    pvc_mount: str = "/mnt/pipeline"

    def name(self, serving: Serving) -> str:
        return f"{serving.name}-traffic-sink"

    def url(self, serving: Serving) -> str:
        """The Service's address in the cluster: where KServe's logger posts."""
        return f"http://{self.name(serving)}.{serving.namespace}.svc.cluster.local/"


SINK_PORT = 8080
SINK_HEALTH_PORT = 8081  # the probes' own port: a flood of the events' port cannot fail them
SINK_RESOURCES = {"cpu": "1", "memory": "1536Mi"}  # one core keeps up with a busy predictor (docs/performance.md)
SINK_GRACE_SECONDS = 60  # SIGTERM publishes the open batch


def sink_manifests(serving: Serving, sink: TrafficSink) -> list[dict]:
    """The sink's Deployment and Service (Kubernetes' apps/v1 and v1), on the project's image, with the root's
    PVC mounted where the pipeline's tasks have it (a gs:// root is written through the service account)."""
    name = sink.name(serving)
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "cats-vs-dogs-pipeline"}
    probe = {"httpGet": {"path": "/healthz", "port": SINK_HEALTH_PORT}, "periodSeconds": 10}
    container: dict = {
        "name": "traffic-sink", "image": sink.image,
        "command": ["cats-vs-dogs", "traffic-sink", "--root", sink.root, "--port", str(SINK_PORT),
                    "--health-port", str(SINK_HEALTH_PORT), "--host", "0.0.0.0"],
        "ports": [{"name": "http", "containerPort": SINK_PORT}, {"name": "health", "containerPort": SINK_HEALTH_PORT}],
        "readinessProbe": probe, "livenessProbe": {**probe, "failureThreshold": 6},
        "resources": {"requests": dict(SINK_RESOURCES), "limits": dict(SINK_RESOURCES)}}
    pod: dict = {"containers": [container], "terminationGracePeriodSeconds": SINK_GRACE_SECONDS}
    if sink.pvc:
        container["volumeMounts"] = [{"name": "pipeline-root", "mountPath": sink.pvc_mount}]
        pod["volumes"] = [{"name": "pipeline-root", "persistentVolumeClaim": {"claimName": sink.pvc}}]
    if serving.service_account:
        pod["serviceAccountName"] = serving.service_account
    metadata = {"name": name, "namespace": serving.namespace, "labels": labels}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata,
                  "spec": {"replicas": 1, "strategy": {"type": "Recreate"},
                           "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                           "template": {"metadata": {"labels": labels}, "spec": pod}}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": dict(metadata),
               "spec": {"selector": {"app.kubernetes.io/name": name},
                        "ports": [{"name": "http", "port": 80, "targetPort": SINK_PORT}]}}
    return [deployment, service]


def manifest(serving: Serving, uri: str, sink: TrafficSink | None = None) -> dict:
    """The InferenceService as a Kubernetes object; with `sink`, KServe's logger sends every request and
    response to it."""
    resources = {"cpu": serving.cpu, "memory": serving.memory}
    predictor: dict = {"model": {"modelFormat": {"name": MODEL_FORMAT}, "runtimeVersion": serving.runtime,
                                 "storageUri": uri, "args": server_args(serving),
                                 "resources": {"requests": dict(resources), "limits": dict(resources)}}}
    if serving.service_account:
        predictor["serviceAccountName"] = serving.service_account
    if sink is not None:
        predictor["logger"] = {"mode": "all", "url": sink.url(serving)}
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": serving.name, "namespace": serving.namespace,
                         "labels": {"app.kubernetes.io/part-of": "cats-vs-dogs-pipeline"}},
            "spec": {"predictor": predictor}}


def copied_once(uri: str) -> bool:
    """Whether KServe copies the versions into the pod at its start (so a new version needs a new revision)."""
    return uri.startswith(COPIED_ONCE_SCHEMES)


def rollout_patch(version: int) -> dict:
    """The JSON merge patch that makes a new revision of the InferenceService, whose pods copy the versions
    again and serve `version` (KServe copies the predictor's annotations to its pods)."""
    return {"spec": {"predictor": {"annotations": {ROLLOUT_ANNOTATION: str(version)}}}}


def rollout_command(serving: Serving, version: int) -> str:
    return (f"kubectl patch inferenceservice {serving.name} -n {serving.namespace} --type merge "
            f"-p '{json.dumps(rollout_patch(version), separators=(',', ':'))}'")


def manifest_path(package: str) -> str:
    """Beside the package: pipeline.yaml -> pipeline.inferenceservice.yaml."""
    stem = package[:-len(".yaml")] if package.endswith(".yaml") else package.rsplit(".", 1)[0]
    return f"{stem}.inferenceservice.yaml"


def write_manifest(path: str, serving: Serving, uri: str, sink: TrafficSink | None = None) -> str:
    """The InferenceService and, with `sink`, the traffic sink's Deployment and Service, in one file."""
    documents = [manifest(serving, uri, sink)] + (sink_manifests(serving, sink) if sink else [])
    with open(path, "w") as f:
        f.write("# KServe InferenceService over the pipeline's pushed versions"
                + (" and the traffic sink its logger sends to" if sink else "")
                + ": kubectl apply -f " + posixpath.basename(path) + "\n")
        yaml.safe_dump_all(documents, f, sort_keys=False)
    return path


class RolloutError(RunFailedError, RuntimeError):
    """KServe could not be told about a version (no credentials, an unreachable API, no rights, no
    InferenceService); the message names which and where. The version itself is pushed and unchanged. `done`:
    what the command did before (its line says so first)."""

    def __init__(self, message: str, done: str | None = None):
        super().__init__(message)
        self.done = done

    def line(self, command: str | None = None) -> str:
        return f"{self.done}, but {self}" if self.done else str(self)


@dataclasses.dataclass(frozen=True)
class Rollout:
    serving: Serving
    version: int
    new_revision: bool  # False: the InferenceService already asked for this version; nothing was changed
    api: str  # the Kubernetes API server's address

    def describe(self) -> str:
        name = f"InferenceService {self.serving.namespace}/{self.serving.name}"
        if not self.new_revision:
            return f"{name} already serves version {self.version} (its revision asked for it): nothing to change"
        return (f"{name} starts a new revision that copies the versions again and serves version {self.version}; "
                "requests go to the revision before until the new one is ready")


API_TIMEOUT_SECONDS = 30


def _custom_objects_api():
    """(a client of the API's custom objects, the API server's address): a pod's service account in a pipeline
    task, else the kubeconfig kubectl uses ($KUBECONFIG, else ~/.kube/config)."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        kubeconfig = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or os.path.expanduser("~/.kube/config")
        if not os.path.isfile(kubeconfig):
            raise RolloutError(f"no Kubernetes credentials: not in a pod with a service account, and no kubeconfig "
                               f"at {kubeconfig}") from None
        try:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        except (config.ConfigException, ValueError, KeyError, OSError) as error:
            raise RolloutError(f"the kubeconfig {kubeconfig} cannot be used: {first_line(error)}") from None
    configuration.retries = 1  # one more try for a dropped connection; an unreachable API fails in seconds
    return client.CustomObjectsApi(client.ApiClient(configuration)), configuration.host


def _refusal(error, serving: Serving, api: str) -> str:
    """The one line for an answer of the API other than success."""
    name = f"InferenceService {serving.namespace}/{serving.name}"
    status = getattr(error, "status", None)
    try:
        said = json.loads(error.body).get("message", "")
    except (TypeError, ValueError, AttributeError):
        said = ""
    said = f": {said}" if said else ""
    if status in (401, 403):
        return (f"the Kubernetes API at {api} refused to change {name} ({status} {error.reason}{said}); the "
                f"account needs get and patch on {PLURAL}.{GROUP} in namespace {serving.namespace} "
                "(docs/operating-on-kubeflow.md: RBAC)")
    if status == 404:
        return (f"there is no {name} at {api}: deploy the manifest `compile` wrote (kubectl apply -f "
                "<package>.inferenceservice.yaml), or give the --serving-name and --serving-namespace it has")
    return f"the Kubernetes API at {api} answered {status} {error.reason} for {name}{said}"


def roll_out(serving: Serving, version: int) -> Rollout:
    """Makes the InferenceService serve `version` of a root KServe copies once (a gs:// root): a new revision
    through the annotation ROLLOUT_ANNOTATION, unless its revision already asked for this version."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    api, host = _custom_objects_api()
    where = (GROUP, GROUP_VERSION, serving.namespace, PLURAL, serving.name)
    try:
        current = api.get_namespaced_custom_object(*where, _request_timeout=API_TIMEOUT_SECONDS)
        annotations = (current.get("spec", {}).get("predictor", {}).get("annotations") or {})
        if annotations.get(ROLLOUT_ANNOTATION) == str(version):
            return Rollout(serving, version, new_revision=False, api=host)
        api.patch_namespaced_custom_object(*where, body=rollout_patch(version), _request_timeout=API_TIMEOUT_SECONDS)
    except ApiException as error:
        raise RolloutError(_refusal(error, serving, host)) from None
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise RolloutError(f"the Kubernetes API at {host} is unreachable ({first_line(error)})") from None
    return Rollout(serving, version, new_revision=True, api=host)
