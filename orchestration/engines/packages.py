"""A compiled pipeline package, as every target that compiles one writes it: KFP's pipeline spec in YAML (the
Kubeflow target's, and TFX's KubeflowV2DagRunner output for Vertex AI), its name checked and read back; what
the container image gives every task of a package (the schema's path, Beam's defaults); and the error of a
setting a target cannot honour.

Kubeflow's package (orchestration.engines.kubeflow), Vertex AI's (orchestration.engines.vertex), their runs
(orchestration.engines.kfp_runs) and the command line's package checks all read packages here, so that none of them
depends on another target's module.
"""

from __future__ import annotations

import posixpath

from config import beam_policy
from contract import layout
from contract.errors import CommandError

# The Dockerfile copies the project to /pipeline: the schema's path inside the image (Vertex target).
IMAGE_PROJECT_DIR = "/pipeline"
IMAGE_SCHEMA_PATH = posixpath.join(IMAGE_PROJECT_DIR, "pipeline", "schema", "schema.pbtxt")


class TargetError(CommandError, ValueError):
    """A compile setting that cannot work on the chosen target; the message says why."""


def default_beam_args() -> list[str]:
    """Beam in the task's own pod: DirectRunner, one worker process per core.

    For Dataflow pass e.g. --runner=DataflowRunner --project=P --region=R
    --temp_location=gs://B/tmp through `compile --beam-arg`.
    """
    return beam_policy.component_args()


def check_package_name(output_file: str) -> None:
    if not output_file.endswith((".yaml", ".yml")):
        raise TargetError(f"the package file must end in .yaml (KFP's client reads .yaml), got {output_file!r}")


def package_spec(package: str) -> dict:
    """The package's pipeline spec (its first YAML document); TargetError, in one line, for a file that is not a
    package `compile` writes (KFP's YAML, or the JSON pipeline job of the Vertex target)."""
    import yaml

    try:
        with open(package, encoding="utf-8") as f:
            spec = next(yaml.safe_load_all(f), None)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        said = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TargetError(f"{package} is not a pipeline package: it does not parse as YAML ({said})") from None
    if not isinstance(spec, dict) or not ({"pipelineInfo", "pipelineSpec"} & set(spec)):
        raise TargetError(f"{package} is not a pipeline package: no pipelineInfo or pipelineSpec in it (write one "
                          "with `compile`)")
    return spec


def package_pipeline_root(package: str) -> str | None:
    """The KFP pipeline root a package was compiled with (`defaultPipelineRoot`), if any."""
    return package_spec(package).get("defaultPipelineRoot")


def task_constants(package: str, task_name: str) -> dict:
    """The constant inputs of one of the package's tasks (the report's: where its data and metadata are)."""
    spec = package_spec(package)
    task = spec.get("root", {}).get("dag", {}).get("tasks", {}).get(task_name, {})
    return {name: value["runtimeValue"]["constant"]
            for name, value in task.get("inputs", {}).get("parameters", {}).items() if "runtimeValue" in value}


def _report_constant(package: str, name: str):
    """A constant of the report task, or of the monitor task in the monitoring package (which has no report)."""
    value = (task_constants(package, layout.REPORT_TASK) or task_constants(package, layout.MONITOR_TASK)).get(name)
    return value if isinstance(value, str) else None


def is_monitor_package(package: str) -> bool:
    """Whether `package` is the monitoring package (compile --monitor-package), not the pipeline's."""
    return set(package_spec(package).get("root", {}).get("dag", {}).get("tasks", {})) == {layout.MONITOR_TASK}


def package_root(package: str) -> str | None:
    return _report_constant(package, "root")


def package_metadata_store(package: str) -> str:
    return _report_constant(package, "metadata_store") or ""


def check_package(package: str, arguments: dict) -> None:
    """Refuses, in one line, a file that is not a package `compile` writes, and run `arguments` (the source
    parameters submit and schedule set) for the monitoring package, which ingests nothing."""
    package_spec(package)
    if arguments and is_monitor_package(package):
        raise TargetError(f"--data-dir and --source-kind set the pipeline's source; {package} is the monitoring "
                          "package, which ingests nothing")


def tuner_line(tuning) -> str:
    """What compile --tune tells the user of the package's Tuner task (every target's package has one)."""
    trials = f"{tuning.trials} trial{'s' if tuning.trials != 1 else ''}"
    return (f"its Tuner task searches up to {trials} before the Trainer in every run; a package compiled without "
            "--tune reuses the newest search's result instead")
