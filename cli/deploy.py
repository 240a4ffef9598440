"""`compile`, `submit` and `schedule`: the pipeline where a target (cli.targets) runs it.

The flags every target shares are defined here, each target adds its own, and
the command goes to the target the flags chose: `compile --target NAME`, or the
selecting flag of `submit` and `schedule` (--host, --vertex-project, --local).
A flag of a target other than the chosen one is refused, naming its target.
"""

from __future__ import annotations

import argparse

from cli import flags, targets
from cli.flags import SettingsError

DESCRIPTIONS = {
    "compile": ("Compile the pipeline into a Kubeflow Pipelines v2 package (YAML).",
                "Builds the pipeline with the same create_pipeline as `run` and compiles it, offline. --target "
                "kubeflow (default): a package for open-source Kubeflow Pipelines 2.x, authored with the kfp SDK: an "
                "ingest task, one task per TFX node (TFX's launcher on a shared ML Metadata store), a report task. "
                "--target vertex: TFX's KubeflowV2DagRunner package for Vertex AI Pipelines."),
    "submit": ("Start one run of a compiled package: on Kubeflow Pipelines, Vertex AI, or --local.",
               "--host: one run on a Kubeflow Pipelines cluster. --vertex-project/--region: one Vertex AI Pipelines "
               "job. --local: run the package on this machine with the kfp SDK's local runner (a rehearsal before a "
               "cluster; compile it with --metadata-sqlite and a local --root)."),
    "schedule": ("Retrain on a schedule: a KFP recurring run, a Vertex AI schedule, or a local cron entry.",
                 "With --host: a recurring run of a compiled package on Kubeflow Pipelines (6-field cron, seconds "
                 "first, at most one run at a time): the pipeline's, or the drift check's that `compile "
                 "--monitor-package` writes (give it its own --job-name). With --vertex-project: a Vertex AI "
                 "Pipelines schedule (5-field cron). With --local: a crontab line that runs `pipeline_runner.py "
                 "run`; overlapping local runs exit at once on the run lock."),
}


def commands(offered=None) -> tuple[flags.Command, ...]:
    """compile, submit and schedule, each with the flags of the targets that offer it (default: every target
    of cli.targets)."""
    offered = offered or targets.TARGETS
    return tuple(flags.Command(name, summary, description, _flags_of(name, targets.offering(name, offered)),
                               _dispatcher(name, targets.offering(name, offered)), with_examples=name == "compile")
                 for name, (summary, description) in DESCRIPTIONS.items())


def _flags_of(command: str, chosen_by: list):
    def add_flags(parser: argparse.ArgumentParser) -> None:
        if command == "compile":
            names = [target.NAME for target in chosen_by]
            parser.add_argument("--target", choices=names, default=names[0], help=" ".join(
                f"{target.NAME}{' (default)' if target is chosen_by[0] else ''}: {target.HELP}."
                for target in chosen_by))
            _add_compile_flags(parser)
            _add_store_flags(parser, chosen_by)
        else:
            selector = parser.add_mutually_exclusive_group(required=True)
            for target in chosen_by:
                flag, keywords = target.SELECTS[command]
                selector.add_argument(flag, **keywords)
            _add_run_flags(command, parser)
        owned = {}  # {dest: (target name, flag, default)} of the flags a target added
        for target in chosen_by:
            before = {action.dest for action in parser._actions}
            if command in getattr(target, "SETTINGS", {}):
                flags.add_settings_flags(parser, target.SETTINGS[command])
            if hasattr(target, "add_flags"):
                target.add_flags(command, parser)
            owned |= {action.dest: (target.NAME, action.option_strings[0], action.default)
                      for action in parser._actions if action.dest not in before}
        parser.set_defaults(owned_flags=owned)
    return add_flags


def _add_store_flags(parser: argparse.ArgumentParser, chosen_by: list) -> None:
    """--metadata-grpc or --metadata-sqlite: the ML Metadata store the package's tasks share, for the targets
    whose METADATA takes one (each says which kinds, and its store when none is given)."""
    takers = {kind: [t for t in chosen_by if kind in t.METADATA[0]] for kind in flags.STORE_FLAGS}
    defaults = "; ".join(f"{t.METADATA[1].split('://')[-1]} ({t.NAME})" for t in chosen_by if t.METADATA[1])
    flags.add_store_flags(
        parser, f"The ML Metadata gRPC service all the run's tasks share ({_names(takers['grpc'])}). Default: "
                f"{defaults}.",
        f"A SQLite ML Metadata file instead, for a local rehearsal (submit --local; {_names(takers['sqlite'])}).")


def _names(targets_: list) -> str:
    return ", ".join(target.NAME for target in targets_)


