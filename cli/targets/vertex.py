"""Vertex AI Pipelines: TFX's own KubeflowV2DagRunner package, one pipeline job or a schedule
(orchestration.vertex)."""

from __future__ import annotations

import argparse

from cli import flags
from cli.flags import SettingsError
from contract import errors

NAME = "vertex"
HELP = "Vertex AI Pipelines"
SELECTS = {"submit": ("--vertex-project", {"help": "Google Cloud project for Vertex AI Pipelines."}),
           "schedule": ("--vertex-project", {"help": "Google Cloud project for a Vertex AI Pipelines schedule "
                                                     "(5-field cron)."})}


def add_flags(command: str, parser: argparse.ArgumentParser) -> None:
    if command != "compile":  # the package carries everything else: TFX's own metadata store and storage
        parser.add_argument("--region", help="With --vertex-project: the region, e.g. europe-west4.")


def _region(args: argparse.Namespace) -> str:
    if not args.region:
        raise SettingsError("--vertex-project needs --region")
    return args.region


def compile(args: argparse.Namespace, config) -> int:
    from orchestration import vertex

    path = vertex.compile_vertex_package(config, args.package, image=args.image, root=args.root,
                                         beam_args=args.beam_args or [])
    print(f"wrote Vertex AI Pipelines package {path}")
    return errors.OK


def submit(args: argparse.Namespace) -> int:
    from orchestration import vertex

    name = vertex.submit(flags.package(args), args.vertex_project, _region(args), args.run_name,
                         flags.run_arguments(args), args.pipeline_root)
    print(f"started Vertex AI pipeline job {name}")
    return errors.OK


def schedule(args: argparse.Namespace) -> int:
    from orchestration import vertex

    name = vertex.schedule(flags.package(args), args.vertex_project, _region(args), args.job_name, args.cron,
                           flags.run_arguments(args), args.pipeline_root)
    print(f"created Vertex AI schedule {name} ({args.cron})")
    return errors.OK
