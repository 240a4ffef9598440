"""Flags more than one command takes, each defined here once, and the checks of what they name."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import pathlib
from typing import Callable

from cli.values import count, local_path, local_pathlib, local_source, root_pathlib, root_text, utf8_text  # noqa: F401
from contract.errors import CommandError, shown_name, undecodable_escaped

DEFAULT_OUTPUT_DIR = pathlib.Path("runs/default")


@dataclasses.dataclass(frozen=True)
class Command:
    """One command of the command line: pipeline_runner.py makes its parser and dispatches to `handler`."""

    name: str
    summary: str  # the line in the command list
    description: str
    add_flags: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]
    with_examples: bool = False  # the examples of pipeline_runner.py as the epilog of its --help

    @classmethod
    def of(cls, name: str, add_flags, handler, with_examples: bool = False) -> Command:
        """A command whose help is its handler's docstring: the first line its summary, the rest its
        description."""
        summary, _, description = inspect.cleandoc(handler.__doc__).partition("\n\n")
        return cls(name, summary, " ".join(description.split()), add_flags, handler, with_examples)


class SettingsError(CommandError):
    """A command-line setting that cannot work; the message names the flag. Refused before any work."""


def help_text(text: str) -> str:
    """argparse formats help with %: a literal one ("a 95% interval") must be doubled."""
    return text.replace("%", "%%")


def add_config_flags(parser: argparse.ArgumentParser, sections: tuple[str, ...] | None = None) -> None:
    """A flag for every field of the config `sections` the command reads (default: all of them)."""
    import config as config_lib

    groups: dict[str, argparse._ArgumentGroup] = {}
    for section, field in config_lib.section_fields():
        if sections is not None and section not in sections:
            continue
        if section not in groups:
            groups[section] = parser.add_argument_group(f"{section} settings (config/__init__.py)")
        add_field_flag(groups[section], field, unset=True)


def add_field_flag(group, field, prefix: str = "", unset: bool = False) -> None:
    """The flag --<prefix><field> of one settings field, its help and stated default from the field itself.
    `unset`: the flag's default is None, so that what was given can be laid over other defaults (config's);
    otherwise the field's own default."""
    dest = prefix.replace("-", "_") + field.name
    shown = "" if field.default in (None, "") else f" Default: {field.default}."
    keywords = {"dest": dest, "default": None if unset else field.default,
                "help": help_text(field.metadata["help"] + shown)}
    if isinstance(field.default, bool):
        group.add_argument("--" + dest.replace("_", "-"), action=argparse.BooleanOptionalAction, **keywords)
    else:
        if "choices" in field.metadata:
            keywords["choices"] = field.metadata["choices"]
        else:
            keywords["metavar"] = field.metadata.get("metavar", dest.upper())
        group.add_argument("--" + dest.replace("_", "-"), type=str if field.default is None else type(field.default),
                           **keywords)


def _flag_fields(settings: type, only: tuple[str, ...] | None = None):
    return [field for field in dataclasses.fields(settings)
            if "help" in field.metadata and (only is None or field.name in only)]


def add_settings_flags(group, settings: type, prefix: str = "", only: tuple[str, ...] | None = None) -> None:
    """A flag --<prefix><field> for each field of the dataclass `settings` that has a help text in its metadata
    (of `only`, if given), with the field's default; settings_from() reads them back."""
    for field in _flag_fields(settings, only):
        add_field_flag(group, field, prefix)


def settings(args: argparse.Namespace, settings_type: type):
    """The dataclass `settings_type` made from the flags add_settings_flags() made of it."""
    return settings_type(**settings_from(args, settings_type))


def settings_from(args: argparse.Namespace, settings: type, prefix: str = "",
                  only: tuple[str, ...] | None = None) -> dict:
    """{field: value} of the flags add_settings_flags() made."""
    return {field.name: getattr(args, prefix.replace("-", "_") + field.name)
            for field in _flag_fields(settings, only)}


def config_from_args(args: argparse.Namespace):
    """(the settings of the flags given, notes on settings chosen for the user: the from-scratch schedule)."""
    import config as config_lib

    base = config_lib.demo_config() if getattr(args, "demo", False) else config_lib.PipelineConfig()
    overrides = {field.name: getattr(args, field.name) for _, field in config_lib.section_fields()
                 if getattr(args, field.name, None) is not None}  # a command has the flags of what it reads
    config, filled = config_lib.from_user_settings(overrides, base)
    return config, [_from_scratch_note(filled)] if filled else []


def _from_scratch_note(filled: dict) -> str:
    """The note naming the settings the from-scratch schedule filled in; the run summary says it again with the
    values trained (a search may replace some)."""
    from trainer.hyperparameter_record import ScheduleNote

    return ScheduleNote("random weights (--weights none): training with the from-scratch schedule ", filled,
                        " (the defaults are made for ImageNet weights; set any of these flags to choose)")


