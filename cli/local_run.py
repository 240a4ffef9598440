"""`run` and `ingest`: the pipeline on this machine (orchestration.engines.local)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

from cli import flags
from cli.flags import SettingsError
from contract.errors import CommandError

# The local flag of each source kind of ingest.sources.LISTERS (a test checks that every kind has one).
SOURCE_FLAGS = {
    "folder": ("--data-dir", "Image folder: class folders (<dir>/cat/*.jpg, <dir>/dog/*.jpg; also PetImages/Cat "
                             "and cats_and_dogs_filtered/train/cats, whose train/validation split is kept) or "
                             "Kaggle names (<dir>/train/cat.1.jpg)."),
    "parquet": ("--parquet", "A Parquet file or folder in Hugging Face Bingsu/Cat_and_Dog form "
                             "(image.bytes, labels 0 = cat / 1 = dog)."),
    "tfds": ("--tfds-data-dir", "A TFDS data_dir holding a prepared cats_vs_dogs (nothing is downloaded)."),
}


def _run_flags(run: argparse.ArgumentParser) -> None:
    _add_source_flags(run, required=False)
    run.add_argument("--allow-anomalies", action="store_true",
                     help="Train even when the data has anomalies (schema violations, class imbalance, image "
                          "size drift). They are still reported. Use consciously: it applies to this run only and "
                          "is never recorded for the root's next runs.")
    run.add_argument("--verbose", action="store_true", help="Show TFX and Beam INFO logs.")
    flags.add_tuning_flags(run)
    flags.add_config_flags(run)


def _ingest_flags(ingest: argparse.ArgumentParser) -> None:
    _add_source_flags(ingest)
    flags.add_config_flags(ingest, sections=("data",))  # ingest trains nothing


def _add_source_flags(parser: argparse.ArgumentParser, required: bool = True) -> None:
    from ingest import synthetic

    source = parser.add_mutually_exclusive_group(required=required)
    for kind, (flag, text) in SOURCE_FLAGS.items():
        keywords = {"dest": f"source_{kind}", "type": flags.local_source,
                    "metavar": flag[2:].replace("-", "_").upper()}
        if flag == "--data-dir":  # also submit's and schedule's: defined once, in cli.flags
            flags.add_data_dir(source, text, **keywords)
        else:
            source.add_argument(flag, help=text, **keywords)
    source.add_argument("--demo", action="store_true",
                        help="Generate the built-in demo images into <output-dir>/demo_images and use the demo "
                             "settings (random weights; see config.demo_config).")
    parser.add_argument("--demo-images", type=flags.count(1), default=synthetic.DEMO_IMAGES_PER_CLASS,
                        help=f"With --demo: images per class. Default: {synthetic.DEMO_IMAGES_PER_CLASS}. About a "
                             "tenth go to the test split, which the data gate wants at least --min-eval-examples "
                             "(30) of: below 250 a class, a run may stop there.")
    flags.add_output_dir(parser, "Everything of the run goes here: examples/, pipeline_root/, metadata.sqlite, "
                                 "serving_model/<version>/, run_summary.json.")
    parser.add_argument("--beam-workers", type=flags.count(0),
                        help="Beam DirectRunner worker processes for ingest and components. 0 (default): in "
                             "process for small data (see config/beam_policy.py), else one per core; 1: in "
                             "process; N: N processes.")


def say(line: str) -> None:
    """What the run says, as it happens: flushed, so it keeps its place among the libraries' own output."""
    print(line, flush=True)


def _source(args: argparse.Namespace):
    """The source flags as an orchestration.engines.local.Source; None when none was given."""
    from orchestration.engines import local

    if args.demo:
        return local.Source(local.DEMO, demo_images=args.demo_images)
    for kind in SOURCE_FLAGS:
        location = getattr(args, f"source_{kind}")
        if location:
            return local.Source(kind, location)
    return None


def _check_source_apart(args: argparse.Namespace) -> None:
    for kind, (flag, _) in SOURCE_FLAGS.items():
        if getattr(args, f"source_{kind}"):
            flags.check_source_apart(args.output_dir, flag, getattr(args, f"source_{kind}"))


def check_local_files(config) -> None:
    """Files the settings name must exist on this machine before a local run starts."""
    import config as config_lib

    weights = config.training.weights
    if weights in (config_lib.WEIGHTS_IMAGENET, config_lib.WEIGHTS_NONE):
        return
    if not os.path.isfile(weights):
        raise SettingsError(f"--weights {weights}: no such file (expected 'imagenet', 'none' or a Keras weights "
                            "file such as mobilenet_v2_..._no_top.h5)")
    from trainer import weights_files

    try:  # a file of a shorter base than --base-blocks asks for would stop the run at its Trainer
        weights_files.shorter_base_file(weights, config.training.base_blocks)
    except weights_files.WeightsFileError as error:
        raise SettingsError(f"--weights: {error}") from None


