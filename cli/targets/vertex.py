"""Vertex AI Pipelines: TFX's own KubeflowV2DagRunner package, one pipeline job or a schedule
(orchestration.engines.vertex)."""

from __future__ import annotations

import argparse

from cli import flags, remote
from cli.targets.base import Takes
from contract import errors
from orchestration.engines import packages, vertex

NAME = "vertex"
HELP = "Vertex AI Pipelines"
ABOUT = {"compile": "TFX's KubeflowV2DagRunner package for Vertex AI Pipelines.",
         "submit": "one Vertex AI Pipelines job.", "schedule": "a Vertex AI Pipelines schedule (5-field cron)."}
SELECTS = {"submit": ("--vertex-project", {"help": "Google Cloud project for Vertex AI Pipelines."}),
           "schedule": ("--vertex-project", {"help": "Google Cloud project for a Vertex AI Pipelines schedule "
                                                     "(5-field cron)."})}
# The package carries everything else: Vertex AI keeps its own ML Metadata, and storage is the root's.
SETTINGS = {"submit": vertex.Location, "schedule": vertex.Location}
METADATA = ((), None)
# Its package has no source parameters (it trains on the spans under <root>/examples) and keeps its artifacts
# under <root>/pipeline_root, the pipeline root it is compiled with.
_PACKAGE = Takes(needs="compile one with `compile`")
_PIPELINE_ROOT = Takes("the job's pipeline root, a gs:// URI")
SHARED = {"compile": {"--image": Takes(needs="the container image with this project installed"),
                      "--root": Takes("a gs:// URI", needs="where the deployment keeps its data"),
                      "--beam-arg": Takes(), "--package": Takes()},
          "submit": {"--package": _PACKAGE, "--run-name": Takes(), "--pipeline-root": _PIPELINE_ROOT},
          "schedule": {"--cron": Takes("5 fields, e.g. '0 3 * * *'", needs="when runs start"), "--package": _PACKAGE,
                       "--job-name": Takes(), "--pipeline-root": _PIPELINE_ROOT}}
submit, schedule = remote.commands(vertex, vertex.Location, started="started Vertex AI pipeline job {id}",
                                   scheduled="created Vertex AI schedule {id} ({cron})")


def compile(args: argparse.Namespace, config) -> int:
    tuning = flags.tuning_from_args(args, config.training)
    path = vertex.compile_vertex_package(config, args.package, image=args.image, root=args.root,
                                         beam_args=args.beam_args or [], tuning=tuning,
                                         fixed_settings=flags.fixed_settings(args))
    print(f"wrote Vertex AI Pipelines package {path}")
    if tuning is not None:
        print(packages.tuner_line(tuning))
    return errors.OK


def add_flags(command: str, parser: argparse.ArgumentParser) -> None:
    """No flags beyond its settings'."""


def check_package(package: str, arguments: dict) -> None:
    packages.check_package(package, arguments)
