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
    from orchestration import kserve, kubeflow

    flags.add_settings_flags(parser, kubeflow.Deployment)
    parser.add_argument("--source-kind", choices=flags.source_kinds(), default=kubeflow.Deployment.source_kind,
                        help="kubeflow: what --data-dir holds (the package's `source_kind` parameter). Default: "
                             f"{kubeflow.Deployment.source_kind}.")
    flags.add_store_flags(parser, "kubeflow: the ML Metadata gRPC service all tasks share. Default: "
                                  f"{kubeflow.DEFAULT_METADATA_STORE.split('://')[-1]}, which every KFP install runs.",
                          "kubeflow: a SQLite ML Metadata file instead, for a local rehearsal (submit --local).")
    serving = parser.add_argument_group("serving on the cluster (kubeflow: a KServe InferenceService manifest "
                                        "written beside the package)")
    flags.add_serving_target_flags(serving, "a rollout task after the Pusher starts a new revision of the "
                                            "InferenceService (KServe copies a gs:// root once)")
    flags.add_settings_flags(serving, kserve.Serving, prefix="serving-",
                             only=tuple(f.name for f in dataclasses.fields(kserve.Serving)
                                        if f.name not in flags.SERVING_TARGET))


def compile(args: argparse.Namespace, config) -> int:
    from contract import metadata
    from orchestration import kserve, kubeflow

    if args.metadata_sqlite:
        store = metadata.sqlite_store(args.metadata_sqlite)
    elif args.metadata_grpc:
        store = metadata.grpc_store(args.metadata_grpc)
    else:
        store = kubeflow.DEFAULT_METADATA_STORE
    serving = kserve.Serving(**flags.settings_from(args, kserve.Serving, prefix="serving_"))
    deployment = kubeflow.Deployment(
        image=args.image, root=args.root, metadata_store=store, beam_args=tuple(args.beam_args or ()),
        kfp_pipeline_root=args.pipeline_root, source_kind=args.source_kind,
        serving=serving if args.serving_rollout else None, **flags.settings_from(args, kubeflow.Deployment))
    for line in kubeflow.compile_for_cluster(config, args.package, deployment, serving):
        print(line)
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
