"""Vertex AI Pipelines: compile TFX's own package for it, submit and schedule it.

The package is TFX's KubeflowV2DagRunner output, which the managed service runs
natively (spec 2.1; only TFX's built-in resolvers). Runs go through
google-cloud-aiplatform's PipelineJob, with the pipeline root passed explicitly
(Vertex needs a gs:// root for its artifacts).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Collection

from config import PipelineConfig, TuningConfig
from contract import metadata
from contract.errors import CommandError, first_line
from contract.layout import RunLayout
from contract.settings import setting
from orchestration.engines.local_schedule import check_cron
from orchestration.engines.packages import (
    IMAGE_SCHEMA_PATH,
    TargetError,
    check_package_name,
    default_beam_args,
    package_pipeline_root,
)


class VertexUnreachableError(CommandError, RuntimeError):
    """Vertex AI could not be reached or refused the request; the message names the project and region."""


def _job(package: str, project: str, region: str, display_name: str, arguments: dict, pipeline_root: str | None):
    from google.cloud import aiplatform

    if pipeline_root is None:
        pipeline_root = package_pipeline_root(package)
    try:
        aiplatform.init(project=project, location=region)
        return aiplatform.PipelineJob(display_name=display_name, template_path=package, pipeline_root=pipeline_root,
                                      parameter_values=arguments or None, project=project, location=region)
    except Exception as error:  # google.auth and google.api_core raise many types
        raise VertexUnreachableError(_message(project, region, error)) from None


def _message(project: str, region: str, error: Exception) -> str:
    return f"cannot reach Vertex AI Pipelines for project {project} in {region}: {first_line(error)}"


@dataclasses.dataclass(frozen=True)
class Location:
    """Where a job or a schedule goes in the project."""

    region: str | None = setting(None, "With --vertex-project: the region, e.g. europe-west4.")

    def __post_init__(self):
        if not self.region:
            raise TargetError("--vertex-project needs --region")


def submit(package: str, display_name: str, arguments: dict, pipeline_root: str | None, project: str,
           location: Location) -> str:
    """Starts one pipeline job; returns its resource name."""
    job = _job(package, project, location.region, display_name, arguments, pipeline_root)
    try:
        job.submit()
    except Exception as error:
        raise VertexUnreachableError(_message(project, location.region, error)) from None
    return job.resource_name


def schedule(package: str, display_name: str, cron: str, arguments: dict, pipeline_root: str | None,
             project: str, location: Location) -> str:
    """Creates a schedule (5-field cron), one run at a time; returns its resource name."""
    check_cron(cron)  # Vertex takes the same 5-field crontab form
    job = _job(package, project, location.region, display_name, arguments, pipeline_root)
    try:
        created = job.create_schedule(cron=cron, display_name=display_name, max_concurrent_run_count=1)
    except Exception as error:
        raise VertexUnreachableError(_message(project, location.region, error)) from None
    return created.resource_name


def compile_vertex_package(config: PipelineConfig, output_file: str, *, image: str, root: str,
                           beam_args: list[str], tuning: TuningConfig | None = None,
                           fixed_settings: Collection[str] = ()) -> str:
    """Writes TFX's own KubeflowV2DagRunner package for Vertex AI Pipelines; returns its path. With `tuning`,
    TFX's Tuner runs before the Trainer in every run; without, the Trainer takes the newest search's result
    (TFX's LatestArtifactStrategy, which this runner compiles), as pipeline.create_pipeline says. Its resolvers
    read only `root`'s artifacts (scope_to_root)."""
    from tfx import v1 as tfx
    from tfx import version
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

    from pipeline import pipeline as pipeline_lib

    check_package_name(output_file)
    _filter_string(root)
    if config.data.span_window > 1:
        raise TargetError("--span-window > 1 needs TFX's SpanRangeStrategy, which the vertex target cannot "
                          "compile (only TFX's LatestBlessedModelStrategy); use the kubeflow target or "
                          "--span-window 1")
    where = RunLayout(root)
    pipeline = pipeline_lib.create_pipeline(
        config, examples_root=where.examples_root, pipeline_root=where.pipeline_root, serving_dir=where.serving_dir,
        beam_pipeline_args=beam_args or default_beam_args(), builtin_resolver=True, schema_path=IMAGE_SCHEMA_PATH,
        tuning=tuning, fixed_settings=fixed_settings)
    output_dir, filename = os.path.split(os.path.abspath(output_file))
    os.makedirs(output_dir, exist_ok=True)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image,
                                                                        use_pipeline_spec_2_1=True),
        output_dir=output_dir, output_filename=filename)
    job = runner.run(pipeline, write_out=False)
    scope_to_root(job["pipelineSpec"]["deploymentSpec"]["executors"], root.rstrip("/"))
    path = os.path.join(output_dir, filename)
    kubeflow_v2_dag_runner._write_pipeline_spec_to_file(  # TFX's own YAML writer, as write_out=True would
        job, f"This is converted from TFX pipeline from tfx-{version.__version__}.", path)
    return path


# The artifact types Vertex's resolvers look up, and the nodes that write them (each stamps its output with the
# root it is given: contract.metadata.stamp_root).
STAMPED_TYPES = {"tfx.HyperParameters": metadata.TUNER, "tfx.ModelBlessing": metadata.EVALUATOR}


def scope_to_root(executors: dict, root: str) -> None:
    """Limits every resolver query of the compiled package (`executors`: its deploymentSpec's) to the artifacts of
    `root`'s pipeline, and has the nodes that write those artifacts stamp them with `root`.

    A query without in_context(...) is scoped to the pipeline's context (KFP's pipeline spec), which Vertex
    ML Metadata keys by the pipeline's name alone: every deployment of this project (all named cats-vs-dogs) in
    the project and region shares it, and TFX's queries (schema title, state, blessed) would take another root's newest
    search or blessed model. A query for a Model by the name a blessing recorded is scoped through that
    blessing. Any other query is an error here, so no resolver goes unscoped."""
    condition = f'metadata.{metadata.ROOT}.string_value="{_filter_string(root)}"'
    for label, executor in executors.items():
        for output, query in executor.get("resolver", {}).get("outputArtifactQueries", {}).items():
            kind = re.match(r'schema_title="([^"]+)"', query["filter"])
            if kind and kind.group(1) in STAMPED_TYPES:
                query["filter"] += f" AND {condition}"
            elif not re.search(r"AND name=\"\{\{\$\.inputs\.artifacts\[", query["filter"]):
                raise ValueError(f"{label}: the resolver query of {output} ({query['filter']}) has no root scope")
    for node in STAMPED_TYPES.values():
        container = executors.get(f"{node}_executor", {}).get("container")
        if container is not None:
            container.setdefault("env", []).append({"name": metadata.ROOT_ENV, "value": root})


def _filter_string(root: str) -> str:
    """`root` as a string of Vertex's filter syntax, where `*` is a wildcard and a quote ends the string."""
    if any(character in root for character in '"\\*'):
        raise TargetError(f"--root {root}: the vertex target cannot use a root with a quote, a backslash or a * "
                          "(its resolvers find this root's artifacts by a filter on the root)")
    return root
