"""Kubeflow Pipelines: compile the pipeline to a KFP v2 package, submit it, schedule it.

The package comes from the same pipeline.create_pipeline the local run uses;
only paths, metadata and runner differ. KFP keeps metadata itself, so no
metadata connection goes into the package.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import tempfile

from pipeline import pipeline as pipeline_lib
from pipeline.config import PipelineConfig

# The Dockerfile copies the project to /pipeline: the schema's path inside the image.
IMAGE_PROJECT_DIR = "/pipeline"
IMAGE_SCHEMA_PATH = posixpath.join(IMAGE_PROJECT_DIR, "pipeline", "schema", "schema.pbtxt")


class KubeflowUnreachableError(RuntimeError):
    """The KFP endpoint did not answer; the message names it."""


@dataclasses.dataclass(frozen=True)
class PipelineLocations:
    """Where a deployed pipeline keeps its data, all under one root (a gs:// or other URI)."""

    root: str

    @property
    def examples_root(self) -> str:
        return posixpath.join(self.root, "examples")

    @property
    def pipeline_root(self) -> str:
        return posixpath.join(self.root, "pipeline_root")

    @property
    def serving_dir(self) -> str:
        return posixpath.join(self.root, "serving_model")


def kubeflow_beam_args(workers: int = 0) -> list[str]:
    """Beam on the component's own pod: DirectRunner, one process per core.

    For Dataflow pass e.g. --runner=DataflowRunner --project=P --region=R
    --temp_location=gs://B/tmp through `compile --beam-arg`.
    """
    return pipeline_lib.local_beam_args(workers)


def build_pipeline(config: PipelineConfig, locations: PipelineLocations, beam_args: list[str],
                   trainer_cpu: float | None = None, trainer_memory: str | None = None):
    from kfp.pipeline_spec import pipeline_spec_pb2

    pipeline = pipeline_lib.create_pipeline(
        config, examples_root=locations.examples_root, pipeline_root=locations.pipeline_root,
        serving_dir=locations.serving_dir, beam_pipeline_args=beam_args, builtin_resolver=True,
        schema_path=IMAGE_SCHEMA_PATH)
    if trainer_cpu or trainer_memory:
        resources = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec()
        if trainer_cpu:
            resources.cpu_limit = trainer_cpu
        if trainer_memory:
            resources.memory_limit = _memory_in_gb(trainer_memory)
        trainer = next(c for c in pipeline.components if c.id == pipeline_lib.TRAINER)
        trainer.with_platform_config(resources)
    return pipeline


def _memory_in_gb(text: str) -> float:
    units = {"G": 1.0, "Gi": 1.073741824, "M": 0.001, "Mi": 0.001048576}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


def compile_package(config: PipelineConfig, output_file: str, *, image: str, root: str,
                    beam_args: list[str], trainer_cpu: float | None = None,
                    trainer_memory: str | None = None) -> str:
    """Writes the KFP v2 pipeline package (YAML) and returns its path."""
    from tfx import v1 as tfx

    if not output_file.endswith((".yaml", ".yml")):
        raise ValueError(f"the package file must end in .yaml (KFP's client reads .yaml), got {output_file!r}")
    pipeline = build_pipeline(config, PipelineLocations(root), beam_args, trainer_cpu, trainer_memory)
    output_dir, filename = os.path.split(os.path.abspath(output_file))
    os.makedirs(output_dir, exist_ok=True)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=output_dir, output_filename=filename)
    runner.run(pipeline, write_out=True)
    return os.path.join(output_dir, filename)


def _client(host: str):
    import kfp

    try:
        client = kfp.Client(host=host)
        client.list_experiments(page_size=1)  # the client connects lazily: ask something now
    except Exception as error:  # urllib3, requests and kfp_server_api raise different types
        raise KubeflowUnreachableError(f"cannot reach Kubeflow Pipelines at {host}: {error}") from None
    return client


def submit(package: str, host: str, run_name: str, experiment: str) -> str:
    """Starts one run of the package; returns the run id."""
    client = _client(host)
    run = client.create_run_from_pipeline_package(package, arguments={}, run_name=run_name,
                                                  experiment_name=experiment, enable_caching=True)
    return run.run_id


def schedule(package: str, host: str, job_name: str, experiment: str, cron: str) -> str:
    """Creates a recurring run; `cron` has six fields, seconds first (KFP's format)."""
    check_kfp_cron(cron)
    client = _client(host)
    experiment_id = client.create_experiment(experiment).experiment_id
    job = client.create_recurring_run(experiment_id=experiment_id, job_name=job_name, cron_expression=cron,
                                      pipeline_package_path=package, enable_caching=True, max_concurrency=1)
    return job.recurring_run_id


def check_kfp_cron(cron: str) -> None:
    fields = cron.split()
    if len(fields) != 6:
        raise ValueError(f"KFP cron expressions have 6 fields (seconds first), e.g. '0 0 3 * * *'; got {cron!r}")


def compile_to_temp(config: PipelineConfig, **kwargs) -> str:
    """Compiles into a temporary file (for submit/schedule without a saved package)."""
    handle, path = tempfile.mkstemp(suffix=".yaml")
    os.close(handle)
    return compile_package(config, path, **kwargs)
