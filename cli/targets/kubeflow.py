"""Kubeflow Pipelines 2.x: a package authored with the kfp SDK (orchestration.kubeflow), one run or a recurring
run on a cluster's API (orchestration.kfp_runs)."""

from __future__ import annotations

import argparse
import dataclasses

from cli import flags
from contract import errors

NAME = "kubeflow"
HELP = "open-source Kubeflow Pipelines 2.x"
SELECTS = {"submit": ("--host", {"help": "KFP API endpoint, e.g. https://kfp.example.com."}),
           "schedule": ("--host", {"help": "KFP API endpoint for a recurring run (6-field cron, seconds first, at "
                                           "most one run at a time)."})}


def add_flags(command: str, parser: argparse.ArgumentParser) -> None:
    if command == "compile":
        _add_compile_flags(parser)
    else:
        parser.add_argument("--experiment", default="cats-vs-dogs", help="KFP experiment. Default: cats-vs-dogs.")


def _add_compile_flags(parser: argparse.ArgumentParser) -> None:
    from orchestration import kubeflow

    default = argparse.Namespace(**{field.name: field.default for field in dataclasses.fields(kubeflow.Deployment)
                                    if field.default is not dataclasses.MISSING})
    parser.add_argument("--data-dir", default=default.data_dir,
                        help="kubeflow: the source each run ingests (a path the tasks can read, or gs://): an image "
                             "folder, a Parquet file or folder, or a TFDS data_dir, as --source-kind says; the "
                             "package's `source` parameter, which submit and schedule can change. Default: none "
                             "(each run trains on the spans already under <root>/examples).")
    parser.add_argument("--source-kind", choices=flags.source_kinds(), default=default.source_kind,
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


def compile(args: argparse.Namespace, config) -> int:
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


def submit(args: argparse.Namespace) -> int:
    from orchestration import kfp_runs

    run_id = kfp_runs.submit(flags.package(args), args.host, args.run_name, args.experiment,
                             flags.run_arguments(args), args.pipeline_root)
    print(f"started run {run_id} on {args.host}")
    return errors.OK


def schedule(args: argparse.Namespace) -> int:
    from orchestration import kfp_runs

    job_id = kfp_runs.schedule(flags.package(args), args.host, args.job_name, args.experiment, args.cron,
                               flags.run_arguments(args), args.pipeline_root)
    print(f"created recurring run {job_id} ({args.cron}) on {args.host}")
    return errors.OK
