#!/usr/bin/env python3
"""Command line of the cats-vs-dogs TFX pipeline.

Resolves paths, builds the pipeline with pipeline.create_pipeline and hands it
to an orchestrator. Every setting of pipeline/config.py is a flag here.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import pathlib
import sys
import textwrap

EXAMPLES = textwrap.dedent("""\
    examples:
      # the demo: generate a small cat/dog image set, then train, evaluate and push
      python pipeline_runner.py run --demo --output-dir runs/demo

      # your own images in <data-dir>/cat/*.jpg and <data-dir>/dog/*.jpg
      python pipeline_runner.py run --data-dir ~/pets --output-dir runs/pets

      # offline: MobileNetV2 ImageNet weights from a local file, 224x224 inputs
      python pipeline_runner.py run --data-dir ~/pets --output-dir runs/pets \\
          --weights ~/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 --image-size 224
    """)


@dataclasses.dataclass(frozen=True)
class RunPaths:
    """Where a run keeps everything, all under one output directory."""

    output_dir: pathlib.Path

    @property
    def examples_root(self) -> pathlib.Path:
        return self.output_dir / "examples"

    @property
    def pipeline_root(self) -> pathlib.Path:
        return self.output_dir / "pipeline_root"

    @property
    def metadata_path(self) -> pathlib.Path:
        return self.output_dir / "metadata.sqlite"

    @property
    def serving_dir(self) -> pathlib.Path:
        return self.output_dir / "serving_model"

    @property
    def summary_path(self) -> pathlib.Path:
        return self.output_dir / "run_summary.json"

    @property
    def demo_images(self) -> pathlib.Path:
        return self.output_dir / "demo_images"


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    from pipeline import config as config_lib

    for section, field in config_lib.section_fields():
        group = parser._config_groups.setdefault(  # type: ignore[attr-defined]
            section, parser.add_argument_group(f"{section} settings (pipeline/config.py)"))
        flag = "--" + field.name.replace("_", "-")
        help_text = f"{field.metadata['help']} Default: {field.default}."
        if field.type in ("bool", bool):
            group.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
        else:
            kind = {"int": int, "float": float, "str": str}[field.type if isinstance(field.type, str)
                                                            else field.type.__name__]
            group.add_argument(flag, dest=field.name, type=kind, default=None, help=help_text,
                               metavar=field.name.upper())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline_runner.py", description="Train, validate and ship a cat/dog classifier with TFX.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="Ingest images and run the pipeline end to end with LocalDagRunner.",
        description="Ingest an image folder as a new span (unchanged data reuses the last span), then run "
                    "the TFX pipeline on LocalDagRunner with SQLite metadata and Beam's DirectRunner.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", type=pathlib.Path,
                        help="Folder of images in class folders: <data-dir>/cat/*.jpg, <data-dir>/dog/*.jpg.")
    source.add_argument("--demo", action="store_true",
                        help="Generate the built-in demo images into <output-dir>/demo_images and use the demo "
                             "settings (random weights; see pipeline.config.demo_config).")
    run.add_argument("--output-dir", type=pathlib.Path, default=pathlib.Path("runs/default"),
                     help="Everything of the run goes here: examples/, pipeline_root/, metadata.sqlite, "
                          "serving_model/<version>/, run_summary.json. Default: runs/default.")
    run.add_argument("--demo-images", type=int, default=300, help="With --demo: images per class. Default: 300.")
    run.add_argument("--allow-anomalies", action="store_true",
                     help="Train even when ExampleValidator reports anomalies (they are still printed).")
    run.add_argument("--beam-workers", type=int, default=0,
                     help="DirectRunner worker processes (0: one per core). Default: 0.")
    run.add_argument("--verbose", action="store_true", help="Show TFX and Beam INFO logs.")
    run._config_groups = {}  # type: ignore[attr-defined]
    _add_config_flags(run)
    return parser


def _config_from_args(args: argparse.Namespace):
    from pipeline import config as config_lib

    base = config_lib.demo_config() if args.demo else config_lib.PipelineConfig()
    overrides = {field.name: getattr(args, field.name) for _, field in config_lib.section_fields()
                 if getattr(args, field.name) is not None}
    return config_lib.with_overrides(base, overrides)


def _quiet_logs(verbose: bool) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging as absl_logging

    level = logging.INFO if verbose else logging.WARNING
    absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.WARNING)
    logging.getLogger().setLevel(level)
    for noisy in ("tensorflow", "absl"):
        logging.getLogger(noisy).setLevel(level)
    # Beam's worker processes report every warning of theirs through the job service.
    logging.getLogger("apache_beam").setLevel(level if verbose else logging.ERROR)


def command_run(args: argparse.Namespace) -> int:
    from pipeline.config import ConfigError

    try:
        config = _config_from_args(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    _quiet_logs(args.verbose)
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)

    from tfx import v1 as tfx

    from ingest import spans, synthetic
    from pipeline import pipeline as pipeline_lib
    from reporting import run_summary

    paths = RunPaths(args.output_dir.resolve())
    paths.output_dir.mkdir(parents=True, exist_ok=True)
    data_dir = args.data_dir
    if args.demo:
        synthetic.write_demo_images(paths.demo_images, args.demo_images)
        data_dir = paths.demo_images
    try:
        report = spans.ingest_folder(data_dir, paths.examples_root)
    except (FileNotFoundError, spans.NoUsableImagesError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.table(), flush=True)

    pipeline = pipeline_lib.create_pipeline(
        config,
        examples_root=str(paths.examples_root),
        pipeline_root=str(paths.pipeline_root),
        serving_dir=str(paths.serving_dir),
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(paths.metadata_path)),
        beam_pipeline_args=pipeline_lib.local_beam_args(args.beam_workers),
        allow_anomalies=args.allow_anomalies,
    )
    error = None
    try:
        tfx.orchestration.LocalDagRunner().run(pipeline)
    except Exception as exc:  # the summary reports it; the exit code says it
        error = f"{type(exc).__name__}: {exc}"
        logging.debug("pipeline failed", exc_info=True)
    summary = run_summary.summarize(str(paths.metadata_path), config.name,
                                    config.evaluation.min_accuracy, config.evaluation.max_accuracy_drop)
    summary.error = error
    summary.ingest = {k: report.to_json()[k] for k in ("span", "reused", "files_seen", "counts")}
    print(summary.text())
    run_summary.write_json(summary, str(paths.summary_path))
    print(f"summary written to {paths.summary_path}")
    return 1 if summary.failed else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return {"run": command_run}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
