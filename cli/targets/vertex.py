"""Vertex AI Pipelines: TFX's own KubeflowV2DagRunner package, one pipeline job or a schedule
(orchestration.vertex)."""

from __future__ import annotations

import argparse
import dataclasses

from cli import flags
from cli.flags import SettingsError
from contract import errors
from contract.settings import setting

NAME = "vertex"
HELP = "Vertex AI Pipelines"
SELECTS = {"submit": ("--vertex-project", {"help": "Google Cloud project for Vertex AI Pipelines."}),
           "schedule": ("--vertex-project", {"help": "Google Cloud project for a Vertex AI Pipelines schedule "
                                                     "(5-field cron)."})}


@dataclasses.dataclass(frozen=True)
class Location:
    """Where a job or a schedule goes, besides --vertex-project."""

    region: str | None = setting(None, "With --vertex-project: the region, e.g. europe-west4.")

    def __post_init__(self):
        if not self.region:
            raise SettingsError("--vertex-project needs --region")


# The package carries everything else: Vertex AI keeps its own ML Metadata, and storage is the root's.
SETTINGS = {"submit": Location, "schedule": Location}
METADATA = ((), None)


def compile(args: argparse.Namespace, config) -> int:
    from orchestration import vertex

    path = vertex.compile_vertex_package(config, args.package, image=args.image, root=args.root,
                                         beam_args=args.beam_args or [])
    print(f"wrote Vertex AI Pipelines package {path}")
    return errors.OK


def submit(args: argparse.Namespace) -> int:
    from orchestration import vertex

    location = flags.settings(args, Location)
    name = vertex.submit(flags.package(args), args.vertex_project, location.region, args.run_name,
                         flags.run_arguments(args), args.pipeline_root)
    print(f"started Vertex AI pipeline job {name}")
    return errors.OK


def schedule(args: argparse.Namespace) -> int:
    from orchestration import vertex

    location = flags.settings(args, Location)
    name = vertex.schedule(flags.package(args), args.vertex_project, location.region, args.job_name, args.cron,
                           flags.run_arguments(args), args.pipeline_root)
    print(f"created Vertex AI schedule {name} ({args.cron})")
    return errors.OK