def _metadata_store(args: argparse.Namespace, chosen) -> str | None:
    """The store the chosen target's package is compiled with: the one given, else the target's own."""
    kinds, default = chosen.METADATA
    given = flags.given_store(args)
    if given is None:
        return default
    kind, store = given
    if kind not in kinds:
        raise SettingsError(f"{flags.STORE_FLAGS[kind]}: --target {chosen.NAME} " + (
            f"takes a store of kind {', '.join(kinds)}" if kinds else "keeps its own ML Metadata store"))
    return store


def _add_compile_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, help="Container image with this project installed (see Dockerfile).")
    parser.add_argument("--root", required=True,
                        help="Storage root of the deployed pipeline: a gs:// URI, or an absolute path on the PVC "
                             "(--pvc) or, for a local rehearsal, on this machine. examples/, pipeline_root/, "
                             "serving_model/ and runs/ go under it.")
    parser.add_argument("--pipeline-root",
                        help="Where KFP keeps its own artifacts (run page metrics and report). Default: "
                             "<root>/kfp for a gs:// root, else the cluster's default.")
    parser.add_argument("--beam-arg", action="append", default=None, dest="beam_args", metavar="ARG",
                        help="A Beam pipeline argument (repeatable). Default: DirectRunner, multi-process, one "
                             "worker per core. For Dataflow: --beam-arg=--runner=DataflowRunner "
                             "--beam-arg=--project=P --beam-arg=--region=R --beam-arg=--temp_location=gs://B/tmp")
    parser.add_argument("--demo-settings", dest="demo", action="store_true",
                        help="Start from the demo's settings (random weights; see config.demo_config), "
                             "as `run --demo` does.")
    parser.add_argument("--package", default="cats_vs_dogs_pipeline.yaml", type=flags.local_path,
                        help="Output file (.yaml). Default: cats_vs_dogs_pipeline.yaml.")
    flags.add_tuning_flags(parser)  # every run of the package searches; without it, runs reuse the newest search
    flags.add_config_flags(parser)


def _add_run_flags(command: str, parser: argparse.ArgumentParser) -> None:
    """What every target's submit or schedule takes: the package, the run's name and its parameters."""
    if command == "submit":
        parser.add_argument("--package", required=True, help="A package written by `compile`.")
        parser.add_argument("--run-name", default="cats-vs-dogs", help="Name of the run. Default: cats-vs-dogs.")
    else:
        parser.add_argument("--cron", required=True,
                            help="With --host: 6 fields, e.g. '0 0 3 * * *'. With --local or --vertex-project: "
                                 "5 fields, e.g. '0 3 * * *'.")
        parser.add_argument("--package", help="With --host or --vertex-project: a package written by `compile`.")
        parser.add_argument("--job-name", default="cats-vs-dogs-retraining", help="Recurring run name.")
    parser.add_argument("--data-dir",
                        help="The source each run ingests: with --local (schedule) the image folder for cron; "
                             "otherwise it sets the package's source parameter (default: the one given to "
                             "compile).")
    parser.add_argument("--source-kind", choices=flags.source_kinds(),
                        help="Sets the package's source_kind parameter: what --data-dir holds (default: the kind "
                             "given to compile).")
    parser.add_argument("--pipeline-root",
                        help="KFP's pipeline root for this run. Default: the one the package was compiled with.")


def _dispatcher(command: str, offered: list):
    """The handler of `command`: the chosen target's, after refusing flags that belong to another target."""
    def handle(args: argparse.Namespace) -> int:
        chosen = next(target for target in offered if _chose(command, target, args))
        by_name = {target.NAME: target for target in offered}
        given: dict[str, list[str]] = {}
        for dest, (owner, flag, default) in args.owned_flags.items():
            if owner != chosen.NAME and getattr(args, dest) != default:
                given.setdefault(owner, []).append(flag)
        for owner, flags_given in given.items():
            verb = "applies" if len(flags_given) == 1 else "apply"
            raise SettingsError(f"{', '.join(flags_given)} {verb} only to {_choice(command, by_name[owner])}, not "
                                f"{_choice(command, chosen)}")
        if command == "compile":
            config, notes = flags.config_from_args(args)
            for note in notes:
                print(note)
            args.metadata_store = _metadata_store(args, chosen)
            return chosen.compile(args, config)
        args.target_flag = chosen.SELECTS[command][0].lstrip("-")
        return getattr(chosen, command)(args)
    return handle


def _chose(command: str, target, args: argparse.Namespace) -> bool:
    if command == "compile":
        return args.target == target.NAME
    flag, _ = target.SELECTS[command]
    return bool(getattr(args, flag.lstrip("-").replace("-", "_")))


def _choice(command: str, target) -> str:
    return f"--target {target.NAME}" if command == "compile" else target.SELECTS[command][0]
