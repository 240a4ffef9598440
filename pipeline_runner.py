#!/usr/bin/env python3
"""Command line of the cats-vs-dogs TFX pipeline.

Turns flags into settings (every field of config/__init__.py is a flag) and
hands them to a runner: orchestration.local (run, ingest), orchestration.kubeflow
(compile, submit, schedule --host), orchestration.vertex and
orchestration.local_schedule (cron). Each command imports what it needs when it
runs, so that --help, submit and schedule start without loading TensorFlow.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import sys
import textwrap

from contract import errors
from contract.errors import CommandError, RunFailedError
from contract.layout import RunLayout
from orchestration import quiet_logs

EXAMPLES = textwrap.dedent("""\
    examples:
      # the demo: generate a small cat/dog image set, then train, evaluate and push
      python pipeline_runner.py run --demo --output-dir runs/demo

      # your own images in <data-dir>/cat/*.jpg and <data-dir>/dog/*.jpg
      python pipeline_runner.py run --data-dir ~/pets --output-dir runs/pets

      # offline: MobileNetV2 ImageNet weights from a local file, 224x224 inputs
      python pipeline_runner.py run --data-dir ~/pets --output-dir runs/pets \\
          --weights ~/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 --image-size 224

      # a pushed model's base as a weights file: the pretrained start for other photos
      python pipeline_runner.py base-weights --output-dir runs/pets --out ~/pets_base_no_top.h5
      python pipeline_runner.py run --data-dir ~/shelter --output-dir runs/shelter --weights ~/pets_base_no_top.h5

      # classify your own photos with the newest pushed model; Grad-CAM heat maps on the contact sheet
      python pipeline_runner.py predict ~/photos --output-dir runs/pets --explain

      # the pushed versions with their metrics and data spans; serve version 2 again
      python pipeline_runner.py models --output-dir runs/pets
      python pipeline_runner.py rollback --output-dir runs/pets --to 2 --reason "version 3 misreads night photos"

      # retrain every night at 03:00 with cron (prints the line; --install adds it)
      python pipeline_runner.py schedule --local --cron "0 3 * * *" --data-dir ~/pets --output-dir runs/pets

      # Kubeflow Pipelines: compile a KFP v2 package (data and models on a PVC), run it once, run it nightly
      python pipeline_runner.py compile --image registry.example.com/cats-vs-dogs:1 --pvc cats-vs-dogs \\
          --root /mnt/pipeline/cats-vs-dogs --data-dir /mnt/pipeline/images --package cats_vs_dogs.yaml
      python pipeline_runner.py submit --package cats_vs_dogs.yaml --host http://localhost:8080
      python pipeline_runner.py schedule --package cats_vs_dogs.yaml --host http://localhost:8080 \\
          --cron "0 0 3 * * *"

      # rehearse a Kubeflow run on this machine with kfp's local runner
      python pipeline_runner.py compile --image cats-vs-dogs:1 --root "$PWD/runs/kfp" --data-dir ~/pets \\
          --metadata-sqlite "$PWD/runs/kfp/metadata.sqlite" --package runs/kfp.yaml
      python pipeline_runner.py submit --local --package runs/kfp.yaml

      # Vertex AI Pipelines
      python pipeline_runner.py compile --target vertex --image europe-docker.pkg.dev/p/r/cats-vs-dogs:1 \\
          --root gs://my-bucket/cats-vs-dogs --package vertex.yaml
      python pipeline_runner.py submit --package vertex.yaml --vertex-project my-project --region europe-west4
    """)


SOURCE_KINDS = ("folder", "parquet", "tfds")  # ingest.sources.LISTERS (a test checks they agree)


class SettingsError(CommandError):
    """A command-line setting that cannot work; the message names the flag. Refused before any work."""


def _count(minimum: int):
    """An argparse type: an integer >= minimum, refused at parse time with the value named."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value
    return parse


def _add_config_flags(parser: argparse.ArgumentParser, sections: tuple[str, ...] | None = None) -> None:
    """A flag for every field of the config `sections` the command reads (default: all of them)."""
    import config as config_lib

    groups: dict[str, argparse._ArgumentGroup] = {}
    for section, field in config_lib.section_fields():
        if sections is not None and section not in sections:
            continue
        if section not in groups:
            groups[section] = parser.add_argument_group(f"{section} settings (config/__init__.py)")
        group = groups[section]
        flag = "--" + field.name.replace("_", "-")
        # argparse formats help with %: a literal one ("a 95% interval") must be doubled
        help_text = f"{field.metadata['help']} Default: {field.default}.".replace("%", "%%")
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
    _run_parser(commands)
    _ingest_parser(commands)
    _models_parser(commands)
    _rollback_parser(commands)
    _predict_parser(commands)
    _base_weights_parser(commands)
    _compile_parser(commands)
    _submit_parser(commands)
    _schedule_parser(commands)
    return parser