def add_tuning_flags(parser: argparse.ArgumentParser) -> None:
    """--tune and the search's budget (config.TuningConfig): `run`, and a package that runs the pipeline."""
    import config as config_lib

    group = parser.add_argument_group("hyperparameter search (config.TuningConfig)")
    group.add_argument("--tune", action=argparse.BooleanOptionalAction,
                       help="Search the training hyperparameters on this data (TFX's Tuner, before the Trainer; "
                            "chosen on the eval split, never the test split) and train with the best. Without it, "
                            "a run trains with the newest search's result recorded for the pipeline, or the "
                            "settings as configured when there is none. Settings given as flags are never searched "
                            "nor replaced.")
    for field in _flag_fields(config_lib.TuningConfig):
        # Unset by default: a budget flag given without --tune is refused even when it names the default value.
        add_field_flag(group, field, prefix="tune-", unset=True)


def tuning_from_args(args: argparse.Namespace, training=None):
    """The config.TuningConfig of --tune's flags (config.ConfigError names a budget that cannot run, before any
    work; SettingsError, a budget given without --tune, or a search of `training` (config.TrainingConfig) with
    nothing to search); None without --tune."""
    import config as config_lib

    given = {name: value for name, value in settings_from(args, config_lib.TuningConfig, prefix="tune-").items()
             if value is not None}
    if not args.tune and given:
        flags = [f"--tune-{name.replace('_', '-')}" for name in given]
        verb = "applies" if len(flags) == 1 else "apply"
        raise SettingsError(f"{', '.join(flags)} {verb} only with --tune (no search runs without it)")
    if not args.tune:
        return None
    tuning = config_lib.TuningConfig(**given)
    if training is not None:
        from trainer import hyperparameters

        given_flags = [f"--{field.replace('_', '-')}" for field in hyperparameters.given_fields(fixed_settings(args))]
        if not hyperparameters.search_space(training, fixed_settings(args), tuning.epoch_fraction).space:
            raise SettingsError(f"--tune has nothing to search: the flags {', '.join(given_flags) or '(none)'} set "
                                "what it would search (a phase length every trial runs alike is not searched); "
                                "drop --tune or one of those flags")
    return tuning


def fixed_settings(args: argparse.Namespace) -> tuple[str, ...]:
    """The training settings given as flags: no search changes them."""
    import config as config_lib

    return tuple(field.name for section, field in config_lib.section_fields()
                 if section == "training" and getattr(args, field.name, None) is not None)


def add_output_dir(parser, help: str = "A local run's output directory.") -> None:
    parser.add_argument("--output-dir", type=root_pathlib, default=DEFAULT_OUTPUT_DIR,
                        help=f"{help} Default: {DEFAULT_OUTPUT_DIR}.")


STORE_FLAGS = {"grpc": "--metadata-grpc", "sqlite": "--metadata-sqlite"}


def add_store_flags(parser, grpc_help: str, sqlite_help: str) -> None:
    """--metadata-grpc or --metadata-sqlite: the ML Metadata store of a deployment, one or the other."""
    store = parser.add_mutually_exclusive_group()
    store.add_argument(STORE_FLAGS["grpc"], metavar="HOST:PORT", help=grpc_help)
    store.add_argument(STORE_FLAGS["sqlite"], metavar="PATH", help=sqlite_help)


def given_store(args: argparse.Namespace) -> tuple[str, str] | None:
    """(kind, connection URI) of the --metadata-* flag given; None when neither was."""
    from contract import metadata

    if args.metadata_grpc:
        return "grpc", metadata.grpc_store(args.metadata_grpc)
    if args.metadata_sqlite:
        return "sqlite", metadata.sqlite_store(args.metadata_sqlite)
    return None


SERVING_TARGET = ("name", "namespace")  # the InferenceService's fields a rollback needs


def add_serving_target_flags(group, rollout_help: str) -> None:
    """The InferenceService that serves the root's versions, and whether to tell it about a new one."""
    from orchestration.serving import kserve

    add_settings_flags(group, kserve.Serving, prefix="serving-", only=SERVING_TARGET)
    group.add_argument("--no-serving-rollout", dest="serving_rollout", action="store_false",
                       help=f"On a gs:// root, by default {rollout_help}, through the Kubernetes API. Give this "
                            "when the versions are served some other way.")


GLOB_CHARACTERS = "*?[]$"


def check_source_apart(output_dir: pathlib.Path, flag: str, location: str | os.PathLike) -> None:
    """The output directory is not the source folder or inside it: ingest would read the pipeline's own files (its
    spans, reports, models) as data, and the source would never be the same twice (a new span every run)."""
    source, output = os.path.realpath(location), os.path.realpath(output_dir)
    if _inside(output_dir, location):
        raise SettingsError(f"--output-dir {shown_name(str(output_dir))} is inside {flag} "
                            f"{shown_name(str(location))}{' (it is that folder)' if output == source else ''}: "
                            "ingest would read the pipeline's own files there as data; choose an output folder "
                            "outside it")


