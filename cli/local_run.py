"""`run` and `ingest`: the pipeline on this machine (orchestration.local)."""

from __future__ import annotations

import argparse
import os
import pathlib

from cli import flags
from cli.flags import SettingsError

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
                          "size drift). They are still reported. Use consciously.")
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
        keywords = {"dest": f"source_{kind}", "type": pathlib.Path, "metavar": flag[2:].replace("-", "_").upper()}
        if flag == "--data-dir":  # also submit's and schedule's: defined once, in cli.flags
            flags.add_data_dir(source, text, **keywords)
        else:
            source.add_argument(flag, help=text, **keywords)
    source.add_argument("--demo", action="store_true",
                        help="Generate the built-in demo images into <output-dir>/demo_images and use the demo "
                             "settings (random weights; see config.demo_config).")
    parser.add_argument("--demo-images", type=flags.count(1), default=synthetic.DEMO_IMAGES_PER_CLASS,
                        help=f"With --demo: images per class. Default: {synthetic.DEMO_IMAGES_PER_CLASS}.")
    flags.add_output_dir(parser, "Everything of the run goes here: examples/, pipeline_root/, metadata.sqlite, "
                                 "serving_model/<version>/, run_summary.json.")
    parser.add_argument("--beam-workers", type=flags.count(0), default=0,
                        help="Beam DirectRunner worker processes for ingest and components. 0 (default): in "
                             "process for small data (see config/beam_policy.py), else one per core; 1: in "
                             "process; N: N processes.")


def say(line: str) -> None:
    """What the run says, as it happens: flushed, so it keeps its place among the libraries' own output."""
    print(line, flush=True)


def _source(args: argparse.Namespace):
    """The source flags as an orchestration.local.Source; None when none was given."""
    from orchestration import local

    if args.demo:
        return local.Source(local.DEMO, demo_images=args.demo_images)
    for kind in SOURCE_FLAGS:
        location = getattr(args, f"source_{kind}")
        if location:
            return local.Source(kind, location)
    return None


def check_local_files(config) -> None:
    """Files the settings name must exist on this machine before a local run starts."""
    import config as config_lib

    weights = config.training.weights
    if weights not in (config_lib.WEIGHTS_IMAGENET, config_lib.WEIGHTS_NONE) and not os.path.isfile(weights):
        raise SettingsError(f"--weights {weights}: no such file (expected 'imagenet', 'none' or a Keras weights "
                            "file such as mobilenet_v2_..._no_top.h5)")


def command_run(args: argparse.Namespace) -> int:
    """Ingest images and run the pipeline end to end with LocalDagRunner.

    Ingest a source as a new span (unchanged data reuses the last span), then run the TFX pipeline on
    LocalDagRunner with SQLite metadata and Beam's DirectRunner. Without a source, run on the spans already in
    <output-dir>/examples (written by `ingest` or another job).
    """
    from orchestration import local

    config, notes = flags.config_from_args(args)
    tuning = flags.tuning_from_args(args, config.training)
    check_local_files(config)
    flags.check_output_dir(args.output_dir)
    return local.run(config, args.output_dir, _source(args), beam_workers=args.beam_workers,
                     allow_anomalies=args.allow_anomalies, notes=notes, tuning=tuning,
                     fixed_settings=flags.fixed_settings(args), say=say)


def command_ingest(args: argparse.Namespace) -> int:
    """Only ingest a source as a new span (what `run` does first).

    Checks every file or record, normalizes what can be, quarantines the rest with a reason, drops exact
    duplicates, and writes <output-dir>/examples/span-N/ with ingest_report.json.
    """
    from orchestration import local

    config, _ = flags.config_from_args(args)  # ingest does not train: the schedule does not matter to it
    flags.check_output_dir(args.output_dir)
    return local.ingest(config, args.output_dir, _source(args), args.beam_workers, say=say)


COMMANDS = (
    flags.Command.of("run", _run_flags, command_run, with_examples=True),
    flags.Command.of("ingest", _ingest_flags, command_ingest),
)
