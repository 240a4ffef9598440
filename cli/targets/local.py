"""This machine: a compiled Kubeflow package rehearsed with the kfp SDK's local runner (orchestration.kfp_runs),
and retraining from this user's crontab (orchestration.local_schedule)."""

from __future__ import annotations

import argparse
import pathlib

from cli import flags
from cli.flags import SettingsError
from contract import errors
from contract.layout import RunLayout

NAME = "local"
HELP = "this machine"
SELECTS = {"submit": ("--local", {"action": "store_true",
                                  "help": "Run the package here with kfp.local's SubprocessRunner (a rehearsal "
                                          "before a cluster; compile it with --metadata-sqlite and a local --root)."}),
           "schedule": ("--local", {"action": "store_true",
                                    "help": "Print (or --install) a crontab entry that runs `pipeline_runner.py "
                                            "run` instead; overlapping local runs exit at once on the run lock."})}
PROJECT_DIR = pathlib.Path(__file__).resolve().parents[2]  # where pipeline_runner.py is, for cron


def add_flags(command: str, parser: argparse.ArgumentParser) -> None:
    if command == "submit":
        parser.add_argument("--kfp-outputs", type=pathlib.Path, default=pathlib.Path("runs/kfp-local"),
                            help="With --local: where kfp.local keeps the tasks' KFP artifacts and logs. "
                                 "Default: runs/kfp-local.")
    elif command == "schedule":
        flags.add_output_dir(parser, "With --local: the run's output directory.")
        parser.add_argument("--install", action="store_true",
                            help="With --local: add the entry to this user's crontab (an existing entry for the "
                                 "same output directory is replaced).")


def submit(args: argparse.Namespace) -> int:
    from orchestration import kfp_runs, kubeflow

    package = flags.package(args)
    root = kubeflow.package_root(package)
    if root is None or "://" in root:
        raise SettingsError(f"{package} keeps its data at {root}: a local run needs a package compiled with a "
                            "local --root and --metadata-sqlite")
    if kubeflow.package_metadata_store(package) == kubeflow.DEFAULT_METADATA_STORE:
        raise SettingsError(f"{package} uses the cluster's ML Metadata service; compile it with "
                            "--metadata-sqlite PATH (or --metadata-grpc HOST:PORT of a store this machine reaches) "
                            "to run it here")
    # No lock here: the package's first task takes the root's lease, as on a cluster.
    run = kfp_runs.run_locally(package, flags.run_arguments(args), str(args.kfp_outputs.resolve()))
    folder = RunLayout(root).run_dir(run.run_id)
    if run.failure:
        reason = kfp_runs.run_outcome(folder) or run.failure  # the exit handler's word, else kfp's
        raise errors.RunFailedError(f"run {run.run_id} {reason}\nsummary and report in {folder}")
    print(f"local run finished: summary and report in {folder}")
    return errors.OK


def schedule(args: argparse.Namespace) -> int:
    from orchestration import local_schedule

    if args.data_dir is None:
        raise SettingsError("--local needs --data-dir (the folder each run ingests)")
    line = local_schedule.cron_line(args.cron, PROJECT_DIR, pathlib.Path(args.data_dir), args.output_dir)
    if args.install:
        local_schedule.install(line, args.output_dir)
        print(f"installed in crontab: {line}")
    else:
        print(line)
    return errors.OK