def _run_parser(commands) -> None:
    run = commands.add_parser(
        "run", help="Ingest images and run the pipeline end to end with LocalDagRunner.",
        description="Ingest a source as a new span (unchanged data reuses the last span), then run the TFX "
                    "pipeline on LocalDagRunner with SQLite metadata and Beam's DirectRunner. Without a source, "
                    "run on the spans already in <output-dir>/examples (written by `ingest` or another job).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_source_flags(run, required=False)
    run.add_argument("--allow-anomalies", action="store_true",
                     help="Train even when the data has anomalies (schema violations, class imbalance, image "
                          "size drift). They are still reported. Use consciously.")
    run.add_argument("--verbose", action="store_true", help="Show TFX and Beam INFO logs.")
    _add_config_flags(run)


def _ingest_parser(commands) -> None:
    ingest = commands.add_parser(
        "ingest", help="Only ingest a source as a new span (what `run` does first).",
        description="Checks every file or record, normalizes what can be, quarantines the rest with a reason, "
                    "drops exact duplicates, and writes <output-dir>/examples/span-N/ with ingest_report.json.")
    _add_source_flags(ingest)
    _add_config_flags(ingest, sections=("data",))  # ingest trains nothing


def _models_parser(commands) -> None:
    models = commands.add_parser("models", help="List the pushed model versions, read from MLMD.",
                                 description="Each pushed version with its eval metrics, the data spans its model "
                                             "was trained on, its blessing and its push time: of a local output "
                                             "directory, or of a deployment (--root and its store).")
    _add_history_flags(models)
    models.add_argument("--json", action="store_true", help="Print JSON instead of a table.")


def _rollback_parser(commands) -> None:
    rollback = commands.add_parser(
        "rollback", help="Serve an earlier pushed version again (pushed as a new version).",
        description="Copies version N to the next version number, so that TF Serving (which serves the highest "
                    "version) serves N's model again with no change to its configuration; records the rollback "
                    "in ML Metadata. The next run's candidate is compared with this model. Refused, with nothing "
                    "changed, for a version never pushed or blessed, one whose files changed since its push, the "
                    "version already served, or while a run holds the root. Works on a local output directory or "
                    "a deployment's root (--root with its store).")
    _add_history_flags(rollback)
    rollback.add_argument("--to", type=_count(1), required=True, metavar="N", help="The version to serve again.")
    rollback.add_argument("--reason", default="", help="Why, kept with the rollback (shown by `models`).")
    _add_serving_target_flags(rollback.add_argument_group("serving on the cluster"),
                              "the rollback starts a new revision of the InferenceService with your kubeconfig's "
                              "credentials (KServe copies a gs:// root once)")


def _predict_parser(commands) -> None:
    predict = commands.add_parser(
        "predict", help="Classify your own photos with the latest pushed model (or --model).",
        description="Prints a table (file, class, dog probability) and writes a contact sheet PNG. A file that "
                    "cannot be read is reported on its own line; the others are still classified.")
    predict.add_argument("paths", nargs="+", type=pathlib.Path, help="Image files or folders.")
    where = predict.add_mutually_exclusive_group()
    where.add_argument("--model", type=pathlib.Path, help="A SavedModel folder, e.g. runs/demo/serving_model/3.")
    where.add_argument("--output-dir", type=pathlib.Path, default=pathlib.Path("runs/default"),
                       help="Use the newest version under <output-dir>/serving_model. Default: runs/default.")
    predict.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    predict.add_argument("--sheet", type=pathlib.Path,
                         help="Contact sheet PNG to write. Default: <output-dir>/predictions/contact_sheet.png; "
                              "with --model, beside the run that pushed it (./predictions/ for a model elsewhere).")
    predict.add_argument("--explain", action="store_true",
                         help="Overlay Grad-CAM heat maps (MobileNetV2's last convolutional block) on the sheet.")


def _base_weights_parser(commands) -> None:
    base = commands.add_parser(
        "base-weights", help="Save a pushed model's MobileNetV2 base as a weights file for --weights.",
        description="Writes the base of a pushed model (MobileNetV2 without its head) as a no-top weights file in "
                    "the layout of Keras' own ImageNet files. Another pipeline then starts from it with --weights "
                    "FILE and the same --alpha (any --image-size): a model trained on your images becomes the "
                    "pretrained start of the next task, trained with the default schedule.")
    where = base.add_mutually_exclusive_group()
    where.add_argument("--model", type=pathlib.Path, help="A pushed version's folder, e.g. runs/demo/serving_model/3.")
    where.add_argument("--output-dir", type=pathlib.Path, default=pathlib.Path("runs/default"),
                       help="Use the newest version under <output-dir>/serving_model. Default: runs/default.")
    base.add_argument("--out", type=pathlib.Path, required=True, help="The weights file to write (.h5).")


def _compile_parser(commands) -> None:
    compile_ = commands.add_parser(
        "compile", help="Compile the pipeline into a Kubeflow Pipelines v2 package (YAML).",
        description="Builds the pipeline with the same create_pipeline as `run` and compiles it, offline. "
                    "--target kubeflow (default): a package for open-source Kubeflow Pipelines 2.x, authored with "
                    "the kfp SDK: an ingest task, one task per TFX node (TFX's launcher on a shared ML Metadata "
                    "store), a report task. --target vertex: TFX's KubeflowV2DagRunner package for Vertex AI "
                    "Pipelines.", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_kubeflow_compile_flags(compile_)
    compile_.add_argument("--demo-settings", dest="demo", action="store_true",
                          help="Start from the demo's settings (random weights; see config.demo_config), "
                               "as `run --demo` does.")
    compile_.add_argument("--package", default="cats_vs_dogs_pipeline.yaml",
                          help="Output file (.yaml). Default: cats_vs_dogs_pipeline.yaml.")
    _add_config_flags(compile_)


def _submit_parser(commands) -> None:
    submit = commands.add_parser(
        "submit", help="Start one run of a compiled package: on Kubeflow Pipelines, Vertex AI, or --local.",
        description="--host: one run on a Kubeflow Pipelines cluster. --vertex-project/--region: one Vertex AI "
                    "Pipelines job. --local: run the package on this machine with the kfp SDK's local runner "
                    "(a rehearsal before a cluster; compile it with --metadata-sqlite and a local --root).")
    submit.add_argument("--package", required=True, help="A package written by `compile`.")
    submit_target = submit.add_mutually_exclusive_group(required=True)
    submit_target.add_argument("--host", help="KFP API endpoint, e.g. https://kfp.example.com.")
    submit_target.add_argument("--local", action="store_true",
                               help="Run the package here with kfp.local's SubprocessRunner.")
    submit_target.add_argument("--vertex-project", help="Google Cloud project for Vertex AI Pipelines.")
    submit.add_argument("--region", help="With --vertex-project: the region, e.g. europe-west4.")
    submit.add_argument("--experiment", default="cats-vs-dogs", help="KFP experiment. Default: cats-vs-dogs.")
    submit.add_argument("--run-name", default="cats-vs-dogs", help="Name of the run. Default: cats-vs-dogs.")
    _add_run_parameter_flags(submit)
    submit.add_argument("--kfp-outputs", type=pathlib.Path, default=pathlib.Path("runs/kfp-local"),
                        help="With --local: where kfp.local keeps the tasks' KFP artifacts and logs. "
                             "Default: runs/kfp-local.")


def _schedule_parser(commands) -> None:
    schedule = commands.add_parser(
        "schedule", help="Retrain on a schedule: a KFP recurring run, a Vertex AI schedule, or a local cron entry.",
        description="With --host: a recurring run of a compiled package on Kubeflow Pipelines (6-field cron, "
                    "seconds first, at most one run at a time). With --vertex-project: a Vertex AI Pipelines "
                    "schedule (5-field cron). With --local: a crontab line that runs `pipeline_runner.py run`; "
                    "overlapping local runs exit at once on the run lock.")
    target = schedule.add_mutually_exclusive_group(required=True)
    target.add_argument("--host", help="KFP API endpoint for a recurring run.")
    target.add_argument("--vertex-project", help="Google Cloud project for a Vertex AI Pipelines schedule.")
    target.add_argument("--local", action="store_true", help="Print (or --install) a crontab entry instead.")
    schedule.add_argument("--cron", required=True,
                          help="With --host: 6 fields, e.g. '0 0 3 * * *'. With --local or --vertex-project: "
                               "5 fields, e.g. '0 3 * * *'.")
    schedule.add_argument("--region", help="With --vertex-project: the region, e.g. europe-west4.")
    schedule.add_argument("--package", help="With --host or --vertex-project: a package written by `compile`.")
    schedule.add_argument("--experiment", default="cats-vs-dogs", help="KFP experiment. Default: cats-vs-dogs.")
    schedule.add_argument("--job-name", default="cats-vs-dogs-retraining", help="Recurring run name.")
    _add_run_parameter_flags(schedule, local_data_dir=True)
    schedule.add_argument("--output-dir", type=pathlib.Path, default=pathlib.Path("runs/default"),
                          help="With --local: the run's output directory. Default: runs/default.")
    schedule.add_argument("--install", action="store_true",
                          help="With --local: add the entry to this user's crontab (an existing entry for the "
                               "same output directory is replaced).")


def _add_history_flags(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--output-dir", type=pathlib.Path, default=pathlib.Path("runs/default"),
                       help="A local run's output directory. Default: runs/default.")
    where.add_argument("--root", help="A deployment's root, as given to compile (gs://... or a path on its volume, "
                                      "mounted here); needs --metadata-grpc or --metadata-sqlite.")
    store = parser.add_mutually_exclusive_group()
    store.add_argument("--metadata-grpc", metavar="HOST:PORT",
                       help="With --root: the deployment's ML Metadata gRPC service (on a cluster: kubectl "
                            "port-forward -n kubeflow svc/metadata-grpc-service 8080, then localhost:8080).")
    store.add_argument("--metadata-sqlite", metavar="PATH", help="With --root: a SQLite ML Metadata file.")


def _add_source_flags(parser: argparse.ArgumentParser, required: bool = True) -> None:
    source = parser.add_mutually_exclusive_group(required=required)
    source.add_argument("--data-dir", type=pathlib.Path,
                        help="Image folder: class folders (<dir>/cat/*.jpg, <dir>/dog/*.jpg; also PetImages/Cat "
                             "and cats_and_dogs_filtered/train/cats, whose train/validation split is kept) or "
                             "Kaggle names (<dir>/train/cat.1.jpg).")
    source.add_argument("--parquet", type=pathlib.Path,
                        help="A Parquet file or folder in Hugging Face Bingsu/Cat_and_Dog form "
                             "(image.bytes, labels 0 = cat / 1 = dog).")
    source.add_argument("--tfds-data-dir", type=pathlib.Path,
                        help="A TFDS data_dir holding a prepared cats_vs_dogs (nothing is downloaded).")
    source.add_argument("--demo", action="store_true",
                        help="Generate the built-in demo images into <output-dir>/demo_images and use the demo "
                             "settings (random weights; see config.demo_config).")
    from ingest import synthetic

    parser.add_argument("--demo-images", type=_count(1), default=synthetic.DEMO_IMAGES_PER_CLASS,
                        help=f"With --demo: images per class. Default: {synthetic.DEMO_IMAGES_PER_CLASS}.")
    parser.add_argument("--output-dir", type=pathlib.Path, default=pathlib.Path("runs/default"),
                        help="Everything of the run goes here: examples/, pipeline_root/, metadata.sqlite, "
                             "serving_model/<version>/, run_summary.json. Default: runs/default.")
    parser.add_argument("--beam-workers", type=_count(0), default=0,
                        help="Beam DirectRunner worker processes for ingest and components. 0 (default): in "
                             "process for small data (see config/beam_policy.py), else one per core; 1: in "
                             "process; N: N processes.")


def _check_output_dir(output_dir: pathlib.Path) -> None:
    """The output directory exists or can be made, and is writable: checked before any work."""
    if output_dir.exists() and not output_dir.is_dir():
        raise SettingsError(f"--output-dir {output_dir} is a file, not a directory")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SettingsError(f"--output-dir {output_dir} cannot be created: {error.strerror or error}") from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise SettingsError(f"--output-dir {output_dir} is not writable")


def _check_local_files(config) -> None:
    """Files the settings name must exist on this machine before a local run starts."""
    import config as config_lib

    weights = config.training.weights
    if weights not in (config_lib.WEIGHTS_IMAGENET, config_lib.WEIGHTS_NONE) and not os.path.isfile(weights):
        raise SettingsError(f"--weights {weights}: no such file (expected 'imagenet', 'none' or a Keras weights "
                            "file such as mobilenet_v2_..._no_top.h5)")


def _source(args: argparse.Namespace):
    """The source flags as an orchestration.local.Source; None when none was given."""
    from orchestration import local

    if args.demo:
        return local.Source(local.DEMO, demo_images=args.demo_images)
    for kind, location in (("folder", args.data_dir), ("parquet", args.parquet), ("tfds", args.tfds_data_dir)):
        if location:
            return local.Source(kind, location)
    return None


def command_ingest(args: argparse.Namespace) -> int:
    from orchestration import local

    config, _ = _config_from_args(args)  # ingest does not train: the schedule does not matter to it
    _check_output_dir(args.output_dir)
    return local.ingest(config, args.output_dir, _source(args), args.beam_workers)


def _add_kubeflow_compile_flags(parser: argparse.ArgumentParser) -> None:
    from orchestration import kubeflow  # no TensorFlow: the package is built by compile_package

    parser.add_argument("--target", choices=kubeflow.TARGETS, default=kubeflow.KUBEFLOW,
                        help="kubeflow (default): open-source Kubeflow Pipelines 2.x. vertex: Vertex AI Pipelines.")
    parser.add_argument("--image", required=True, help="Container image with this project installed (see Dockerfile).")
    parser.add_argument("--root", required=True,
                        help="Storage root of the deployed pipeline: a gs:// URI, or an absolute path on the PVC "
                             "(--pvc) or, for a local rehearsal, on this machine. examples/, pipeline_root/, "
                             "serving_model/ and runs/ go under it.")
    parser.add_argument("--data-dir", default="",
                        help="kubeflow: the source each run ingests (a path the tasks can read, or gs://): an image "
                             "folder, a Parquet file or folder, or a TFDS data_dir, as --source-kind says; the "
                             "package's `source` parameter, which submit and schedule can change. Default: none "
                             "(each run trains on the spans already under <root>/examples).")
    parser.add_argument("--source-kind", choices=SOURCE_KINDS, default="folder",
                        help="kubeflow: what --data-dir holds (the package's `source_kind` parameter). Default: "
                             "folder.")
    parser.add_argument("--lease-timeout-minutes", type=_count(1), default=60,
                        help="kubeflow: a run's lease on the root whose heartbeat is older than this is taken over "
                             "by the next run (a run whose pods all died); at least 3 (three heartbeats). Default: 60.")
    store = parser.add_mutually_exclusive_group()
    store.add_argument("--metadata-grpc", metavar="HOST:PORT",
                       help="kubeflow: the ML Metadata gRPC service all tasks share. Default: "
                            "metadata-grpc-service.kubeflow:8080, which every KFP install runs.")
    store.add_argument("--metadata-sqlite", metavar="PATH",
                       help="kubeflow: a SQLite ML Metadata file instead, for a local rehearsal (submit --local).")
    parser.add_argument("--pvc", help="kubeflow: a PersistentVolumeClaim mounted into every task; --root and "
                                      "--data-dir are paths under its mount.")
    parser.add_argument("--pvc-mount", default="/mnt/pipeline",
                        help="kubeflow: where the PVC is mounted in each task. Default: /mnt/pipeline.")
    parser.add_argument("--pipeline-root",
                        help="Where KFP keeps its own artifacts (run page metrics and report). Default: "
                             "<root>/kfp for a gs:// root, else the cluster's default.")
    parser.add_argument("--beam-arg", action="append", default=None, dest="beam_args", metavar="ARG",
                        help="A Beam pipeline argument (repeatable). Default: DirectRunner, multi-process, one "
                             "worker per core. For Dataflow: --beam-arg=--runner=DataflowRunner "
                             "--beam-arg=--project=P --beam-arg=--region=R --beam-arg=--temp_location=gs://B/tmp")
    parser.add_argument("--trainer-cpu", help="kubeflow: CPUs of the Trainer's task (request and limit), e.g. 4.")
    parser.add_argument("--trainer-memory", help="kubeflow: memory of the Trainer's task (request and limit), "
                                                 "e.g. 16G.")
    parser.add_argument("--trainer-accelerator", metavar="TYPE",
                        help="kubeflow: accelerator resource of the Trainer's task, e.g. nvidia.com/gpu.")
    parser.add_argument("--trainer-accelerator-count", type=int, default=1,
                        help="kubeflow: how many accelerators the Trainer's task gets. Default: 1.")
    serving = parser.add_argument_group("serving on the cluster (kubeflow: a KServe InferenceService manifest "
                                        "written beside the package)")
    _add_serving_target_flags(serving, "a rollout task after the Pusher starts a new revision of the "
                                       "InferenceService (KServe copies a gs:// root once)")
    serving.add_argument("--serving-cpu", default="1", help="CPU request and limit of the predictor. Default: 1.")
    serving.add_argument("--serving-memory", default="2Gi",
                         help="Memory request and limit of the predictor. Default: 2Gi.")
    serving.add_argument("--serving-service-account",
                         help="A service account that can read a gs:// root (KServe's storage initializer uses "
                              "its credentials).")
    serving.add_argument("--serving-runtime-version",
                         help="The tensorflow/serving image tag the predictor runs. Default: the release matching "
                              "the TensorFlow that exports the model (KServe's own default is far older).")


def _add_serving_target_flags(group, rollout_help: str) -> None:
    """The InferenceService that serves the root's versions, and whether to tell it about a new one."""
    group.add_argument("--serving-name", default="cats-vs-dogs",
                       help="The InferenceService's name (also the model's name in predict URLs). "
                            "Default: cats-vs-dogs.")
    group.add_argument("--serving-namespace", default="default",
                       help="Its namespace (with Kubeflow profiles: your profile's). Default: default.")
    group.add_argument("--no-serving-rollout", dest="serving_rollout", action="store_false",
                       help=f"On a gs:// root, by default {rollout_help}, through the Kubernetes API. Give this "
                            "when the versions are served some other way.")


def _add_run_parameter_flags(parser: argparse.ArgumentParser, local_data_dir: bool = False) -> None:
    parser.add_argument("--data-dir", type=pathlib.Path if local_data_dir else str,
                        help="The source each run ingests: with --local (schedule) the image folder for cron; "
                             "otherwise it sets the package's source parameter (default: the one given to "
                             "compile).")
    parser.add_argument("--source-kind", choices=SOURCE_KINDS,
                        help="Sets the package's source_kind parameter: what --data-dir holds (default: the kind "
                             "given to compile).")
    parser.add_argument("--pipeline-root",
                        help="KFP's pipeline root for this run. Default: the one the package was compiled with.")

def _config_from_args(args: argparse.Namespace):
    """(the settings of the flags given, notes on settings chosen for the user: the from-scratch schedule)."""
    import config as config_lib

    base = config_lib.demo_config() if getattr(args, "demo", False) else config_lib.PipelineConfig()
    overrides = {field.name: getattr(args, field.name) for _, field in config_lib.section_fields()
                 if getattr(args, field.name, None) is not None}  # a command has the flags of what it reads
    config, filled = config_lib.from_user_settings(overrides, base)
    return config, [_from_scratch_note(filled)] if filled else []


def _from_scratch_note(filled: dict) -> str:
    def flag(name, value):
        name = name.replace("_", "-")
        if isinstance(value, bool):
            return f"--{name}" if value else f"--no-{name}"
        return f"--{name} {value}"
    shown = ", ".join(flag(name, value) for name, value in filled.items())
    return (f"random weights (--weights none): training with the from-scratch schedule {shown} (the defaults are "
            "made for ImageNet weights; set any of these flags to choose)")


def command_run(args: argparse.Namespace) -> int:
    from orchestration import local

    config, notes = _config_from_args(args)
    _check_local_files(config)
    _check_output_dir(args.output_dir)
    return local.run(config, args.output_dir, _source(args), beam_workers=args.beam_workers,
                     allow_anomalies=args.allow_anomalies, notes=notes)


def _history_store(args: argparse.Namespace):
    """(root, store) that `models` and `rollback` read: --output-dir's, or --root with a --metadata-* flag."""
    from contract import metadata
    from orchestration import store_health

    if args.root is not None:
        if not (args.metadata_grpc or args.metadata_sqlite):
            raise SettingsError("--root needs the deployment's ML Metadata store: --metadata-grpc HOST:PORT (e.g. "
                                "through kubectl port-forward) or --metadata-sqlite PATH")
        if args.metadata_sqlite and not os.path.isfile(args.metadata_sqlite):
            raise SettingsError(f"--metadata-sqlite {args.metadata_sqlite}: no such file")
        store = (metadata.grpc_store(args.metadata_grpc) if args.metadata_grpc
                 else metadata.sqlite_store(args.metadata_sqlite))
        root = args.root
    else:
        if args.metadata_grpc or args.metadata_sqlite:
            raise SettingsError("--metadata-grpc and --metadata-sqlite go with --root (a deployment's root); "
                                "--output-dir has its own store")
        root = args.output_dir.resolve()
        path = RunLayout(root).metadata_path
        if not path.exists():
            raise SettingsError(f"no metadata store at {path}: has the pipeline run in {args.output_dir}?")
        store = metadata.sqlite_store(path)
    if store.startswith(metadata.SQLITE_SCHEME):
        store_health.check(store[len(metadata.SQLITE_SCHEME):], root)
    try:
        metadata.reachable_store(store, read_only=True)
    except (metadata.StoreAddressError, metadata.StoreUnreachableError) as error:
        raise SettingsError(str(error)) from None
    return root, store


def command_models(args: argparse.Namespace) -> int:
    import json

    from orchestration import reconcile
    from reporting import model_history

    root, store = _history_store(args)
    versions = model_history.pushed_versions(store)
    # Read only: versions the store missed are named here; the next run or rollback records them.
    unknown = reconcile.unrecorded(str(RunLayout(str(root)).serving_dir), versions)
    if args.json:
        print(json.dumps([dataclasses.asdict(v) for v in versions], indent=2))
    else:
        print(model_history.table(versions))
    for found in unknown:
        print(f"warning: {found.describe()} (its pusher stopped before recording it): it is what a server "
              "loads; the next run or rollback records it", file=sys.stderr)
    return 0


def command_rollback(args: argparse.Namespace) -> int:
    import config as config_lib
    from orchestration import kserve, rollback

    # Checked before anything changes: a name Kubernetes would refuse is a refusal, not a half-done rollback.
    serving = kserve.Serving(name=args.serving_name, namespace=args.serving_namespace) if args.serving_rollout else None
    root, store = _history_store(args)
    try:
        done = rollback.rollback(root, store, args.to, args.reason, config_lib.PipelineConfig().name)
    except rollback.RollbackError as error:
        raise CommandError(f"cannot roll back to version {args.to}: {error}; nothing was changed") from None
    for note in done.notes:
        print(note)
    if done.completed:
        print(f"the interrupted rollback to version {done.to_version} is complete: its model is served as version "
              f"{done.pushed.version} ({done.pushed.path}), now recorded; version {done.from_version} was served "
              "before")
    else:
        print(f"version {done.to_version}'s model is served again as version {done.pushed.version} "
              f"({done.pushed.path}); version {done.from_version} was served before")
    try:
        print(rollback.reach_clients(str(root), done.pushed.version, serving))
    except kserve.RolloutError as error:
        raise RunFailedError(f"the rollback is pushed and recorded, but {error}") from None
    return 0


SHEET_SUFFIXES = (".png", ".jpg", ".jpeg")  # what Pillow writes the contact sheet as


def command_predict(args: argparse.Namespace) -> int:
    import json

    from contract import layout
    from inference import contact_sheet, predict

    if args.sheet is not None and args.sheet.suffix.lower() not in SHEET_SUFFIXES:
        raise CommandError(f"--sheet {args.sheet}: the contact sheet is an image; give a path ending in "
                           f"{', '.join(SHEET_SUFFIXES)}")
    model_dir = args.model or predict.latest_version_dir(RunLayout(args.output_dir.resolve()).serving_dir)
    if args.explain and not (model_dir / layout.KERAS_MODEL_FILE).is_file():
        raise CommandError(f"--explain needs the Keras model this pipeline pushes beside the SavedModel "
                           f"({layout.KERAS_MODEL_FILE}), and {model_dir} has none; predict without --explain")
    model = predict.load_model(model_dir)
    files = predict.find_files(args.paths)
    if not files:
        raise CommandError("no files found in " + ", ".join(map(str, args.paths)))
    predictions, jpegs = predict.predict_files(model, files)
    sheet = sheet_error = None
    if jpegs:  # a sheet of nothing but unreadable files would say less than the table
        path = args.sheet or _default_sheet(args.output_dir if args.model is None else args.model)
        try:  # whatever happens to the sheet, the classifications are printed below
            heatmaps = predict.explain(model_dir, jpegs) if args.explain else None
            path.parent.mkdir(parents=True, exist_ok=True)
            contact_sheet.render(predictions, jpegs, heatmaps).save(path)
            sheet = str(path)
        except (OSError, ValueError) as error:
            sheet_error = f"the contact sheet could not be written to {path}: {errors.first_line(error)}"
    if args.json:
        print(json.dumps({"model": str(model_dir), "sheet": sheet, "sheet_error": sheet_error,
                          "predictions": [dataclasses.asdict(p) for p in predictions]}, indent=2))
    else:
        print(f"model: {model_dir}")
        print(predict.table(predictions))
        if sheet:
            print(f"contact sheet: {sheet}")
    unreadable = sum(p.error is not None for p in predictions)
    if unreadable == len(predictions):
        raise CommandError(f"none of the {len(predictions)} files could be classified (reasons above)")
    if sheet_error:
        raise RunFailedError(f"{sheet_error} (the classifications are above)")
    if unreadable:
        print(f"warning: {unreadable} of {len(predictions)} files could not be classified (marked UNREADABLE)",
              file=sys.stderr)
        return errors.FAILED
    return errors.OK


def command_base_weights(args: argparse.Namespace) -> int:
    from contract import layout
    from inference import predict

    if args.out.suffix != ".h5":
        raise CommandError(f"--out must name an .h5 file (the format of Keras' ImageNet weights), got {args.out}")
    model_dir = args.model or predict.latest_version_dir(RunLayout(args.output_dir.resolve()).serving_dir)
    keras_file = model_dir / layout.KERAS_MODEL_FILE
    if not keras_file.is_file():
        raise CommandError(f"{model_dir} has no {layout.KERAS_MODEL_FILE}: not a model version this pipeline pushed")
    import keras

    from trainer import model as model_lib

    classifier = keras.models.load_model(keras_file, compile=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model_lib.save_base_weights(classifier, str(args.out))
    print(f"wrote the MobileNetV2 base of {model_dir} to {args.out}; start from it with --weights {args.out} "
          "and the --alpha that model was trained with")
    return errors.OK


def _default_sheet(run_or_model: pathlib.Path) -> pathlib.Path:
    """<output-dir>/predictions/contact_sheet.png, for a run's output dir or a model it pushed
    (<output-dir>/serving_model/<N>)."""
    from contract import layout

    resolved = run_or_model.resolve()
    if (resolved / "saved_model.pb").exists():
        resolved = resolved.parent.parent if resolved.parent.name == "serving_model" else pathlib.Path.cwd()
    return RunLayout(resolved).predictions_dir / layout.CONTACT_SHEET


def command_compile(args: argparse.Namespace) -> int:
    from contract import metadata
    from orchestration import kserve, kubeflow, vertex

    config, notes = _config_from_args(args)
    for note in notes:
        print(note)
    if args.target == kubeflow.VERTEX:
        kubeflow_only = {"--data-dir": args.data_dir, "--metadata-grpc": args.metadata_grpc,
                         "--metadata-sqlite": args.metadata_sqlite, "--pvc": args.pvc,
                         "--trainer-accelerator": args.trainer_accelerator, "--trainer-cpu": args.trainer_cpu,
                         "--trainer-memory": args.trainer_memory}
        given = [flag for flag, value in kubeflow_only.items() if value]
        if given:
            raise SettingsError(f"{', '.join(given)} apply only to --target kubeflow (Vertex AI runs TFX's own "
                                "package: its own metadata store and storage)")
        path = vertex.compile_vertex_package(config, args.package, image=args.image, root=args.root,
                                               beam_args=args.beam_args or [])
        print(f"wrote Vertex AI Pipelines package {path}")
        return errors.OK
    if args.metadata_sqlite:
        store = metadata.sqlite_store(args.metadata_sqlite)
    elif args.metadata_grpc:
        store = metadata.grpc_store(args.metadata_grpc)
    else:
        store = kubeflow.DEFAULT_METADATA_STORE
    serving = kserve.Serving(name=args.serving_name, namespace=args.serving_namespace, cpu=args.serving_cpu,
                             memory=args.serving_memory, service_account=args.serving_service_account,
                             runtime_version=args.serving_runtime_version)
    deployment = kubeflow.Deployment(
        image=args.image, root=args.root, data_dir=args.data_dir, metadata_store=store, pvc=args.pvc,
        pvc_mount=args.pvc_mount, beam_args=tuple(args.beam_args or ()), trainer_cpu=args.trainer_cpu,
        trainer_memory=args.trainer_memory, trainer_accelerator=args.trainer_accelerator,
        trainer_accelerator_count=args.trainer_accelerator_count, kfp_pipeline_root=args.pipeline_root,
        source_kind=args.source_kind, lease_timeout_minutes=args.lease_timeout_minutes,
        serving=serving if args.serving_rollout else None)
    path = kubeflow.compile_package(config, args.package, deployment)
    print(f"wrote Kubeflow Pipelines package {path}")
    if deployment.rolls_out:
        print(f"after each push, its rollout task starts a new revision of InferenceService "
              f"{serving.namespace}/{serving.name} (KServe copies a gs:// root once): the pipeline's service account "
              "needs get and patch on inferenceservices.serving.kserve.io there (docs/operating-on-kubeflow.md)")
    uri = kserve.storage_uri(deployment.root, deployment.pvc, deployment.pvc_mount)
    if uri is None:
        print(f"no KServe manifest: the root {deployment.root} is on this machine (a rehearsal); a cluster serves "
              "from a gs:// root or a PVC (--pvc)")
    else:
        manifest = kserve.write_manifest(kserve.manifest_path(path), serving, uri)
        print(f"wrote KServe InferenceService {manifest} (serves the highest version under {uri}): "
              f"kubectl apply -f {manifest}")
    return errors.OK


def _run_arguments(args: argparse.Namespace) -> dict:
    """The package's run parameters the flags set (the others keep the values given to compile)."""
    arguments = {"source": str(args.data_dir)} if args.data_dir is not None else {}
    if getattr(args, "source_kind", None):
        arguments["source_kind"] = args.source_kind
    return arguments


def _package(args: argparse.Namespace) -> str:
    """The --package that submit and schedule send: it must exist."""
    if not args.package:
        raise SettingsError("--host and --vertex-project need --package (compile one with `compile`)")
    if not os.path.isfile(args.package):
        raise SettingsError(f"no package at {args.package}: write one with `compile`")
    from orchestration import kubeflow

    kubeflow.package_spec(args.package)  # a file that is not a package is named now, in one line
    return args.package


def _vertex_region(args: argparse.Namespace) -> str:
    if not args.region:
        raise SettingsError("--vertex-project needs --region")
    return args.region


def command_submit(args: argparse.Namespace) -> int:
    from orchestration import kfp_runs, vertex

    package = _package(args)
    if args.local:
        return _submit_local(args)
    if args.vertex_project:
        name = vertex.submit(package, args.vertex_project, _vertex_region(args), args.run_name,
                             _run_arguments(args), args.pipeline_root)
        print(f"started Vertex AI pipeline job {name}")
        return errors.OK
    run_id = kfp_runs.submit(package, args.host, args.run_name, args.experiment, _run_arguments(args),
                             args.pipeline_root)
    print(f"started run {run_id} on {args.host}")
    return errors.OK


def _submit_local(args: argparse.Namespace) -> int:
    from orchestration import kfp_runs, kubeflow

    root = kubeflow.package_root(args.package)
    if root is None or "://" in root:
        raise SettingsError(f"{args.package} keeps its data at {root}: a local run needs a package compiled with a "
                            "local --root and --metadata-sqlite")
    if kubeflow.package_metadata_store(args.package) == kubeflow.DEFAULT_METADATA_STORE:
        raise SettingsError(f"{args.package} uses the cluster's ML Metadata service; compile it with "
                            "--metadata-sqlite PATH (or --metadata-grpc HOST:PORT of a store this machine reaches) "
                            "to run it here")
    # No lock here: the package's first task takes the root's lease, as on a cluster.
    run = kfp_runs.run_locally(args.package, _run_arguments(args), str(args.kfp_outputs.resolve()))
    folder = RunLayout(root).run_dir(run.run_id)
    if run.failure:
        reason = kfp_runs.run_outcome(folder) or run.failure  # the exit handler's word, else kfp's
        raise RunFailedError(f"run {run.run_id} {reason}\nsummary and report in {folder}")
    print(f"local run finished: summary and report in {folder}")
    return errors.OK


def command_schedule(args: argparse.Namespace) -> int:
    from orchestration import kfp_runs, local_schedule, vertex

    if args.local:
        if args.data_dir is None:
            raise SettingsError("--local needs --data-dir (the folder each run ingests)")
        line = local_schedule.cron_line(args.cron, pathlib.Path(__file__).resolve().parent, args.data_dir,
                                        args.output_dir)
        if args.install:
            local_schedule.install(line, args.output_dir)
            print(f"installed in crontab: {line}")
        else:
            print(line)
        return errors.OK
    package = _package(args)
    if args.vertex_project:
        name = vertex.schedule(package, args.vertex_project, _vertex_region(args), args.job_name, args.cron,
                               _run_arguments(args), args.pipeline_root)
        print(f"created Vertex AI schedule {name} ({args.cron})")
        return errors.OK
    job_id = kfp_runs.schedule(package, args.host, args.job_name, args.experiment, args.cron,
                               _run_arguments(args), args.pipeline_root)
    print(f"created recurring run {job_id} ({args.cron}) on {args.host}")
    return errors.OK


COMMANDS = {"run": command_run, "ingest": command_ingest, "models": command_models, "predict": command_predict,
            "base-weights": command_base_weights,
            "rollback": command_rollback, "compile": command_compile, "submit": command_submit,
            "schedule": command_schedule}


def _refusals() -> tuple[type[Exception], ...]:
    """Errors of bad input or settings, raised by the layers below: refused before any work (exit 2)."""
    from config import ConfigError
    from contract.metadata import StoreAddressError, StoreUnreachableError
    from inference.predict import NoModelError
    from ingest.sources import SourceError
    from orchestration.kfp_runs import KubeflowUnreachableError
    from orchestration.kserve import ServingError
    from orchestration.kubeflow import TargetError
    from orchestration.lease import LeaseUnreachableError
    from orchestration.local_schedule import CronError
    from orchestration.store_health import DamagedStoreError
    from orchestration.vertex import VertexUnreachableError

    return (ConfigError, StoreAddressError, StoreUnreachableError, SourceError, NoModelError, ServingError,
            KubeflowUnreachableError, TargetError, CronError, DamagedStoreError, VertexUnreachableError,
            LeaseUnreachableError)


def main(argv: list[str] | None = None) -> int:
    """Runs one command; the only place that turns an error into its one line and exit code (contract.errors)."""
    args = build_parser().parse_args(argv)
    quiet_logs.apply(getattr(args, "verbose", False))
    from orchestration.lease import LeaseLostError, RootBusyError

    try:
        return COMMANDS[args.command](args)
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except RootBusyError as error:
        print(f"error: {error}", file=sys.stderr)
        return errors.BUSY
    except LeaseLostError as error:  # raised when the work ends: it was not cut off midway
        print(f"error: {error} while `{args.command}` ran: another run took the root over, so what is there now "
              "may be that run's work as well as this one's; check `models` and the run summary", file=sys.stderr)
        return errors.FAILED
    except _refusals() as error:
        print(f"error: {error}", file=sys.stderr)
        return errors.REFUSED
    except KeyboardInterrupt:
        print(f"interrupted: `{args.command}` stopped before it finished", file=sys.stderr)
        return errors.INTERRUPTED

if __name__ == "__main__":
    sys.exit(main())