def check_not_a_queue(flag: str, location: str | os.PathLike, output_dir: pathlib.Path) -> None:
    """A labeling queue is ingested into the root as its own span (`ingest`); as a run's source it would be recorded
    as the root's source, and every later run would train on the queue's images alone."""
    from ingest import sources

    try:
        is_queue = sources.queue_record(location) is not None
    except sources.SourceError:  # a record that cannot be read: ingest names it
        is_queue = True
    if is_queue:
        shown = shown_name(str(location))
        raise SettingsError(f"{flag} {shown} is a labeling queue: ingest it into the root with `ingest --data-dir "
                            f"{shown} --output-dir {shown_name(str(output_dir))}`, then run with {flag} naming "
                            "your photo folder (each span after it carries the queue's sorted images)")


def _inside(output_dir: str | os.PathLike, location: str | os.PathLike) -> bool:
    """Whether `output_dir` is the folder `location` or below it: by their paths as given and as real paths, and
    by the identity of each folder on the output's way (a link or a bind mount may lead into the data folder by
    another name)."""
    from ingest.listing import below

    given, real = os.path.abspath(output_dir), os.path.realpath(output_dir)
    if below(given, os.path.abspath(location)) or below(real, os.path.realpath(location)):
        return True
    try:
        data = os.stat(location)
    except OSError:  # no data folder yet: the command says so itself
        return False
    for folder in {*pathlib.Path(given).parents, pathlib.Path(given), *pathlib.Path(real).parents, pathlib.Path(real)}:
        try:
            found = os.stat(folder)
        except OSError:
            continue
        if (found.st_dev, found.st_ino) == (data.st_dev, data.st_ino):
            return True
    return False


def check_output_dir(output_dir: pathlib.Path) -> None:
    """The output directory is a folder, or can be made (its nearest existing ancestor is a writable folder), and
    is writable: checked before any work, and nothing is created (a refused command leaves no folder behind)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise SettingsError(f"--output-dir {output_dir} is a file, not a directory")
    try:
        str(output_dir.absolute()).encode("utf-8")
    except UnicodeEncodeError:  # TensorFlow's file functions, which every command uses on the root, take UTF-8
        raise SettingsError(f"--output-dir {undecodable_escaped(str(output_dir))}: its path is not valid UTF-8, "
                            "which TensorFlow's file functions cannot take: choose a folder whose name is") from None
    special = sorted({char for char in str(output_dir.absolute()) if char in GLOB_CHARACTERS})
    if special:
        # TFX's ImportExampleGen and Beam's file writers match the root's paths as glob patterns: such a run
        # would fail after its ingest (a ValueError, a BeamIOError)
        raise SettingsError(f"--output-dir {output_dir} holds {' '.join(special)}, which TFX and Beam read as "
                            "glob patterns in the pipeline's paths: choose a folder without them")
    existing = next(path for path in (output_dir.absolute(), *output_dir.absolute().parents) if path.exists())
    if not existing.is_dir():
        raise SettingsError(f"--output-dir {output_dir} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SettingsError(f"--output-dir {output_dir} is not writable" if existing == output_dir.absolute() else
                            f"--output-dir {output_dir} cannot be created: {existing} is not writable")


def source_kinds() -> tuple[str, ...]:
    """What a source can be: the kinds ingest.sources reads."""
    from ingest import sources

    return tuple(sources.LISTERS)


def package(args: argparse.Namespace) -> str:
    """The --package that submit and schedule send: it must exist, and be a package of the chosen target (its
    check_package, with the run parameters the flags set)."""
    if not args.package:
        raise SettingsError(f"--{args.target_flag} needs --package (compile one with `compile`)")
    if not os.path.isfile(args.package):
        raise SettingsError(f"no package at {args.package}: write one with `compile`")
    args.chosen_target.check_package(args.package, run_arguments(args))  # a file that is not one, in one line
    return args.package


def run_arguments(args: argparse.Namespace) -> dict:
    """The package's run parameters the flags set (the others keep the values given to compile)."""
    arguments = {"source": str(args.data_dir)} if args.data_dir is not None else {}
    if args.source_kind:
        arguments["source_kind"] = args.source_kind
    return arguments


# The flags several commands take, each defined here once; each command says what the flag means for it.

def add_root(parser, help: str, required: bool = False) -> None:
    """--root: a pipeline's storage root (a local path, a path on a volume, or gs://)."""
    parser.add_argument("--root", required=required, help=help, type=root_text)


def add_package(parser, help: str, default: str | None = None, output: bool = False) -> None:
    """--package: a compiled pipeline package (.yaml); `output`: one this command writes, so a local path."""
    parser.add_argument("--package", default=default, help=help, **({"type": local_path} if output else {}))


def add_pipeline_root(parser, help: str) -> None:
    """--pipeline-root: where the engine keeps its own artifacts."""
    parser.add_argument("--pipeline-root", help=help)


def add_data_dir(parser, help: str, **keywords) -> None:
    """--data-dir: the image folder (or, for a package, the source) a run ingests."""
    parser.add_argument("--data-dir", help=help, **keywords)


def add_source_kind(parser, help: str, default: str | None = None) -> None:
    """--source-kind: what --data-dir holds, one of the kinds ingest.sources reads."""
    parser.add_argument("--source-kind", choices=source_kinds(), default=default, help=help)


def add_json(parser, help: str = "Print JSON instead of a table.") -> None:
    """--json: the command's result as JSON."""
    parser.add_argument("--json", action="store_true", help=help)
