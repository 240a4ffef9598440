"""`submit` and `schedule` of a target whose engine is a service (Kubeflow Pipelines, Vertex AI): the package, the
run's name and parameters go to the engine, and one line says what it started.

The engine module offers submit(package, name, arguments, pipeline_root, where, settings) and schedule(package,
name, cron, arguments, pipeline_root, where, settings), each returning the id the engine gave. `where` is the
value of the flag that selected the target (a KFP endpoint, a Google Cloud project); `settings` are the target's
own settings of the command (SETTINGS), read from their flags.
"""

from __future__ import annotations

import argparse
import types

from cli import flags
from contract import errors


def commands(engine: types.ModuleType, settings: type, started: str, scheduled: str):
    """(submit, schedule) of a target module. `started` and `scheduled` are the lines printed, formatted with
    `id`, `where` and (scheduled) `cron`."""

    def submit(args: argparse.Namespace) -> int:
        where, own = _place(args, settings)
        run_id = engine.submit(flags.package(args), args.run_name, flags.run_arguments(args), args.pipeline_root,
                               where, own)
        print(started.format(id=run_id, where=where))
        return errors.OK

    def schedule(args: argparse.Namespace) -> int:
        where, own = _place(args, settings)
        job_id = engine.schedule(flags.package(args), args.job_name, args.cron, flags.run_arguments(args),
                                 args.pipeline_root, where, own)
        print(scheduled.format(id=job_id, where=where, cron=args.cron))
        return errors.OK

    return submit, schedule


def _place(args: argparse.Namespace, settings: type):
    """(the selecting flag's value, the target's own settings): its settings are checked before the package."""
    own = flags.settings(args, settings)
    return getattr(args, args.target_flag.replace("-", "_")), own