def command_run(args: argparse.Namespace) -> int:
    """Ingest images and run the pipeline end to end with LocalDagRunner.

    Ingest a source as a new span (unchanged data reuses the last span), then run the TFX pipeline on
    LocalDagRunner with SQLite metadata and Beam's DirectRunner. Without a source, run on the spans already in
    <output-dir>/examples (written by `ingest` or another job). The settings given as flags are recorded with the
    root (<output-dir>/run_settings.json): a later run there trains with them unless given other flags.
    """
    from orchestration.engines import local

    flags.check_output_dir(args.output_dir)
    _check_source_apart(args)
    if args.source_folder:  # a run's source is recorded as the root's: a queue is ingested, never that
        flags.check_not_a_queue("--data-dir", args.source_folder, args.output_dir)
    record, record_notes, laid = _lay_recorded_settings(args)
    try:
        config, notes = flags.config_from_args(args)
        tuning = flags.tuning_from_args(args, config.training)
        check_local_files(config)
    except CommandError as error:
        if laid:  # a recorded setting may be what no longer holds: say where it came from
            error.args = (f"{error} ({laid})",)
        raise
    return local.run(config, args.output_dir, _source(args), beam_workers=args.beam_workers or 0,
                     allow_anomalies=args.allow_anomalies, notes=notes, tuning=tuning,
                     fixed_settings=flags.fixed_settings(args), record=(record, record_notes), say=say)


def recorded_names() -> list[str]:
    """What a root's record keeps of a run's flags, by their settings' names: every config field, the search's
    flags and the Beam workers. Not --allow-anomalies (a decision about one span's data: a scheduled run stops on
    bad data), --verbose or the output directory."""
    import config as config_lib

    return [field.name for _, field in config_lib.section_fields()] + ["tune"] + \
        [f"tune_{field.name}" for field in dataclasses.fields(config_lib.TuningConfig)
         if "help" in field.metadata] + ["beam_workers"]


def _given_settings(args: argparse.Namespace) -> dict:
    """{name: value} of the recorded flags given on this command line (a weights file as an absolute path)."""
    import config as config_lib

    given = {name: getattr(args, name) for name in recorded_names() if getattr(args, name, None) is not None}
    weights = given.get("weights")
    if weights not in (None, config_lib.WEIGHTS_IMAGENET, config_lib.WEIGHTS_NONE):
        given["weights"] = os.path.abspath(os.path.expanduser(weights))
    return given


def _demo_settings() -> dict:
    """The demo's settings where they differ from the defaults, but for the from-scratch schedule that random
    weights take whenever those flags are not given: what --demo lays under the root's record."""
    import config as config_lib

    demo = dataclasses.asdict(config_lib.demo_config())
    defaults = dataclasses.asdict(config_lib.PipelineConfig())
    return {field.name: demo[section][field.name] for section, field in config_lib.section_fields()
            if demo[section][field.name] != defaults[section][field.name]
            and field.name not in config_lib.FROM_SCRATCH_SCHEDULE}


def checked_record(settings: dict, where, given: dict = ()) -> dict:
    """The recorded settings this version knows, each checked as its flag checks what it is given (a switch takes
    true or false, a number its type and range, a weights file an absolute path) and converted as it converts it;
    SettingsError names the first that is not (unless `given` replaces it)."""
    import config as config_lib

    parser = argparse.ArgumentParser(add_help=False)
    _run_flags(parser)
    actions = {action.dest: action for action in parser._actions}
    checked = {}
    for name in [name for name in recorded_names() if name in settings and name not in given]:
        value, action = settings[name], actions[name]
        try:
            checked[name] = _as_flag_takes(value, action)
            if name == "weights" and checked[name] not in (config_lib.WEIGHTS_IMAGENET, config_lib.WEIGHTS_NONE) \
                    and not os.path.isabs(checked[name]):
                raise ValueError("a weights file must be named by its absolute path")
        except (ValueError, TypeError, argparse.ArgumentTypeError) as error:
            option = "--" + name.replace("_", "-")
            raise SettingsError(f"{where} records {option} as {json.dumps(value)[:80]}, which {option} does not take "
                                f"({error}): give {option} with the value you want, and the record takes it") from None
    return checked


