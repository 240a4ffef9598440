"""Vertex AI Pipelines: TFX's own KubeflowV2DagRunner package, one pipeline job or a schedule
(orchestration.vertex)."""

from __future__ import annotations

import argparse

from cli import flags, remote
from contract import errors
from orchestration import kubeflow, vertex

NAME = "vertex"
HELP = "Vertex AI Pipelines"
SELECTS = {"submit": ("--vertex-project", {"help": "Google Cloud project for Vertex AI Pipelines."}),
           "schedule": ("--vertex-project", {"help": "Google Cloud project for a Vertex AI Pipelines schedule "
                                                     "(5-field cron)."})}
# The package carries everything else: Vertex AI keeps its own ML Metadata, and storage is the root's.
SETTINGS = {"submit": vertex.Location, "schedule": vertex.Location}
METADATA = ((), None)
submit, schedule = remote.commands(vertex, vertex.Location, started="started Vertex AI pipeline job {id}",
                                   scheduled="created Vertex AI schedule {id} ({cron})")


def compile(args: argparse.Namespace, config) -> int:
    tuning = flags.tuning_from_args(args, config.training)
    path = vertex.compile_vertex_package(config, args.package, image=args.image, root=args.root,
                                         beam_args=args.beam_args or [], tuning=tuning,
                                         fixed_settings=flags.fixed_settings(args))
    print(f"wrote Vertex AI Pipelines package {path}")
    if tuning is not None:
        print(kubeflow.tuner_line(tuning))
    return errors.OK
