"""Vertex AI Pipelines: submit and schedule a package compiled with `compile --target vertex`.

Through google-cloud-aiplatform's PipelineJob, with the pipeline root passed
explicitly (Vertex needs a gs:// root for its artifacts).
"""

from __future__ import annotations

from contract.errors import first_line
from orchestration.kubeflow import package_pipeline_root
from orchestration.local_schedule import check_cron


class VertexUnreachableError(RuntimeError):
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


def submit(package: str, project: str, region: str, display_name: str, arguments: dict,
           pipeline_root: str | None) -> str:
    """Starts one pipeline job; returns its resource name."""
    job = _job(package, project, region, display_name, arguments, pipeline_root)
    try:
        job.submit()
    except Exception as error:
        raise VertexUnreachableError(_message(project, region, error)) from None
    return job.resource_name


def schedule(package: str, project: str, region: str, display_name: str, cron: str, arguments: dict,
             pipeline_root: str | None) -> str:
    """Creates a schedule (5-field cron), one run at a time; returns its resource name."""
    check_cron(cron)  # Vertex takes the same 5-field crontab form
    job = _job(package, project, region, display_name, arguments, pipeline_root)
    try:
        created = job.create_schedule(cron=cron, display_name=display_name, max_concurrent_run_count=1)
    except Exception as error:
        raise VertexUnreachableError(_message(project, region, error)) from None
    return created.resource_name
