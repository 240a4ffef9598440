"""A target is one module: the command line takes a new one from the list in cli/targets/__init__.py alone
(cli.targets.base.Target and docs/architecture.md, "Adding a target"), with no change to the commands and no
patch: a target registered beside the project's (pipeline_runner.main's `targets`) is all it takes."""

import argparse
import dataclasses
import functools
import json
import pathlib
import types

import pytest

import pipeline_runner
from cli import flags, targets
from cli.targets import Takes
from contract.settings import setting


@dataclasses.dataclass(frozen=True)
class _Dag:
    dag_id: str = setting("cats_vs_dogs", "The DAG's id.")


def _throwaway_target(calls):
    """A target written from cli.targets.base.Target alone: NAME, HELP, ABOUT, SELECTS, SETTINGS, SHARED,
    METADATA, add_flags, check_package and the commands it offers."""
    target = types.ModuleType("airflow_target")
    target.NAME, target.HELP = "airflow", "Apache Airflow, with TFX's AirflowDagRunner"
    target.ABOUT = {"compile": "a DAG file for Airflow's scheduler.", "submit": "one DAG run."}
    target.SELECTS = {"submit": ("--airflow-home", {"help": "Where Airflow keeps its DAGs."})}
    target.SETTINGS = {"submit": _Dag}
    # It needs an image, and takes a root and a package; no --pipeline-root, no --beam-arg.
    target.SHARED = {"compile": {"--image": Takes(needs="the workers' image"), "--root": Takes("a shared folder"),
                                 "--package": Takes()},
                     "submit": {"--package": Takes("the DAG file compile wrote", needs="the DAG to run")}}
    target.METADATA = (("grpc",), "grpc://airflow-mlmd:8080")  # a MySQL-backed store every worker reaches

    def add_flags(command, parser):
        if command == "compile":
            parser.add_argument("--dags-folder", help="Where the DAG file goes.")

    def check_package(package, arguments):
        if not isinstance(json.loads(pathlib.Path(package).read_text()), dict):
            raise flags.SettingsError(f"{package} is not a DAG file")

    def compile(args, config):
        calls.append(("compile", args.dags_folder, args.image, config.name, args.metadata_store))
        return 0

    def submit(args):
        calls.append(("submit", args.airflow_home, flags.settings(args, _Dag).dag_id, flags.package(args)))
        return 0

    target.add_flags, target.check_package, target.compile, target.submit = add_flags, check_package, compile, submit
    return target


@pytest.fixture
def with_airflow():
    """(the calls the throwaway target received, main with it registered beside the project's targets)."""
    calls = []
    every = (*targets.TARGETS, _throwaway_target(calls))
    return calls, functools.partial(pipeline_runner.main, targets=every)


def test_a_new_target_gets_its_flags_and_its_commands(with_airflow, tmp_path):
    calls, main = with_airflow
    package = tmp_path / "p.yaml"
    assert main(["compile", "--target", "airflow", "--image", "i:1", "--root", str(tmp_path),
                 "--dags-folder", "dags", "--package", str(package)]) == 0
    package.write_text("{}")
    # a package of the new target is its own business: its check_package reads it, nobody else's
    assert main(["submit", "--airflow-home", "/opt/airflow", "--package", str(package)]) == 0
    assert main(["compile", "--target", "airflow", "--image", "i:1", "--root", str(tmp_path),
                 "--metadata-grpc", "mlmd:9090", "--package", str(package)]) == 0
    assert calls == [("compile", "dags", "i:1", "cats-vs-dogs", "grpc://airflow-mlmd:8080"),
                     ("submit", "/opt/airflow", "cats_vs_dogs", str(package)),
                     ("compile", None, "i:1", "cats-vs-dogs", "grpc://mlmd:9090")]
    # A target that offers no schedule is not among schedule's choices; the others still are.
    commands = next(a for a in pipeline_runner.build_parser(targets=(*targets.TARGETS, _throwaway_target([])))
                    ._actions if a.dest == "command").choices
    schedule_flags = {flag for action in commands["schedule"]._actions for flag in action.option_strings}
    assert "--airflow-home" not in schedule_flags and {"--host", "--vertex-project", "--local"} <= schedule_flags