def _as_flag_takes(value, action: argparse.Action):
    if isinstance(action, argparse.BooleanOptionalAction) or action.nargs == 0:
        if not isinstance(value, bool):
            raise ValueError("it is a switch: true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("not a number or a text")
    text = str(value)
    if any(ord(char) < 32 or 0xD800 <= ord(char) <= 0xDFFF for char in text):
        raise ValueError("it holds a control character")
    try:
        converted = action.type(text) if action.type else text
    except ValueError:
        if action.type in (int, float):  # int() and float() say it in Python's words
            raise ValueError("not an integer" if action.type is int else "not a number") from None
        raise
    if action.choices and converted not in action.choices:
        raise ValueError(f"one of {', '.join(map(str, action.choices))}")
    return converted


def _given_source(args: argparse.Namespace) -> dict | None:
    if args.demo:
        return {"kind": "demo", "images": args.demo_images}
    for kind in SOURCE_FLAGS:
        location = getattr(args, f"source_{kind}")
        if location:
            return {"kind": kind, "location": os.path.abspath(os.path.expanduser(location))}
    return None


def _shown(name: str, value) -> str:
    """A recorded value as said beside the flag that replaces it: 0.9, or --no-tune for a switch."""
    import config as config_lib

    return config_lib.as_flag(name, value) if isinstance(value, bool) else str(value)


def _lay_recorded_settings(args: argparse.Namespace):
    """Lays the root's record under the flags given (a flag given wins); returns the record this run writes, the
    lines that say what came from the record and what changed in it, and the line naming what was laid ('' for
    nothing)."""
    from orchestration.root import marker, run_settings

    found = marker.inspect(args.output_dir)  # a folder of the user's is refused here, its files unread
    earlier = run_settings.read(args.output_dir) if found.state == marker.ROOT else None
    given = _given_settings(args)
    known = set(recorded_names())
    where = run_settings.path_of(args.output_dir)
    recorded = earlier.settings if earlier else {}
    # a value given now replaces the record's, which is then only shown beside it, unchecked
    kept = checked_record(recorded, where, given) | {name: recorded[name]
                                                     for name in known & set(recorded) & set(given)}
    under = (_demo_settings() if args.demo else {}) | kept  # the demo's settings, then the record's
    merged = under | given
    searching = bool(merged.get("tune"))
    for name, value in under.items():
        if name not in given and (searching or not name.startswith("tune_")):  # a budget is kept for --tune
            setattr(args, name, value)
    source = _given_source(args) or (earlier.source if earlier else None)
    record = run_settings.Recorded(merged, source)
    if earlier is None:
        return record, [], ""
    laid = {name: value for name, value in kept.items()
            if name not in given and (searching or not name.startswith("tune_"))}
    return (record, *_record_notes(laid, kept, given, sorted(set(earlier.settings) - known), where))


def _record_notes(laid: dict, kept: dict, given: dict, unknown: list[str], where) -> tuple[list[str], str]:
    """The lines that say what a run took from its root's record and what it changed there; the first of them."""
    import config as config_lib

    notes, laid_line = [], ""
    if laid:
        laid_line = (f"settings from this root's earlier runs ({where}): "
                     + " ".join(config_lib.as_flag(name, value) for name, value in laid.items()))
        notes.append(laid_line)
    changed = [f"{config_lib.as_flag(name, value)} (was {_shown(name, kept[name])})" if name in kept
               else f"{config_lib.as_flag(name, value)} (new)"
               for name, value in given.items() if kept.get(name, object()) != value]
    if changed:
        notes.append(f"settings that differ from this root's record: {', '.join(changed)}; {where} now holds them")
    if unknown:
        notes.append(f"ignored in {where}: {', '.join(unknown)} (no setting of this version)")
    return notes, laid_line


def command_ingest(args: argparse.Namespace) -> int:
    """Only ingest a source as a new span (what `run` does first).

    Checks every file or record, normalizes what can be, quarantines the rest with a reason, drops exact
    duplicates, and writes <output-dir>/examples/span-N/ with ingest_report.json.
    """
    from orchestration.engines import local

    config, _ = flags.config_from_args(args)  # ingest does not train: the schedule does not matter to it
    flags.check_output_dir(args.output_dir)
    _check_source_apart(args)
    return local.ingest(config, args.output_dir, _source(args), args.beam_workers or 0, say=say)


COMMANDS = (
    flags.Command.of("run", _run_flags, command_run, with_examples=True),
    flags.Command.of("ingest", _ingest_flags, command_ingest),
)
