"""The InferenceService `compile` writes, validated against KServe's published CRD schema (data/kserve/)."""

import copy
import json

import pytest
import tensorflow as tf
import yaml

from orchestration.serving import kserve
from tests.helpers import cli_in_process
from tests.kube_api import crd_validator, kubernetes_validator


@pytest.fixture(scope="module")
def validator():
    return crd_validator()


@pytest.fixture(scope="module")
def core_validators():
    """Kubernetes' own schemas of what the manifest holds beside the InferenceService."""
    return {"Deployment": kubernetes_validator("V1Deployment"), "Service": kubernetes_validator("V1Service")}


def _errors(validator, manifest):
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(manifest)]


@pytest.mark.parametrize("root, pvc, expected", [
    ("gs://bucket/cats", None, "gs://bucket/cats/serving_model"),
    ("/mnt/pipeline/cats", "cats-data", "pvc://cats-data/cats/serving_model"),
])
def test_manifest_is_a_valid_inference_service_over_the_versions_folder(validator, root, pvc, expected):
    uri = kserve.storage_uri(root, pvc, "/mnt/pipeline")
    assert uri == expected
    manifest = kserve.manifest(kserve.Serving(service_account="gcs-reader"), uri)
    assert _errors(validator, manifest) == []
    model = manifest["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "tensorflow"} and model["storageUri"] == expected
    # KServe's runtime would otherwise start tensorflow/serving:2.6.2, four years older than the exporter
    assert model["runtimeVersion"] == kserve.SERVING_RELEASES[".".join(tf.__version__.split(".")[:2])]


def test_tf_serving_is_started_on_the_serving_config_the_pusher_writes(validator, tmp_path):
    """The predictor's TF Serving reads the config that names the committed version (a fresh pod loads only
    that version, whatever partial folders its copy holds) and re-reads it; the config's base_path is where the
    storageUri's contents are in the pod."""
    from components.serving_pusher import push_model
    from contract import served

    manifest = kserve.manifest(kserve.Serving(config_poll_seconds=5), "gs://b/c/serving_model")
    assert _errors(validator, manifest) == []
    args = manifest["spec"]["predictor"]["model"]["args"]
    (config_flag,) = [a for a in args if a.startswith("--model_config_file=")]
    assert "--model_config_file_poll_wait_seconds=5" in args
    assert {"--port=9000", "--rest_api_port=8080"} <= set(args), "KServe before 0.20 replaces the runtime's args"
    model = tmp_path / "model"
    model.mkdir()
    (model / "saved_model.pb").write_bytes(b"graph")
    serving = tmp_path / "serving_model"  # the storageUri's folder, at kserve.MODEL_MOUNT in the pod
    push_model(str(model), str(serving), served_name="cats-vs-dogs", served_base_path=kserve.MODEL_MOUNT)
    in_pod = config_flag.split("=", 1)[1]
    assert in_pod == f"{kserve.MODEL_MOUNT}/{served.CONFIG_FILE}" and (serving / served.CONFIG_FILE).is_file()
    assert served.read_config(str(serving)) == served.ServingConfig("cats-vs-dogs", kserve.MODEL_MOUNT, 1)
    with pytest.raises(kserve.ServingError, match="--serving-config-poll-seconds 0"):
        kserve.Serving(config_poll_seconds=0)


def test_the_runtime_version_can_be_chosen_and_a_bad_tag_is_refused(validator):
    manifest = kserve.manifest(kserve.Serving(runtime_version="2.17.0-gpu"), "gs://b/c/serving_model")
    assert manifest["spec"]["predictor"]["model"]["runtimeVersion"] == "2.17.0-gpu"
    assert _errors(validator, manifest) == []
    with pytest.raises(kserve.ServingError, match="--serving-runtime-version 'latest'"):
        kserve.Serving(runtime_version="latest")
    with pytest.raises(kserve.ServingError, match="TensorFlow 3.1.0"):
        kserve.matching_serving_release("3.1.0")


def test_the_rollout_patch_is_valid_on_the_object_it_patches(validator):
    """A gs:// root is copied into the pod once: a push reaches clients through a new revision, made by
    changing the predictor's pod annotation. Merged into the manifest, the patch must stay a valid object."""
    manifest = kserve.manifest(kserve.Serving(), "gs://b/c/serving_model")
    patch = kserve.rollout_patch(7)
    merged = copy.deepcopy(manifest)
    merged["spec"]["predictor"].update(patch["spec"]["predictor"])
    assert _errors(validator, merged) == []
    assert merged["spec"]["predictor"]["annotations"] == {kserve.ROLLOUT_ANNOTATION: "7"}
    command = kserve.rollout_command(kserve.Serving(name="pets", namespace="team-a"), 7)
    assert command.startswith("kubectl patch inferenceservice pets -n team-a --type merge -p '")
    assert json.loads(command.split(" -p ", 1)[1].strip("'")) == patch
    assert kserve.copied_once("gs://b/c/serving_model") and not kserve.copied_once("pvc://claim/serving_model")


def test_the_validation_catches_what_kubernetes_would_refuse_or_drop(validator):
    good = kserve.manifest(kserve.Serving(), "gs://b/c/serving_model")
    misspelt = copy.deepcopy(good)
    misspelt["spec"]["predictor"]["model"]["storageURI"] = misspelt["spec"]["predictor"]["model"].pop("storageUri")
    wrong_type = copy.deepcopy(good)
    wrong_type["spec"]["predictor"]["minReplicas"] = "one"
    assert any("storageURI" in error for error in _errors(validator, misspelt))
    assert any(error.startswith("spec/predictor/minReplicas") for error in _errors(validator, wrong_type))


def test_a_local_root_has_no_manifest_a_cluster_could_use():
    assert kserve.storage_uri("/home/me/runs/kfp", None, "/mnt/pipeline") is None


@pytest.mark.parametrize("settings, flag", [({"name": "Cats_Dogs"}, "--serving-name"),
                                            ({"namespace": "my ns"}, "--serving-namespace")])
def test_names_kubernetes_would_refuse_are_refused_at_compile_time(settings, flag):
    with pytest.raises(kserve.ServingError, match=flag):
        kserve.Serving(**settings)


def test_compile_writes_the_manifest_beside_the_package(validator, core_validators, tmp_path):
    package = tmp_path / "cats.yaml"
    result = cli_in_process("compile", "--image", "registry.example.com/c:1", "--pvc", "cats-data", "--root",
                            "/mnt/pipeline/cats", "--package", package, "--serving-name", "pets",
                            "--serving-namespace", "team-a", "--serving-memory", "4Gi",
                            "--serving-config-poll-seconds", "7")
    assert result.returncode == 0, result.stderr[-3000:]
    written = tmp_path / "cats.inferenceservice.yaml"
    assert f"kubectl apply -f {written}" in result.stdout
    manifest, deployment, service = yaml.safe_load_all(written.read_text())
    assert "traffic sink pets-traffic-sink" in result.stdout
    # a claim is seen only in its own namespace: where the server and the sink mount it is said
    assert ("the InferenceService and the traffic sink mount the PVC cats-data in namespace team-a: the claim must "
            "be there") in result.stdout
    assert manifest["spec"]["predictor"]["logger"] == {
        "mode": "all", "url": "http://pets-traffic-sink.team-a.svc.cluster.local/"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example.com/c:1"
    assert pod["volumes"] == [{"name": "pipeline-root", "persistentVolumeClaim": {"claimName": "cats-data"}}]
    assert service["metadata"]["name"] == "pets-traffic-sink"
    assert _errors(core_validators["Deployment"], deployment) == _errors(core_validators["Service"], service) == []
    assert _errors(validator, manifest) == []
    assert manifest["metadata"] == {"name": "pets", "namespace": "team-a",
                                    "labels": {"app.kubernetes.io/part-of": "cats-vs-dogs-pipeline"}}
    model = manifest["spec"]["predictor"]["model"]
    assert model["storageUri"] == "pvc://cats-data/cats/serving_model"
    assert model["resources"]["limits"] == {"cpu": "1", "memory": "4Gi"}
    assert "--model_config_file_poll_wait_seconds=7" in model["args"]
    # The Pusher writes the config with the InferenceService's name and the path the predictor sees.
    pusher_settings = str(list(yaml.safe_load_all(package.read_text())))
    assert f'"served_base_path": {{"fieldValue": {{"stringValue": "{kserve.MODEL_MOUNT}"}}}}' in pusher_settings
    assert '"served_name": {"fieldValue": {"stringValue": "pets"}}' in pusher_settings


def test_without_the_rollout_the_manifest_still_has_the_settings_given(validator, tmp_path):
    """--no-serving-rollout drops the rollout task on a gs:// root; the InferenceService's own settings still
    make its manifest."""
    package = tmp_path / "cats.yaml"
    result = cli_in_process("compile", "--image", "registry.example.com/c:1", "--root", "gs://bucket/cats",
                            "--package", package, "--no-serving-rollout", "--serving-name", "pets",
                            "--serving-cpu", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rollout task" not in result.stdout
    manifest, deployment, _ = yaml.safe_load_all((tmp_path / "cats.inferenceservice.yaml").read_text())
    assert deployment["spec"]["template"]["spec"]["containers"][0]["command"][3] == "gs://bucket/cats"
    assert "volumes" not in deployment["spec"]["template"]["spec"], "a gs:// root is written through the API"
    assert _errors(validator, manifest) == []
    assert manifest["metadata"]["name"] == "pets"
    assert manifest["spec"]["predictor"]["model"]["resources"]["limits"]["cpu"] == "2"
    assert manifest["spec"]["predictor"]["model"]["storageUri"] == "gs://bucket/cats/serving_model"


@pytest.mark.parametrize("root, pvc", [("/mnt/pipeline/cats", "cats-data"), ("gs://bucket/cats", None)])
def test_the_logger_sends_everything_to_the_traffic_sink_deployed_beside_it(validator, core_validators, root, pvc):
    """KServe's logger posts every request and response to the sink's Service; the sink's Deployment runs the
    project's image on the same root the pipeline's tasks write, where the predictor's versions are."""
    import pipeline_runner
    from cli.traffic import command_traffic_sink

    serving = kserve.Serving(name="pets", namespace="team-a", service_account="pets-runner")
    sink = kserve.TrafficSink("registry.example.com/c:1", root, pvc, "/mnt/pipeline")
    uri = kserve.storage_uri(root, pvc, "/mnt/pipeline")
    inference_service = kserve.manifest(serving, uri, sink)
    deployment, service = kserve.sink_manifests(serving, sink)
    assert _errors(validator, inference_service) == []
    assert _errors(core_validators["Deployment"], deployment) == [] and deployment["apiVersion"] == "apps/v1"
    assert _errors(core_validators["Service"], service) == [] and service["apiVersion"] == "v1"

    url = inference_service["spec"]["predictor"]["logger"]["url"]
    assert inference_service["spec"]["predictor"]["logger"]["mode"] == "all"
    assert url == f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local/"
    (port,) = service["spec"]["ports"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert port["port"] == 80 and port["targetPort"] == container["ports"][0]["containerPort"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    # The probes on the sink's health port: a flood of the events' port cannot fail them.
    events, health = ({"name": "http", "containerPort": 8080}, {"name": "health", "containerPort": 8081})
    assert container["ports"] == [events, health]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": health["containerPort"]}
    # The container's command is the sink's, as the command line parses it.
    assert container["command"][0] == "cats-vs-dogs"
    args = pipeline_runner.build_parser().parse_args(container["command"][1:])
    assert args.handler is command_traffic_sink and (args.root, args.port, args.host) == (root, 8080, "0.0.0.0")
    assert args.health_port == health["containerPort"]
    if pvc:
        (mount,) = container["volumeMounts"]
        (volume,) = pod["spec"]["volumes"]
        assert volume == {"name": mount["name"], "persistentVolumeClaim": {"claimName": pvc}}
        assert root.startswith(mount["mountPath"] + "/")
    else:
        assert pod["spec"]["serviceAccountName"] == "pets-runner"
    assert "logger" not in kserve.manifest(serving, uri)["spec"]["predictor"]


def test_the_core_schemas_catch_what_kubernetes_would_refuse(core_validators):
    deployment, service = kserve.sink_manifests(kserve.Serving(), kserve.TrafficSink("img:1", "gs://b/c"))
    misspelt = copy.deepcopy(deployment)
    misspelt["spec"]["template"]["spec"]["containers"][0]["containerPort"] = 8080
    no_selector = copy.deepcopy(deployment)
    del no_selector["spec"]["selector"]
    wrong_type = copy.deepcopy(service)
    wrong_type["spec"]["ports"][0]["port"] = "eighty"
    assert any("containerPort" in e for e in _errors(core_validators["Deployment"], misspelt))
    assert any("'selector' is a required property" in e for e in _errors(core_validators["Deployment"], no_selector))
    assert any(e.startswith("spec/ports/0/port") for e in _errors(core_validators["Service"], wrong_type))
