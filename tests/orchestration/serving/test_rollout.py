"""Every push and rollback on a gs:// root reaches clients: the InferenceService gets a new revision through the
Kubernetes API (orchestration.serving.kserve.roll_out), from a pipeline task and from `rollback`.

The project's own code and the real `kubernetes` client, against an API server
faked at the HTTP boundary (tests/kube_api.py: KServe's CRD schema, RBAC by
token, merge patches), reached through a kubeconfig as kubectl's.
"""

import json
import socket

import pytest

from components.serving_pusher import existing_versions, push_model
from contract.layout import ROLLOUT_TASK, RunLayout
from orchestration.engines import kfp_tasks
from orchestration.root import lease
from orchestration.serving import kserve, rollback
from tests.kube_api import FakeKubernetesAPI

SERVING = kserve.Serving(name="pets", namespace="team-a")
WHERE = ("team-a", "pets")
GRANTS = {"rollout": {"get", "patch"}, "viewer": {"get"}}


@pytest.fixture
def api(monkeypatch, tmp_path):
    """The API with the InferenceService `compile` writes for a gs:// root, and a kubeconfig whose token may get
    and patch it."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a pod: the kubeconfig is used
    with FakeKubernetesAPI(GRANTS) as server:
        server.add(kserve.manifest(SERVING, "gs://bucket/cats/serving_model"))
        monkeypatch.setenv("KUBECONFIG", str(server.kubeconfig(tmp_path / "kubeconfig", "rollout")))
        yield server


def _asked_for(api) -> str | None:
    return (api.objects[WHERE]["spec"]["predictor"].get("annotations") or {}).get(kserve.ROLLOUT_ANNOTATION)


def test_a_new_version_starts_a_new_revision_and_asking_again_changes_nothing(api):
    first = kserve.roll_out(SERVING, 4)
    assert first.new_revision and first.api == api.address
    assert _asked_for(api) == "4" and api.objects[WHERE]["metadata"]["generation"] == 2
    assert "starts a new revision" in first.describe() and "team-a/pets" in first.describe()
    patches = [r for r in api.requests if r[0] == "PATCH"]
    assert [content_type for _, _, content_type in patches] == ["application/merge-patch+json"]

    again = kserve.roll_out(SERVING, 4)
    assert not again.new_revision and "already serves version 4" in again.describe()
    assert len([r for r in api.requests if r[0] == "PATCH"]) == 1, "no patch when nothing changes"
    kserve.roll_out(SERVING, 5)
    assert _asked_for(api) == "5" and api.objects[WHERE]["metadata"]["generation"] == 3
    model = api.objects[WHERE]["spec"]["predictor"]["model"]
    assert model["storageUri"] == "gs://bucket/cats/serving_model", "the rest of the object is kept"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("fault, expected", [
    ("viewer", ["refused to change InferenceService team-a/pets (403 Forbidden", "get and patch",
                "inferenceservices.serving.kserve.io in namespace team-a"]),
    ("stranger", ["refused to change InferenceService team-a/pets (401 Unauthorized"]),
    ("no service", ["there is no InferenceService team-a/pets", "kubectl apply -f"]),
    ("unreachable", ["the Kubernetes API at http://127.0.0.1:", "is unreachable"]),
    ("no kubeconfig", ["no Kubernetes credentials", "no kubeconfig at"]),
])
def test_what_keeps_the_api_from_the_change_is_one_line_naming_it_and_changes_nothing(
        api, monkeypatch, tmp_path, fault, expected):
    if fault in ("viewer", "stranger"):
        monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path / "other", fault)))
    elif fault == "no service":
        del api.objects[WHERE]
    elif fault == "unreachable":
        config = (tmp_path / "kubeconfig").read_text().replace(api.address, f"http://127.0.0.1:{_closed_port()}")
        (tmp_path / "kubeconfig").write_text(config)
    else:
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    before = json.dumps(api.objects.get(WHERE), sort_keys=True)
    with pytest.raises(kserve.RolloutError) as raised:
        kserve.roll_out(SERVING, 4)
    message = str(raised.value)
    assert "\n" not in message and all(part in message for part in expected), message
    assert json.dumps(api.objects.get(WHERE), sort_keys=True) == before


def _version_source(tmp_path, tag: str) -> str:
    folder = tmp_path / f"model-{tag}"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(tag.encode())
    (folder / "variables" / "variables.index").write_bytes(tag.encode())
    return str(folder)


def test_the_rollout_task_serves_the_highest_complete_version_and_a_refusal_reaches_the_report(api, tmp_path,
                                                                                            monkeypatch):
    root = str(tmp_path / "root")
    serving_dir = RunLayout(root).serving_dir
    for tag in ("a", "b"):
        push_model(_version_source(tmp_path, tag), serving_dir)
    (tmp_path / "root" / "serving_model" / "3").mkdir()  # a push killed before its commit record
    lease.acquire(root, "run-1")
    serving = {"name": SERVING.name, "namespace": SERVING.namespace}

    monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path / "viewer", "viewer")))
    with pytest.raises(SystemExit) as failed:
        kfp_tasks.rollout(root, serving, "run-1", say=print)
    assert failed.value.code == 1 and _asked_for(api) is None
    record = kfp_tasks._read_records(root, "run-1")[ROLLOUT_TASK]
    assert record["error"].startswith("version 2 is pushed, but clients do not see it: the Kubernetes API at ")
    assert kfp_tasks.outcome_error(_NoNodes(), kfp_tasks._read_records(root, "run-1"), None, [],
                                   frozenset()).startswith("failed at rollout: version 2 is pushed")

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))  # KFP's retry, once the RBAC is granted
    line = kfp_tasks.rollout(root, serving, "run-1", say=print)
    assert _asked_for(api) == "2" and "serves version 2" in line
    assert kfp_tasks._read_records(root, "run-1")[ROLLOUT_TASK] == {"task": ROLLOUT_TASK, "rollout": line}
    assert existing_versions(serving_dir) == [1, 2]


class _NoNodes:
    nodes = ()


def test_a_rollback_on_a_gs_root_reaches_clients_or_says_how(api, monkeypatch, tmp_path):
    said = rollback.reach_clients("gs://bucket/cats", 6, SERVING)
    assert "starts a new revision" in said and _asked_for(api) == "6"
    monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path / "viewer", "viewer")))
    with pytest.raises(kserve.RolloutError) as raised:
        rollback.reach_clients("gs://bucket/cats", 7, SERVING)
    assert str(raised.value).startswith("clients do not see version 7: the Kubernetes API at ")
    assert "kubectl patch inferenceservice pets -n team-a --type merge" in str(raised.value)
    assert _asked_for(api) == "6"
    assert "at its next read" in rollback.reach_clients(str(tmp_path), 7, SERVING), "a polled root needs no revision"
    assert len([r for r in api.requests if r[0] == "PATCH"]) == 2, "one made, one refused, none for the polled root"
