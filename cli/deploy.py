"""`compile`, `submit` and `schedule`: the pipeline where a target (cli.targets) runs it.

The flags every target's command may read are defined here (SHARED), each
target says which of them it reads and needs (its SHARED) and adds its own,
and the command goes to the target the flags chose: `compile --target NAME`, or
the selecting flag of `submit` and `schedule`. A flag of another target, and a
shared flag the chosen target does not read, are refused in one line; so is a
flag the chosen target needs and was not given. Nothing here names a target:
the help and the description are the targets' own words.
"""

from __future__ import annotations

import argparse
import functools

from cli import flags, targets
from cli.flags import SettingsError

SUMMARIES = {
    "compile": ("Compile the pipeline into a package for where it runs (--target).",
                "Builds the pipeline with the same create_pipeline as `run` and compiles it, offline."),
    "submit": ("Start one run of a compiled package", "One run of a package written by `compile`."),
    "schedule": ("Retrain on a schedule", "Runs of the pipeline at the times a cron expression gives."),
}


def _image(parser, help: str) -> None:
    parser.add_argument("--image", help=help)


def _beam_arg(parser, help: str) -> None:
    parser.add_argument("--beam-arg", action="append", default=None, dest="beam_args", metavar="ARG", help=help)


def _run_name(parser, help: str) -> None:
    parser.add_argument("--run-name", default="cats-vs-dogs", help=help)


def _cron(parser, help: str) -> None:
    parser.add_argument("--cron", help=help)


def _job_name(parser, help: str) -> None:
    parser.add_argument("--job-name", default="cats-vs-dogs-retraining", help=help)


_PIPELINE_ROOT = "The engine's own pipeline root, where it keeps its artifacts."
_SOURCE = {
    "--data-dir": (flags.add_data_dir, "The source each run ingests."),
    "--source-kind": (flags.add_source_kind, "What --data-dir holds."),
    "--pipeline-root": (flags.add_pipeline_root, f"{_PIPELINE_ROOT} Default: the one the package was compiled with."),
}
# {command: {flag: (its definition, its help)}}: the flags a target's command may read; each target's SHARED
# says which it reads (cli.targets.base.Takes), and its notes follow the help here.
SHARED = {
    "compile": {
        "--image": (_image, "Container image with this project installed (see Dockerfile)."),
        "--root": (flags.add_root, "Storage root of the deployed pipeline: examples/, pipeline_root/, serving_model/ "
                                   "and runs/ go under it."),
        "--pipeline-root": (flags.add_pipeline_root, _PIPELINE_ROOT),
        "--beam-arg": (_beam_arg, "A Beam pipeline argument (repeatable). Default: DirectRunner, multi-process, one "
                                  "worker per core. For Dataflow: --beam-arg=--runner=DataflowRunner "
                                  "--beam-arg=--project=P --beam-arg=--region=R --beam-arg=--temp_location=gs://B/tmp"),
        "--package": (functools.partial(flags.add_package, default="cats_vs_dogs_pipeline.yaml", output=True),
                      "Output file (.yaml). Default: cats_vs_dogs_pipeline.yaml in the current folder. For a "
                      "cluster's root, the KServe manifest is written beside it (<name>.inferenceservice.yaml)."),
    },
    "submit": {
        "--package": (flags.add_package, "A package written by `compile`."),
        "--run-name": (_run_name, "Name of the run. Default: cats-vs-dogs."),
        **_SOURCE,
    },
    "schedule": {
        "--cron": (_cron, "When a run starts, as a cron expression."),
        "--package": (flags.add_package, "A package written by `compile`."),
        "--job-name": (_job_name, "Recurring run name. Default: cats-vs-dogs-retraining."),
        **_SOURCE,
    },
}


def commands(offered=None) -> tuple[flags.Command, ...]:
    """compile, submit and schedule, each with the flags of the targets that offer it (default: every target
    of cli.targets); a command no target offers is left out."""
    offered = offered or targets.TARGETS
    return tuple(_command(name, chosen) for name in SUMMARIES if (chosen := targets.offering(name, offered)))


def _command(name: str, chosen_by: list) -> flags.Command:
    summary, description = SUMMARIES[name]
    if name == "compile":
        about = [f"--target {t.NAME}{' (default)' if t is chosen_by[0] else ''}: {t.ABOUT[name]}" for t in chosen_by]
    else:
        summary += f": {', '.join(f'{t.HELP} ({t.SELECTS[name][0]})' for t in chosen_by)}."
        about = [f"{t.SELECTS[name][0]}: {t.ABOUT[name]}" for t in chosen_by]
    return flags.Command(name, summary, " ".join([description, *about]), _flags_of(name, chosen_by),
                         _dispatcher(name, chosen_by), with_examples=name == "compile")


