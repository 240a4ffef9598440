"""This machine: a compiled Kubeflow package rehearsed with the kfp SDK's local runner (orchestration.kfp_runs),
and retraining from this user's crontab (orchestration.local_schedule)."""

from __future__ import annotations

import argparse
import dataclasses
import pathlib

from cli import flags
from cli.flags import SettingsError
from cli.targets.base import Takes
from contract import errors
from contract import metadata as metadata_lib
from contract.layout import RunLayout
from contract.settings import setting

NAME = "local"
HELP = "this machine"
ABOUT = {"submit": "run the package on this machine with the kfp SDK's local runner (a rehearsal before a cluster; "
                   "compile it with --metadata-sqlite and a local --root).",
         "schedule": "a crontab line that runs `pipeline_runner.py run`; overlapping local runs exit at once on the "
                     "run lock."}
SELECTS = {"submit": ("--local", {"action": "store_true",
                                  "help": "Run the package here with kfp.local's SubprocessRunner (a rehearsal "
                                          "before a cluster; compile it with --metadata-sqlite and a local --root)."}),
           "schedule": ("--local", {"action": "store_true",
                                    "help": "Print (or --install) a crontab entry that runs `pipeline_runner.py "
                                            "run` instead; overlapping local runs exit at once on the run lock."})}
PROJECT_DIR = pathlib.Path(__file__).resolve().parents[2]  # where pipeline_runner.py is, for cron


@dataclasses.dataclass(frozen=True)
class Rehearsal:
    kfp_outputs: pathlib.Path = setting(pathlib.Path("runs/kfp-local"), "With --local: where kfp.local keeps the "
                                        "tasks' KFP artifacts and logs.")


@dataclasses.dataclass(frozen=True)
class Crontab:
    install: bool = setting(False, "With --local: add the entry to this user's crontab (an existing entry for the "
                                   "same output directory is replaced).")
    monitor_cron: str = setting("", "With --local: also an entry that runs `monitor` on this 5-field cron schedule "
                                    "(e.g. '30 * * * *'): a drift check of the served traffic, which queues the "
                                    "window's images for labels when it drifted.")


SETTINGS = {"submit": Rehearsal, "schedule": Crontab}
METADATA = ((), None)  # it compiles nothing
SHARED = {"submit": {"--package": Takes("a package compiled with a local --root and --metadata-sqlite",
                                        needs="compile one with `compile`"),
                     "--data-dir": Takes("sets the package's source parameter (default: the one given to compile)"),
                     "--source-kind": Takes("sets the package's source_kind parameter (default: the kind given to "
                                            "compile)")},
          # cron runs `run --data-dir`: an image folder, in this project's folder, into --output-dir
          "schedule": {"--cron": Takes("5 fields, e.g. '0 3 * * *'", needs="when runs start"),
                       "--data-dir": Takes("the image folder each run ingests", needs="the folder each run ingests")}}


def add_flags(command: str, parser: argparse.ArgumentParser) -> None:
    if command == "schedule":
        flags.add_output_dir(parser, "With --local: the run's output directory.")


def check_package(package: str, arguments: dict) -> None:
    from orchestration import packages

    packages.check_package(package, arguments)


def submit(args: argparse.Namespace) -> int:
    from orchestration import kfp_runs, packages

    package = flags.package(args)
    root = packages.package_root(package)
    if root is None or "://" in root:
        raise SettingsError(f"{package} keeps its data at {root}: a local run needs a package compiled with a "
                            "local --root and --metadata-sqlite")
    if packages.package_metadata_store(package) == metadata_lib.KFP_METADATA_SERVICE:
        raise SettingsError(f"{package} uses the cluster's ML Metadata service; compile it with "
                            "--metadata-sqlite PATH (or --metadata-grpc HOST:PORT of a store this machine reaches) "
                            "to run it here")
    # No lock here: the package's first task takes the root's lease, as on a cluster.
    rehearsal = flags.settings(args, Rehearsal)
    run = kfp_runs.run_locally(package, flags.run_arguments(args), str(rehearsal.kfp_outputs.resolve()))
    if packages.is_monitor_package(package):
        if run.failure:
            raise errors.RunFailedError(f"monitoring run {run.run_id} {run.failure}")
        print(f"local monitoring run finished: its drift report is under {RunLayout(root).monitoring_dir}")
        return errors.OK
    folder = RunLayout(root).run_dir(run.run_id)
    if run.failure:
        reason = kfp_runs.run_outcome(folder) or run.failure  # the exit handler's word, else kfp's
        raise errors.RunFailedError(f"run {run.run_id} {reason}\nsummary and report in {folder}")
    print(f"local run finished: summary and report in {folder}")
    return errors.OK


def schedule(args: argparse.Namespace) -> int:
    from orchestration import local_schedule

    crontab = flags.settings(args, Crontab)
    entries = [(local_schedule.cron_line(args.cron, PROJECT_DIR, pathlib.Path(args.data_dir), args.output_dir),
                local_schedule.RUN_MARK)]
    if crontab.monitor_cron:
        entries.append((local_schedule.monitor_line(crontab.monitor_cron, PROJECT_DIR, args.output_dir),
                        local_schedule.MONITOR_MARK))
    for line, mark in entries:  # every line is checked before the crontab is touched
        if crontab.install:
            local_schedule.install(line, args.output_dir, mark)
            print(f"installed in crontab: {line}")
        else:
            print(line)
    return errors.OK
