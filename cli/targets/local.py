"""This machine: a compiled Kubeflow package rehearsed with the kfp SDK's local runner (orchestration.engines.kfp_runs),
and retraining from this user's crontab (orchestration.engines.local_schedule)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import sys

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
         "schedule": "a crontab line that runs `pipeline_runner.py run` on the source (--data-dir, else the one the "
                     "root's last run was given); each nightly run trains with the settings the root's runs were "
                     "given (its run_settings.json: change them with a `run` given other flags); overlapping local "
                     "runs exit at once on the run lock."}
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
    fresh_task_processes: bool = setting(False, "With --local: each task in a fresh process that imports "
                                         "TensorFlow, TFX and Beam itself, as a pod does (seconds more a task); by "
                                         "default the tasks start from one process that imported them once.")


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
                       "--data-dir": Takes("the image folder each run ingests (default: the source the root's last "
                                           "run was given)")}}


def add_flags(command: str, parser: argparse.ArgumentParser) -> None:
    if command == "schedule":
        flags.add_output_dir(parser, "With --local: the run's output directory.")


def check_package(package: str, arguments: dict) -> None:
    from orchestration.engines import packages

    packages.check_package(package, arguments)


def submit(args: argparse.Namespace) -> int:
    from orchestration.engines import kfp_runs, packages

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
    terminal = sys.stdout  # kfp.local's own output goes to the run's log file while it runs
    run = kfp_runs.run_locally(package, flags.run_arguments(args), str(rehearsal.kfp_outputs.resolve()),
                               say=lambda line: print(line, file=terminal, flush=True),
                               warm=not rehearsal.fresh_task_processes)
    if packages.is_monitor_package(package):
        if run.failure:
            raise errors.RunFailedError(f"monitoring run {run.run_id} {run.failure}")
        print(f"local monitoring run finished: its drift report is under {RunLayout(root).monitoring_dir}")
        return errors.OK
    folder = RunLayout(root).run_dir(run.run_id)
    if run.failure:
        reason = kfp_runs.run_outcome(folder) or run.failure  # the exit handler's word, else kfp's
        raise errors.RunFailedError(f"run {run.run_id} {reason}\nsummary and report in {folder}")
    print(f"local run finished: {_outcome(folder)}; summary and report in {folder}")
    return errors.OK


def _outcome(folder: str) -> str:
    """What the run's summary says it did (blessed, pushed), in a few words, as the root's run list has it."""
    from contract import json_files, layout
    from reporting import run_index

    try:  # a local file: read without TensorFlow's file layer, which this process has not imported
        return run_index.outcome(json_files.read_local_json(os.path.join(folder, layout.SUMMARY_FILE)))
    except (json_files.UnreadableFileError, OSError, ValueError) as error:
        return f"its summary cannot be read ({errors.first_line(error)})"


def schedule(args: argparse.Namespace) -> int:
    from cli import local_run
    from contract.layout import RunLayout
    from orchestration.engines import local_schedule
    from orchestration.root import marker, run_settings

    crontab = flags.settings(args, Crontab)
    flags.check_output_dir(args.output_dir)  # a root every night's run would refuse is refused now
    found = marker.inspect(args.output_dir)  # a folder of the user's is refused here, its files unread
    recorded = run_settings.read(args.output_dir) if found.state == marker.ROOT else None
    where = run_settings.path_of(args.output_dir)
    if args.data_dir is not None:
        source = {"kind": "folder", "location": os.path.abspath(os.path.expanduser(args.data_dir))}
    elif recorded is not None and recorded.source is not None:
        source = recorded.source
    else:
        raise SettingsError(f"schedule --local needs --data-dir (the folder each nightly run ingests): "
                            f"{args.output_dir} has no source recorded by an earlier `run` there")
    settings = local_run.checked_record(recorded.settings if recorded else {}, where)
    if not settings.get("tune"):
        settings = {name: value for name, value in settings.items() if not name.startswith("tune_")}
    _check_recorded(settings, source, where)
    flag, location = _recorded_source(source, local_run.SOURCE_FLAGS)
    if location is not None:  # else each night's run would be refused
        flags.check_source_apart(args.output_dir, flag, location)
        if flag == "--data-dir":
            flags.check_not_a_queue(flag, location, args.output_dir)
    entries = [(local_schedule.cron_line(args.cron, PROJECT_DIR, location, args.output_dir, source_flag=flag),
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
    print(_settings_line(settings, where), file=sys.stderr)
    log = RunLayout(args.output_dir).schedule_log
    print(f"to run it now as cron will (its output goes to the log, {log}):\n  "
          + local_schedule.shell_command(entries[0][0]), file=sys.stderr)
    if len(entries) > 1:
        print("and the drift check as cron will (the same log):\n  " + local_schedule.shell_command(entries[1][0]),
              file=sys.stderr)
    return errors.OK


def _check_recorded(settings: dict, source: dict, where: pathlib.Path) -> None:
    """The source must be there and the recorded settings must still make a run (values in range, the weights
    file there, a search with a budget): a line that fails every night is refused now, naming what."""
    import config as config_lib
    from cli import local_run
    from orchestration.engines import local

    fields = {field.name for _, field in config_lib.section_fields()}
    try:
        local.check_source(_as_source(source))
    except errors.CommandError as error:
        raise SettingsError(f"each scheduled run would stop: {error}") from None
    try:
        config, _ = config_lib.from_user_settings({k: v for k, v in settings.items() if k in fields})
        local_run.check_local_files(config)
        if settings.get("tune"):
            config_lib.TuningConfig(**{k[len("tune_"):]: v for k, v in settings.items() if k.startswith("tune_")})
    except errors.CommandError as error:
        raise SettingsError(f"each scheduled run would stop: {error} (recorded in {where}; a `run` given another "
                            "value there records it)") from None


def _as_source(source: dict):
    from orchestration.engines import local

    if source["kind"] == local.DEMO:
        return local.Source(local.DEMO, demo_images=source["images"])
    return local.Source(source["kind"], pathlib.Path(source["location"]))


def _recorded_source(source: dict, source_flags: dict) -> tuple[str, pathlib.Path | None]:
    """(the flag of `run`, its path or None) of a recorded source."""
    if source["kind"] == "demo":
        return f"--demo --demo-images {int(source['images'])}", None
    return source_flags[source["kind"]][0], pathlib.Path(source["location"])


def _settings_line(settings: dict, where: pathlib.Path) -> str:
    """What the nightly run trains with, said beside the printed line."""
    import config as config_lib

    if not settings:
        return ("each run trains with the default settings (no run here recorded any in "
                f"{where}; --weights imagenet downloads its weights): a `run` given flags there records them")
    shown = " ".join(config_lib.as_flag(name, value) for name, value in sorted(settings.items()))
    return f"each run trains with the settings recorded in {where}: {shown} (a `run` given other flags changes them)"