def test_a_new_target_checks_its_own_packages_and_needs_its_own_flags(with_airflow, tmp_path, capsys):
    calls, main = with_airflow
    package = tmp_path / "dag.yaml"
    package.write_text("[]")
    assert main(["submit", "--airflow-home", "/opt/airflow", "--package", str(package)]) == 2
    assert capsys.readouterr().err == f"error: {package} is not a DAG file\n"
    # --root is the kubeflow target's need, not airflow's; --image is both's
    assert main(["compile", "--target", "airflow", "--image", "i:1", "--package", str(package)]) == 0
    assert main(["compile", "--image", "i:1", "--package", str(package)]) == 2
    assert capsys.readouterr().err == "error: --target kubeflow needs --root (where the deployment keeps its data)\n"
    assert main(["compile", "--target", "airflow", "--package", str(package)]) == 2
    assert capsys.readouterr().err == "error: --target airflow needs --image (the workers' image)\n"
    assert main(["submit", "--airflow-home", "/opt/airflow"]) == 2
    assert capsys.readouterr().err == "error: --airflow-home needs --package (the DAG to run)\n"
    assert [call[0] for call in calls] == ["compile"]


@pytest.mark.parametrize("argv, refused", [
    (["compile", "--target", "vertex", "--image", "i:1", "--root", "gs://b/r", "--pipeline-root", "gs://b/kfp",
      "--package", "{tmp}/v.yaml"],
     "--pipeline-root: --target vertex does not take it"),
    (["compile", "--target", "airflow", "--image", "i:1", "--beam-arg=--runner=DataflowRunner", "--pipeline-root",
      "/p"], "--pipeline-root, --beam-arg: --target airflow does not take them"),
    (["submit", "--vertex-project", "p", "--region", "europe-west4", "--package", "p.yaml", "--data-dir", "gs://b/i"],
     "--data-dir: --vertex-project does not take it"),
    (["submit", "--local", "--package", "p.yaml", "--pipeline-root", "/tmp/kfp"],
     "--pipeline-root: --local does not take it"),
    (["schedule", "--local", "--cron", "0 3 * * *", "--data-dir", "pets", "--source-kind", "parquet"],
     "--source-kind: --local does not take it"),
    (["schedule", "--local", "--cron", "0 3 * * *", "--data-dir", "pets", "--package", "p.yaml", "--job-name", "j"],
     "--package, --job-name: --local does not take them"),
])
def test_a_shared_flag_the_chosen_target_does_not_take_is_refused_in_one_line(with_airflow, argv, refused, capsys,
                                                                            tmp_path):
    calls, main = with_airflow
    assert main([arg.format(tmp=tmp_path) for arg in argv]) == 2
    assert capsys.readouterr().err == f"error: {refused}\n"
    assert calls == [] and list(tmp_path.iterdir()) == []


def test_the_shared_help_names_no_target():
    """What compile, submit and schedule say of a target is the target's: with only the throwaway one, their
    help names none of the project's."""
    parser = pipeline_runner.build_parser(targets=(_throwaway_target([]),))
    commands = next(a for a in parser._actions if a.dest == "command")
    assert "schedule" not in commands.choices  # no target offers it
    for name in ("compile", "submit"):
        command = commands.choices[name]
        command.epilog = None  # the examples, which show every target at work
        text = command.format_help() + commands._choices_actions[list(commands.choices).index(name)].help
        for word in ("kubeflow", "kfp", "vertex", "--host", "--local", "cron entry"):
            assert word not in text.lower(), (name, word)
    assert "airflow" in commands.choices["compile"].format_help().lower()


def _definitions(parser: argparse.ArgumentParser) -> dict[str, set[str]]:
    """{option string: the places (file:line) that define it} over every command's parser."""
    import sys

    where: dict[str, set[str]] = {}
    original = argparse._ActionsContainer.add_argument

    def recording(self, *names, **keywords):
        frame = sys._getframe(1)
        while frame.f_code.co_filename == argparse.__file__:  # a group's or a subparser's own call
            frame = frame.f_back
        for name in names:
            where.setdefault(name, set()).add(f"{frame.f_code.co_filename}:{frame.f_lineno}")
        return original(self, *names, **keywords)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(argparse._ActionsContainer, "add_argument", recording)
        parser()
    return where


def test_every_flag_is_defined_in_one_place():
    """A flag several commands take (--root, --package, --data-dir, ...) comes from one definition in cli.flags or
    cli.deploy, whatever command or target adds it."""
    where = _definitions(pipeline_runner.build_parser)
    # two flags that share a name: traffic-sink's address to listen on, and the KFP endpoint submit sends to
    homonyms = {"-h", "--help", "--host"}
    twice = {name: sorted(places) for name, places in where.items() if len(places) > 1 and name not in homonyms}
    assert twice == {}
    assert len(where["--data-dir"]) == 1 and any("cli/flags.py" in place for place in where["--data-dir"])
    # the check sees a second definition
    def twice_defined():
        parser = argparse.ArgumentParser()
        parser.add_argument("--json")
        flags.add_json(argparse.ArgumentParser())
    assert len(_definitions(twice_defined)["--json"]) == 2