def _flags_of(command: str, chosen_by: list):
    def add_flags(parser: argparse.ArgumentParser) -> None:
        if command == "compile":
            names = [target.NAME for target in chosen_by]
            parser.add_argument("--target", choices=names, default=names[0], help=" ".join(
                f"{target.NAME}{' (default)' if target is chosen_by[0] else ''}: {target.HELP}."
                for target in chosen_by))
        else:
            selector = parser.add_mutually_exclusive_group(required=True)
            for target in chosen_by:
                flag, keywords = target.SELECTS[command]
                selector.add_argument(flag, **keywords)
        shared = _add_shared_flags(command, parser, chosen_by)
        if command == "compile":
            parser.add_argument("--demo-settings", dest="demo", action="store_true",
                                help="Start from the demo's settings (random weights; see config.demo_config), "
                                     "as `run --demo` does.")
            flags.add_tuning_flags(parser)  # every run of the package searches; without it, runs reuse the newest
            flags.add_config_flags(parser)
            _add_store_flags(parser, chosen_by)
        owned = {}  # {dest: (target name, flag, default)} of the flags a target added
        for target in chosen_by:
            before = {action.dest for action in parser._actions}
            if command in target.SETTINGS:
                flags.add_settings_flags(parser, target.SETTINGS[command])
            target.add_flags(command, parser)
            owned |= {action.dest: (target.NAME, action.option_strings[0], action.default)
                      for action in parser._actions if action.dest not in before}
        parser.set_defaults(owned_flags=owned, shared_flags=shared)
    return add_flags


def _add_shared_flags(command: str, parser: argparse.ArgumentParser, chosen_by: list) -> dict:
    """The command's SHARED flags, each with its help and the notes of the targets that read it; returns
    {flag: (dest, default)}."""
    shared = {}
    for flag, (define, text) in SHARED[command].items():
        takers = [target for target in chosen_by if flag in target.SHARED.get(command, {})]
        notes = [f"{_choice(command, t)}: {t.SHARED[command][flag].note}." for t in takers
                 if t.SHARED[command][flag].note]
        needers = [_choice(command, t) for t in takers if t.SHARED[command][flag].needs]
        if len(takers) < len(chosen_by):
            notes.append(f"Only with {', '.join(_choice(command, t) for t in takers)}.")
        if needers:
            notes.append("Needed." if len(needers) == len(chosen_by) else f"Needed with {', '.join(needers)}.")
        before = len(parser._actions)
        define(parser, " ".join([text, *notes]))
        action = parser._actions[before]
        shared[flag] = (action.dest, action.default)
    return shared


def _add_store_flags(parser: argparse.ArgumentParser, chosen_by: list) -> None:
    """--metadata-grpc or --metadata-sqlite: the ML Metadata store the package's tasks share, for the targets
    whose METADATA takes one (each says which kinds, and its store when none is given)."""
    takers = {kind: [t for t in chosen_by if kind in t.METADATA[0]] for kind in flags.STORE_FLAGS}
    defaults = "; ".join(f"{t.METADATA[1].split('://')[-1]} ({t.NAME})" for t in chosen_by if t.METADATA[1])
    flags.add_store_flags(
        parser, f"The ML Metadata gRPC service all the run's tasks share ({_names(takers['grpc'])}). Default: "
                f"{defaults}.",
        f"A SQLite ML Metadata file instead, for a rehearsal on this machine ({_names(takers['sqlite'])}).")


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


def _dispatcher(command: str, offered: list):
    """The handler of `command`: the chosen target's, after refusing flags it does not read."""
    def handle(args: argparse.Namespace) -> int:
        chosen = next((target for target in offered if _chose(command, target, args)), None)
        if chosen is None:  # the one selecting flag argparse requires was given an empty value (`--host ""`)
            flag = next(target.SELECTS[command][0] for target in offered if command != "compile"
                        and getattr(args, target.SELECTS[command][0].lstrip("-").replace("-", "_")) == "")
            raise SettingsError(f"{flag} was given an empty value")
        _refuse_flags_not_for(command, chosen, offered, args)
        args.chosen_target = chosen
        if command == "compile":
            config, notes = flags.config_from_args(args)
            for note in notes:
                print(note)
            args.metadata_store = _metadata_store(args, chosen)
            return chosen.compile(args, config)
        args.target_flag = chosen.SELECTS[command][0].lstrip("-")
        return getattr(chosen, command)(args)
    return handle


def _refuse_flags_not_for(command: str, chosen, offered: list, args: argparse.Namespace) -> None:
    """SettingsError, in one line, for a flag of another target, a shared flag `chosen` does not read, or one it
    needs and was not given."""
    by_name = {target.NAME: target for target in offered}
    given: dict[str, list[str]] = {}
    for dest, (owner, flag, default) in args.owned_flags.items():
        if owner != chosen.NAME and getattr(args, dest) != default:
            given.setdefault(owner, []).append(flag)
    for owner, flags_given in given.items():
        verb = "applies" if len(flags_given) == 1 else "apply"
        raise SettingsError(f"{', '.join(flags_given)} {verb} only to {_choice(command, by_name[owner])}, not "
                            f"{_choice(command, chosen)}")
    takes = chosen.SHARED.get(command, {})
    unread = [flag for flag, (dest, default) in args.shared_flags.items()
              if flag not in takes and getattr(args, dest) != default]
    if unread:
        raise SettingsError(f"{', '.join(unread)}: {_choice(command, chosen)} does not take "
                            f"{'it' if len(unread) == 1 else 'them'}")
    missing = [f"{flag} ({way.needs})" for flag, way in takes.items()
               if way.needs and getattr(args, args.shared_flags[flag][0]) in (None, "")]
    if missing:
        raise SettingsError(f"{_choice(command, chosen)} needs {', '.join(missing)}")


def _chose(command: str, target, args: argparse.Namespace) -> bool:
    if command == "compile":
        return args.target == target.NAME
    flag, _ = target.SELECTS[command]
    return bool(getattr(args, flag.lstrip("-").replace("-", "_")))


def _choice(command: str, target) -> str:
    return f"--target {target.NAME}" if command == "compile" else target.SELECTS[command][0]
