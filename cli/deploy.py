"""`compile`, `submit` and `schedule`: the pipeline on Kubeflow Pipelines, Vertex AI, or this machine's cron."""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib

from cli import flags
from cli.flags import SettingsError
from contract import errors
from contract.layout import RunLayout

PROJECT_DIR = pathlib.Path(__file__).resolve().parent.parent  # where pipeline_runner.py is, for cron


def add_parsers(commands, epilog: str) -> None:
    compile_ = commands.add_parser(
        "compile", help="Compile the pipeline into a Kubeflow Pipelines v2 package (YAML).",
        description="Builds the pipeline with the same create_pipeline as `run` and compiles it, offline. "
                    "--target kubeflow (default): a package for open-source Kubeflow Pipelines 2.x, authored with "
                    "the kfp SDK: an ingest task, one task per TFX node (TFX's launcher on a shared ML Metadata "
                    "store), a report task. --target vertex: TFX's KubeflowV2DagRunner package for Vertex AI "
                    "Pipelines.", epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_compile_flags(compile_)
    compile_.add_argument("--demo-settings", dest="demo", action="store_true",
                          help="Start from the demo's settings (random weights; see config.demo_config), "
                               "as `run --demo` does.")
    compile_.add_argument("--package", default="cats_vs_dogs_pipeline.yaml",
                          help="Output file (.yaml). Default: cats_vs_dogs_pipeline.yaml.")
    flags.add_config_flags(compile_)
    compile_.set_defaults(handler=command_compile)

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
    _add_region(submit)
    flags.add_experiment(submit)
    submit.add_argument("--run-name", default="cats-vs-dogs", help="Name of the run. Default: cats-vs-dogs.")
    _add_run_parameter_flags(submit)
    submit.add_argument("--kfp-outputs", type=pathlib.Path, default=pathlib.Path("runs/kfp-local"),
                        help="With --local: where kfp.local keeps the tasks' KFP artifacts and logs. "
                             "Default: runs/kfp-local.")
    submit.set_defaults(handler=command_submit)

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
    _add_region(schedule)
    schedule.add_argument("--package", help="With --host or --vertex-project: a package written by `compile`.")
    flags.add_experiment(schedule)
    schedule.add_argument("--job-name", default="cats-vs-dogs-retraining", help="Recurring run name.")
    _add_run_parameter_flags(schedule, local_data_dir=True)
    flags.add_output_dir(schedule, "With --local: the run's output directory.")
    schedule.add_argument("--install", action="store_true",
                          help="With --local: add the entry to this user's crontab (an existing entry for the "
                               "same output directory is replaced).")
    schedule.set_defaults(handler=command_schedule)


def _add_region(parser) -> None:
    parser.add_argument("--region", help="With --vertex-project: the region, e.g. europe-west4.")


def _source_kinds() -> tuple[str, ...]:
    from ingest import sources

    return tuple(sources.LISTERS)


def _add_compile_flags(parser: argparse.ArgumentParser) -> None:
    from orchestration import kubeflow  # no TensorFlow: the package is built by compile_package

    default = argparse.Namespace(**{field.name: field.default for field in dataclasses.fields(kubeflow.Deployment)
                                    if field.default is not dataclasses.MISSING})
    parser.add_argument("--target", choices=kubeflow.TARGETS, default=kubeflow.KUBEFLOW,
                        help="kubeflow (default): open-source Kubeflow Pipelines 2.x. vertex: Vertex AI Pipelines.")
    parser.add_argument("--image", required=True, help="Container image with this project installed (see Dockerfile).")
    parser.add_argument("--root", required=True,
                        help="Storage root of the deployed pipeline: a gs:// URI, or an absolute path on the PVC "
                             "(--pvc) or, for a local rehearsal, on this machine. examples/, pipeline_root/, "
                             "serving_model/ and runs/ go under it.")
    parser.add_argument("--data-dir", default=default.data_dir,
                        help="kubeflow: the source each run ingests (a path the tasks can read, or gs://): an image "
                             "folder, a Parquet file or folder, or a TFDS data_dir, as --source-kind says; the "
                             "package's `source` parameter, which submit and schedule can change. Default: none "
                             "(each run trains on the spans already under <root>/examples).")
    parser.add_argument("--source-kind", choices=_source_kinds(), default=default.source_kind,
                        help="kubeflow: what --data-dir holds (the package's `source_kind` parameter). Default: "
                             f"{default.source_kind}.")
    parser.add_argument("--lease-timeout-minutes", type=flags.count(1), default=default.lease_timeout_minutes,
                        help="kubeflow: a run's lease on the root whose heartbeat is older than this is taken over "
                             "by the next run (a run whose pods all died); at least 3 (three heartbeats). Default: "
                             f"{default.lease_timeout_minutes}.")
    flags.add_store_flags(parser, "kubeflow: the ML Metadata gRPC service all tasks share. Default: "
                                  f"{kubeflow.DEFAULT_METADATA_STORE.split('://')[-1]}, which every KFP install runs.",
                          "kubeflow: a SQLite ML Metadata file instead, for a local rehearsal (submit --local).")
    parser.add_argument("--pvc", help="kubeflow: a PersistentVolumeClaim mounted into every task; --root and "
                                      "--data-dir are paths under its mount.")
    parser.add_argument("--pvc-mount", default=default.pvc_mount,
                        help=f"kubeflow: where the PVC is mounted in each task. Default: {default.pvc_mount}.")
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
    parser.add_argument("--trainer-accelerator-count", type=int, default=default.trainer_accelerator_count,
                        help="kubeflow: how many accelerators the Trainer's task gets. Default: "
                             f"{default.trainer_accelerator_count}.")
    _add_serving_flags(parser.add_argument_group("serving on the cluster (kubeflow: a KServe InferenceService "
                                                 "manifest written beside the package)"))


def _add_serving_flags(serving) -> None:
    from orchestration import kserve

    default = kserve.Serving()
    flags.add_serving_target_flags(serving, "a rollout task after the Pusher starts a new revision of the "
                                            "InferenceService (KServe copies a gs:// root once)")
    serving.add_argument("--serving-cpu", default=default.cpu,
                         help=f"CPU request and limit of the predictor. Default: {default.cpu}.")
    serving.add_argument("--serving-memory", default=default.memory,
                         help=f"Memory request and limit of the predictor. Default: {default.memory}.")
    serving.add_argument("--serving-service-account",
                         help="A service account that can read a gs:// root (KServe's storage initializer uses "
                              "its credentials).")
    serving.add_argument("--serving-runtime-version",
                         help="The tensorflow/serving image tag the predictor runs. Default: the release matching "
                              "the TensorFlow that exports the model (KServe's own default is far older).")


def _add_run_parameter_flags(parser: argparse.ArgumentParser, local_data_dir: bool = False) -> None:
    parser.add_argument("--data-dir", type=pathlib.Path if local_data_dir else str,
                        help="The source each run ingests: with --local (schedule) the image folder for cron; "
                             "otherwise it sets the package's source parameter (default: the one given to "
                             "compile).")
    parser.add_argument("--source-kind", choices=_source_kinds(),
                        help="Sets the package's source_kind parameter: what --data-dir holds (default: the kind "
                             "given to compile).")
    parser.add_argument("--pipeline-root",
                        help="KFP's pipeline root for this run. Default: the one the package was compiled with.")


def command_compile(args: argparse.Namespace) -> int:
    from orchestration import kubeflow

    config, notes = flags.config_from_args(args)
    for note in notes:
        print(note)
    if args.target == kubeflow.VERTEX:
        return _compile_vertex(args, config)
    return _compile_kubeflow(args, config)


def _compile_vertex(args: argparse.Namespace, config) -> int:
    from orchestration import vertex

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


def _compile_kubeflow(args: argparse.Namespace, config) -> int:
    from contract import metadata
    from orchestration import kserve, kubeflow

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
        raise errors.RunFailedError(f"run {run.run_id} {reason}\nsummary and report in {folder}")
    print(f"local run finished: summary and report in {folder}")
    return errors.OK


def command_schedule(args: argparse.Namespace) -> int:
    from orchestration import kfp_runs, local_schedule, vertex

    if args.local:
        if args.data_dir is None:
            raise SettingsError("--local needs --data-dir (the folder each run ingests)")
        line = local_schedule.cron_line(args.cron, PROJECT_DIR, args.data_dir, args.output_dir)
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