def test_a_flag_of_another_target_is_refused_naming_its_target(with_airflow, tmp_path, capsys):
    calls, main = with_airflow
    code = main(["compile", "--target", "vertex", "--image", "i:1", "--root", "gs://b/r", "--dags-folder", "dags",
                 "--pvc", "claim"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "applies only to" in err and "not --target vertex" in err
    code = main(["submit", "--host", "http://kfp", "--package", "p.yaml", "--dag-id", "x"])
    assert code == 2 and "--dag-id applies only to --airflow-home, not --host" in capsys.readouterr().err
    assert calls == []


def test_every_target_offers_what_the_list_asks():
    from cli import deploy

    for target in targets.TARGETS:
        assert isinstance(target, targets.Target), targets.base.missing(target)
        assert isinstance(target.NAME, str) and isinstance(target.HELP, str)
        offered = [command for command in targets.COMMANDS if callable(getattr(target, command, None))]
        assert offered, f"{target.NAME} offers no command"
        assert set(target.SELECTS) <= set(offered) and {"submit", "schedule"} & set(offered) <= set(target.SELECTS)
        assert set(getattr(target, "SETTINGS", {})) <= set(offered)
        assert set(target.ABOUT) == set(offered) and set(target.SHARED) <= set(offered)
        for command, taken in target.SHARED.items():
            assert set(taken) <= set(deploy.SHARED[command]), (target.NAME, command)
        for command, settings in getattr(target, "SETTINGS", {}).items():
            assert dataclasses.is_dataclass(settings) and any("help" in f.metadata
                                                               for f in dataclasses.fields(settings))
        if "compile" in offered:
            kinds, default = target.METADATA
            assert set(kinds) <= {"grpc", "sqlite"} and (default is None) == (not kinds)
        for command in offered:
            if hasattr(target, "add_flags"):
                target.add_flags(command, argparse.ArgumentParser())


def test_a_target_that_lacks_a_member_is_named():
    target = _throwaway_target([])
    del target.check_package
    with pytest.raises(TypeError, match="target 'airflow' lacks check_package"):
        pipeline_runner.build_parser(targets=(*targets.TARGETS, target))


def test_a_store_a_target_does_not_take_is_refused_naming_the_flag(with_airflow, capsys):
    _, main = with_airflow
    base = ["compile", "--image", "i:1", "--root", "gs://b/r"]
    assert main([*base, "--target", "vertex", "--metadata-grpc", "mlmd:8080"]) == 2
    assert capsys.readouterr().err == \
        "error: --metadata-grpc: --target vertex keeps its own ML Metadata store\n"
    assert main([*base, "--target", "airflow", "--metadata-sqlite", "/tmp/m.sqlite"]) == 2
    assert "--metadata-sqlite: --target airflow takes a store of kind grpc" in capsys.readouterr().err


def test_a_remote_target_checks_its_own_settings_before_the_package(capsys):
    code = pipeline_runner.main(["submit", "--vertex-project", "my-project", "--package", "nowhere.yaml"])
    assert code == 2 and capsys.readouterr().err == "error: --vertex-project needs --region\n"


def test_no_shared_module_imports_a_target():
    """Only the list imports a target's module, and a target's engine module imports no other target's: what
    they share is orchestration.engines.packages."""
    from tests.test_layers import _imports_between_modules

    edges = _imports_between_modules()
    modules = {f"cli.targets.{target.NAME}" for target in targets.TARGETS}
    engines = {"orchestration.engines.kubeflow", "orchestration.engines.vertex"}
    into_targets = sorted(f"{a} -> {b}" for a, b in edges if b in modules and a != "cli.targets")
    # the kubeflow target compiles with orchestration.engines.kubeflow; the others may not reach into it
    into_engines = sorted(f"{a} -> {b}: {', '.join(where)}" for (a, b), where in edges.items() if b in engines
                          and a not in (f"cli.targets.{b.split('.')[-1]}", "orchestration.engines.kfp_runs"))
    assert into_targets == [] and into_engines == []


@pytest.mark.parametrize("argv, flag", [
    (["submit", "--host", "", "--package", "p.yaml"], "--host"),
    (["submit", "--host=", "--package", "p.yaml"], "--host"),
    (["schedule", "--vertex-project", "", "--region", "r", "--cron", "0 3 * * *", "--package", "p.yaml"],
     "--vertex-project"),
])
def test_an_empty_value_for_the_flag_that_chooses_the_target_is_refused_in_one_line(argv, flag, capsys):
    assert pipeline_runner.main(argv) == 2
    assert capsys.readouterr().err == f"error: {flag} was given an empty value\n"
