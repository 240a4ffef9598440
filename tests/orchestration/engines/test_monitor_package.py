"""The monitoring package (`compile --monitor-package`): one task that runs `monitor` on a deployment's root, compiled
with the kfp SDK's own compiler, scheduled beside the pipeline's package with the same remote code, and run by kfp's
local runner. The check itself, on a root with a served model, is tests/e2e/test_local_pipeline.py's."""

import socket

import pytest
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

import pipeline_runner
from config import PipelineConfig
from contract import layout
from monitoring.settings import MonitorSettings
from orchestration.engines import kubeflow, packages
from orchestration.root import marker
from tests.orchestration.engines import test_kubeflow
from tests.orchestration.engines.test_kubeflow import IMAGE, _cli, _documents

kfp_api = test_kubeflow.kfp_api  # the fake KFP API on loopback, a fixture


def _compile(path, deployment, settings=MonitorSettings()):
    original = socket.socket.connect

    def refuse(*args, **kwargs):
        raise OSError("network access during compile")

    socket.socket.connect = refuse  # compiling needs no network
    try:
        return kubeflow.compile_monitor_package(PipelineConfig(), str(path), deployment, settings)
    finally:
        socket.socket.connect = original


@pytest.fixture(scope="module")
def pvc_monitor(tmp_path_factory):
    deployment = kubeflow.Deployment(image=IMAGE, root="/mnt/pipeline/cats", pvc="cats-data")
    return _compile(tmp_path_factory.mktemp("kfp") / "monitor.yaml", deployment)


def test_the_package_is_one_monitor_task_the_kfp_backend_runs(pvc_monitor):
    from kfp import components

    spec, platform = _documents(pvc_monitor)
    assert spec["schemaVersion"] == "2.1.0" and spec["pipelineInfo"]["name"] == f"{PipelineConfig().name}-monitoring"
    parsed = pipeline_spec_pb2.PipelineSpec()
    json_format.ParseDict(spec, parsed, ignore_unknown_fields=False)
    assert set(components.load_component_from_file(pvc_monitor).pipeline_spec.root.dag.tasks) == {"monitor"}
    (task,) = spec["root"]["dag"]["tasks"].values()
    assert not task.get("cachingOptions", {}).get("enableCache") and task["retryPolicy"]["maxRetryCount"] == 1
    (executor,) = spec["deploymentSpec"]["executors"].values()
    container = executor["container"]
    assert container["image"] == IMAGE and container["args"][-1] == "monitor_traffic"
    assert "kfp_tasks.monitor(root, metadata_store, settings" in container["command"][-1]
    # the root's volume and the run id fallback, as the pipeline's own tasks get them
    (mounted,) = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values()
    assert [(m["constant"], m["mountPath"]) for m in mounted["pvcMount"]] == [("cats-data", "/mnt/pipeline")]
    assert mounted["fieldPathAsEnv"] == [{"fieldPath": "metadata.labels['pipeline/runid']", "name": "KFP_RUN_ID"}]


def test_the_task_checks_the_root_with_the_deployments_store_and_monitors_defaults(pvc_monitor):
    constants = packages.task_constants(pvc_monitor, layout.MONITOR_TASK)
    assert constants["root"] == "/mnt/pipeline/cats"
    assert constants["metadata_store"] == kubeflow.DEFAULT_METADATA_STORE
    defaults = MonitorSettings()
    assert constants["settings"] == {name: getattr(defaults, name) for name in kubeflow.MONITORED_SETTINGS}
    assert packages.package_root(pvc_monitor) == "/mnt/pipeline/cats"
    assert packages.is_monitor_package(pvc_monitor)


def test_a_gs_root_and_its_store_reach_the_task_without_a_volume(tmp_path):
    deployment = kubeflow.Deployment(image=IMAGE, root="gs://bucket/cats", metadata_store="grpc://mlmd.example:8080")
    package = _compile(tmp_path / "monitor.yaml", deployment)
    constants = packages.task_constants(package, layout.MONITOR_TASK)
    assert (constants["root"], constants["metadata_store"]) == ("gs://bucket/cats", "grpc://mlmd.example:8080")
    spec = _documents(package)[0]
    assert spec["defaultPipelineRoot"] == "gs://bucket/cats/kfp"
    (mounted,) = _documents(package)[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values()
    assert "pvcMount" not in mounted


def test_compile_writes_both_packages_from_one_deployment(tmp_path, capsys):
    main, monitor = tmp_path / "pipeline.yaml", tmp_path / "monitor.yaml"
    code = pipeline_runner.main(["compile", "--image", IMAGE, "--root", "/mnt/pipeline/cats", "--pvc", "cats-data",
                                 "--metadata-grpc", "mlmd.kubeflow:8080", "--package", str(main),
                                 "--monitor-package", str(monitor)])
    out = capsys.readouterr().out
    assert code == 0 and f"wrote the monitoring package {monitor}" in out
    assert not packages.is_monitor_package(str(main)) and packages.is_monitor_package(str(monitor))
    for package in (main, monitor):
        assert packages.package_root(str(package)) == "/mnt/pipeline/cats"
        assert packages.package_metadata_store(str(package)) == "grpc://mlmd.kubeflow:8080"


@pytest.mark.parametrize("arguments, message", [
    (["--monitor-package", "{tmp}/pipeline.yaml"], "--monitor-package {tmp}/pipeline.yaml is --package's file"),
    (["--monitor-package", "{tmp}/monitor.json"], "the package file must end in .yaml"),
    (["--target", "vertex", "--monitor-package", "{tmp}/monitor.yaml"], "--monitor-package applies only to --target "
                                                                        "kubeflow"),
])
def test_a_monitor_package_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys, arguments, message):
    code = pipeline_runner.main(["compile", "--image", IMAGE, "--root", "gs://b/c", "--package",
                                 str(tmp_path / "pipeline.yaml"), *[a.format(tmp=tmp_path) for a in arguments]])
    err = capsys.readouterr().err
    assert code == 2 and message.format(tmp=tmp_path) in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_schedule_makes_the_monitoring_package_a_recurring_run_of_its_own(pvc_monitor, kfp_api):
    host, received = kfp_api
    result = _cli("schedule", "--package", pvc_monitor, "--host", host, "--cron", "0 30 * * * *",
                  "--job-name", "cats-vs-dogs-monitoring", "--experiment", "cats-vs-dogs-monitoring")
    assert result.returncode == 0, result.stderr
    assert any(method == "GET" and "/experiments?filter=" in path and "cats-vs-dogs-monitoring" in path
               for method, path, _ in received), "its experiment is asked for by its own name"
    (body,) = [b for method, path, b in received if method == "POST" and path.endswith("/recurringruns")]
    assert body["display_name"] == "cats-vs-dogs-monitoring" and body["max_concurrency"] == 1
    assert body["trigger"] == {"cron_schedule": {"cron": "0 30 * * * *"}}
    assert body["runtime_config"].get("parameters", {}) == {}
    sent = body["pipeline_spec"]
    assert set(sent.get("pipeline_spec", sent)["root"]["dag"]["tasks"]) == {"monitor"}


