"""A target is one module: the command line takes a new one from the list in cli/targets/__init__.py alone
(its docstring and docs/architecture.md, "Adding a target"), with no change to the commands."""

import argparse
import dataclasses
import types

import pytest

import pipeline_runner
from cli import flags, targets
from contract.settings import setting


@dataclasses.dataclass(frozen=True)
class _Dag:
    dag_id: str = setting("cats_vs_dogs", "The DAG's id.")


def _throwaway_target(calls):
    """A target written from the list alone: NAME, HELP, SELECTS, SETTINGS, METADATA, add_flags and the commands
    it offers."""
    target = types.ModuleType("airflow_target")
    target.NAME, target.HELP = "airflow", "Apache Airflow, with TFX's AirflowDagRunner"
    target.SELECTS = {"submit": ("--airflow-home", {"help": "Where Airflow keeps its DAGs."})}
    target.SETTINGS = {"submit": _Dag}
    target.METADATA = (("grpc",), "grpc://airflow-mlmd:8080")  # a MySQL-backed store every worker reaches

    def add_flags(command, parser):
        if command == "compile":
            parser.add_argument("--dags-folder", help="Where the DAG file goes.")

    def compile(args, config):
        calls.append(("compile", args.dags_folder, args.image, config.name, args.metadata_store))
        return 0

    def submit(args):
        calls.append(("submit", args.airflow_home, flags.settings(args, _Dag).dag_id, args.package))
        return 0

    target.add_flags, target.compile, target.submit = add_flags, compile, submit
    return target


@pytest.fixture
def with_airflow(monkeypatch):
    calls = []
    monkeypatch.setattr(targets, "TARGETS", (*targets.TARGETS, _throwaway_target(calls)))
    return calls


def test_a_new_target_gets_its_flags_and_its_commands(with_airflow, tmp_path):
    package = tmp_path / "p.yaml"
    assert pipeline_runner.main(["compile", "--target", "airflow", "--image", "i:1", "--root", str(tmp_path),
                                 "--dags-folder", "dags", "--package", str(package)]) == 0
    package.write_text("{}")
    with pytest.MonkeyPatch.context() as patch:  # a package of the new target is its own business
        from orchestration import kubeflow

        patch.setattr(kubeflow, "package_spec", lambda path: {})
        assert pipeline_runner.main(["submit", "--airflow-home", "/opt/airflow", "--package", str(package)]) == 0
    assert pipeline_runner.main(["compile", "--target", "airflow", "--image", "i:1", "--root", str(tmp_path),
                                 "--metadata-grpc", "mlmd:9090", "--package", str(package)]) == 0
    assert with_airflow == [("compile", "dags", "i:1", "cats-vs-dogs", "grpc://airflow-mlmd:8080"),
                            ("submit", "/opt/airflow", "cats_vs_dogs", str(package)),
                            ("compile", None, "i:1", "cats-vs-dogs", "grpc://mlmd:9090")]
    # A target that offers no schedule is not among schedule's choices; the others still are.
    commands = next(a for a in pipeline_runner.build_parser()._actions if a.dest == "command").choices
    schedule_flags = {flag for action in commands["schedule"]._actions for flag in action.option_strings}
    assert "--airflow-home" not in schedule_flags and {"--host", "--vertex-project", "--local"} <= schedule_flags


def test_a_flag_of_another_target_is_refused_naming_its_target(with_airflow, tmp_path, capsys):
    code = pipeline_runner.main(["compile", "--target", "vertex", "--image", "i:1", "--root", "gs://b/r",
                                 "--dags-folder", "dags", "--pvc", "claim"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "applies only to" in err and "not --target vertex" in err
    code = pipeline_runner.main(["submit", "--host", "http://kfp", "--package", "p.yaml", "--dag-id", "x"])
    assert code == 2 and "--dag-id applies only to --airflow-home, not --host" in capsys.readouterr().err


def test_every_target_offers_what_the_list_asks():
    for target in targets.TARGETS:
        assert isinstance(target.NAME, str) and isinstance(target.HELP, str)
        offered = [command for command in targets.COMMANDS if callable(getattr(target, command, None))]
        assert offered, f"{target.NAME} offers no command"
        assert set(target.SELECTS) <= set(offered) and {"submit", "schedule"} & set(offered) <= set(target.SELECTS)
        assert set(getattr(target, "SETTINGS", {})) <= set(offered)
        for command, settings in getattr(target, "SETTINGS", {}).items():
            assert dataclasses.is_dataclass(settings) and any("help" in f.metadata
                                                               for f in dataclasses.fields(settings))
        if "compile" in offered:
            kinds, default = target.METADATA
            assert set(kinds) <= {"grpc", "sqlite"} and (default is None) == (not kinds)
        for command in offered:
            if hasattr(target, "add_flags"):
                target.add_flags(command, argparse.ArgumentParser())


def test_a_store_a_target_does_not_take_is_refused_naming_the_flag(with_airflow, capsys):
    base = ["compile", "--image", "i:1", "--root", "gs://b/r"]
    assert pipeline_runner.main([*base, "--target", "vertex", "--metadata-grpc", "mlmd:8080"]) == 2
    assert capsys.readouterr().err == \
        "error: --metadata-grpc: --target vertex keeps its own ML Metadata store\n"
    assert pipeline_runner.main([*base, "--target", "airflow", "--metadata-sqlite", "/tmp/m.sqlite"]) == 2
    assert "--metadata-sqlite: --target airflow takes a store of kind grpc" in capsys.readouterr().err


def test_a_remote_target_checks_its_own_settings_before_the_package(capsys):
    code = pipeline_runner.main(["submit", "--vertex-project", "my-project", "--package", "nowhere.yaml"])
    assert code == 2 and capsys.readouterr().err == "error: --vertex-project needs --region\n"
