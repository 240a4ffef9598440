"""Kubeflow Pipelines 2.x: a package authored with the kfp SDK (orchestration.engines.kubeflow), one run or a recurring
run on a cluster's API (orchestration.engines.kfp_runs)."""

from __future__ import annotations

import argparse
import dataclasses
import os

from cli import flags, remote
from cli.targets.base import Takes
from contract import errors
from orchestration.engines import kfp_runs, kubeflow, packages
from orchestration.serving import kserve

NAME = "kubeflow"
HELP = "open-source Kubeflow Pipelines 2.x"
ABOUT = {"compile": "a package for open-source Kubeflow Pipelines 2.x, authored with the kfp SDK: an ingest task, "
                    "one task per TFX node (TFX's launcher on a shared ML Metadata store), a report task.",
         "submit": "one run on a Kubeflow Pipelines cluster.",
         "schedule": "a recurring run of a compiled package on Kubeflow Pipelines (6-field cron, seconds first, at "
                     "most one run at a time): the pipeline's, or the drift check's that `compile --monitor-package` "
                     "writes (give it its own --job-name)."}
SELECTS = {"submit": ("--host", {"help": "KFP API endpoint, e.g. https://kfp.example.com."}),
           "schedule": ("--host", {"help": "KFP API endpoint for a recurring run (6-field cron, seconds first, at "
                                           "most one run at a time)."})}
SETTINGS = {"compile": kubeflow.Deployment, "submit": kfp_runs.Cluster, "schedule": kfp_runs.Cluster}
# Every task of a run reaches one ML Metadata store: the cluster's gRPC service, or SQLite for a rehearsal.
METADATA = (("grpc", "sqlite"), kubeflow.DEFAULT_METADATA_STORE)
_PACKAGE = Takes(needs="compile one with `compile`")
_RUN = {"--data-dir": Takes("sets the package's source parameter (default: the one given to compile)"),
        "--source-kind": Takes("sets the package's source_kind parameter (default: the kind given to compile)"),
        "--pipeline-root": Takes("KFP's pipeline root for this run")}
SHARED = {"compile": {"--image": Takes(needs="the container image with this project installed"),
                      "--root": Takes("a gs:// URI, or an absolute path on the PVC (--pvc) or, for a rehearsal on "
                                      "this machine, a local one", needs="where the deployment keeps its data"),
                      "--pipeline-root": Takes("where KFP keeps its own artifacts (run page metrics and report); "
                                               "default: <root>/kfp for a gs:// root, else the cluster's default"),
                      "--beam-arg": Takes(), "--package": Takes()},
          "submit": {"--package": _PACKAGE, "--run-name": Takes(), **_RUN},
          "schedule": {"--cron": Takes("6 fields, seconds first, e.g. '0 0 3 * * *'", needs="when runs start"),
                       "--package": _PACKAGE, "--job-name": Takes(), **_RUN}}
_SERVING_OWN = tuple(f.name for f in dataclasses.fields(kserve.Serving) if f.name not in flags.SERVING_TARGET)
submit, schedule = remote.commands(kfp_runs, kfp_runs.Cluster, started="started run {id} on {where}",
                                   scheduled="created recurring run {id} ({cron}) on {where}")


def add_flags(command: str, parser: argparse.ArgumentParser) -> None:
    if command == "compile":
        flags.add_data_dir(parser, "kubeflow: the source each run ingests (a path the tasks can read, or gs://): an "
                                   "image folder, a Parquet file or folder, or a TFDS data_dir, as --source-kind says; "
                                   "the package's `source` parameter, which submit and schedule can change. Default: "
                                   "none (each run trains on the spans already under <root>/examples).", default="")
        flags.add_source_kind(parser, "kubeflow: what --data-dir holds (the package's `source_kind` parameter). "
                                      "Default: folder.", default="folder")
        serving = parser.add_argument_group("serving on the cluster (kubeflow: a KServe InferenceService manifest "
                                            "written beside the package)")
        flags.add_serving_target_flags(serving, "a rollout task after the Pusher starts a new revision of the "
                                                "InferenceService (KServe copies a gs:// root once)")
        flags.add_settings_flags(serving, kserve.Serving, prefix="serving-", only=_SERVING_OWN)
        parser.add_argument("--monitor-package", metavar="PATH", type=flags.local_path,
                            help="Also write the monitoring package (.yaml) here: one task that runs `monitor` on "
                                 "--root with the same store, volume and image as the pipeline's tasks (monitor's "
                                 "default window and false-alarm rate). Schedule it beside the pipeline's: "
                                 "`schedule --host URL --package PATH --cron ... --job-name cats-vs-dogs-monitoring`.")


def compile(args: argparse.Namespace, config) -> int:
    serving = kserve.Serving(**flags.settings_from(args, kserve.Serving, prefix="serving_"))
    deployment = kubeflow.Deployment(
        image=args.image, root=args.root, data_dir=args.data_dir, source_kind=args.source_kind,
        metadata_store=args.metadata_store, beam_args=tuple(args.beam_args or ()),
        kfp_pipeline_root=args.pipeline_root, serving=serving if args.serving_rollout else None,
        **flags.settings_from(args, kubeflow.Deployment))
    tuning = flags.tuning_from_args(args, config.training)
    if args.monitor_package:
        packages.check_package_name(args.monitor_package)
        if os.path.abspath(args.monitor_package) == os.path.abspath(args.package):
            raise flags.SettingsError(f"--monitor-package {args.monitor_package} is --package's file: give each "
                                      "package its own")
    for line in kubeflow.compile_for_cluster(config, args.package, deployment, serving, tuning,
                                             flags.fixed_settings(args)):
        print(line)
    if args.monitor_package:
        from monitoring.settings import MonitorSettings

        path = kubeflow.compile_monitor_package(config, args.monitor_package, deployment, MonitorSettings())
        print(f"wrote the monitoring package {path}: each run checks the traffic under "
              f"{deployment.locations.traffic_root} against the served model's data")
    return errors.OK


def check_package(package: str, arguments: dict) -> None:
    packages.check_package(package, arguments)