def test_a_source_for_the_monitoring_package_is_refused(pvc_monitor, capsys):
    code = pipeline_runner.main(["schedule", "--package", pvc_monitor, "--host", "http://127.0.0.1:9", "--cron",
                                 "0 30 * * * *", "--data-dir", "gs://b/images"])
    err = capsys.readouterr().err
    assert code == 2 and "is the monitoring package, which ingests nothing" in err and err.count("\n") == 1, err


@pytest.mark.e2e
def test_a_local_run_of_the_package_names_the_unreachable_store_and_checks_nothing(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    marker.claim(root, marker.inspect(root))
    (root / "traffic").mkdir()
    package = _compile(tmp_path / "monitor.yaml", kubeflow.Deployment(image=IMAGE, root=str(root),
                                                                      metadata_store="grpc://127.0.0.1:9"))
    result = _cli("submit", "--local", "--package", package, "--kfp-outputs", str(tmp_path / "kfp"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "error: monitor: cannot reach the ML Metadata store grpc://127.0.0.1:9" in result.stdout + result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: monitoring run local-")]
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in root.iterdir()) == [layout.ROOT_MARKER, "traffic"]


@pytest.mark.parametrize("arguments, message", [
    (["--root", "{tmp}/root"], "--root needs the deployment's ML Metadata store: --metadata-grpc HOST:PORT"),
    (["--root", "{tmp}/root", "--metadata-sqlite", "{tmp}/none.sqlite"], "--metadata-sqlite {tmp}/none.sqlite: no "
                                                                         "such file"),
    (["--output-dir", "{tmp}/root", "--metadata-grpc", "localhost:1"], "--metadata-grpc and --metadata-sqlite go "
                                                                       "with --root"),
    (["--root", "{tmp}/new", "--metadata-sqlite", "{tmp}/store.sqlite"], "--root {tmp}/new is not a pipeline root"),
])
def test_monitor_on_a_deployments_root_needs_its_store_and_a_root(tmp_path, capsys, arguments, message):
    from contract import metadata

    (tmp_path / "root").mkdir()
    metadata.open_store(metadata.sqlite_store(tmp_path / "store.sqlite"))  # an empty store: its history is read
    code = pipeline_runner.main(["monitor", *[a.format(tmp=tmp_path) for a in arguments]])
    err = capsys.readouterr().err
    assert code == 2 and message.format(tmp=tmp_path) in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root", "store.sqlite"]


def test_a_packages_setting_this_release_refuses_ends_the_task_in_one_line(tmp_path, capsys):
    """A package another release compiled may hold a false-alarm rate this one refuses: no traceback in the pod."""
    from orchestration.engines import kfp_tasks

    with pytest.raises(SystemExit) as ended:
        kfp_tasks.monitor(str(tmp_path), "sqlite:///nowhere.sqlite", {"false_alarm_rate": 0.001},
                          str(tmp_path / "page.html"), str(tmp_path / "page.md"))
    err = capsys.readouterr().err
    assert ended.value.code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert "the package's settings cannot make a check: false_alarm_rate must be above 0.006" in err, err


def test_a_recurring_check_of_a_root_where_nothing_was_pushed_yet_succeeds_saying_so(tmp_path):
    """A deployment's monitoring schedule may start before its first blessed model: no failed run every hour."""
    from contract import metadata
    from orchestration.engines import kfp_tasks

    root = tmp_path / "root"
    root.mkdir()
    marker.claim(root, marker.inspect(root))
    metadata.open_store(metadata.sqlite_store(tmp_path / "store.sqlite"))
    said = []
    line = kfp_tasks.monitor(str(root), f"sqlite:///{tmp_path / 'store.sqlite'}", {}, str(tmp_path / "page.html"),
                             str(tmp_path / "page.md"), say=said.append)
    assert line == said[0] == f"nothing to check yet: nothing is served under {root / 'serving_model'}: no model " \
                              "has been pushed there yet"
    assert (tmp_path / "page.md").read_text().startswith("**Nothing to check yet**: nothing is served under")
    assert sorted(p.name for p in root.iterdir()) == [layout.ROOT_MARKER]
