"""Kubeflow Pipelines: compile the pipeline into a KFP v2 package, rehearse it locally, submit and schedule it.

Two targets, both from the same pipeline.create_pipeline the local run uses:
- `kubeflow` (open-source KFP 2.x): a package authored with the kfp SDK. An
  ingest task turns the data folder into a new span, then one task per TFX node
  runs that node with TFX's own launcher against an ML Metadata store all tasks
  share (orchestration/tfx_node.py), then a report task puts the metrics,
  confusion matrix, decision and HTML report on the run page. Only container
  executors, schema 2.1.0, no lifecycle hooks: what the KFP backend runs.
  KFP's own cache is off: TFX's cache decides what reruns.
- `vertex` (Vertex AI Pipelines): TFX's KubeflowV2DagRunner package, which the
  managed service runs natively (spec 2.1; only TFX's built-in resolvers).
"""
# No `from __future__ import annotations` here: kfp reads the pipeline function's annotations as types.
import copy
import dataclasses
import os
import posixpath
import re
import time
import uuid

from config import PipelineConfig, beam_policy
from contract import layout
from contract import metadata as metadata_lib
from contract.errors import first_line
from contract.layout import RunLayout
from orchestration.local_schedule import CronError

# pipeline.pipeline (TFX, TensorFlow) is imported where a package is built, so that submit,
# schedule and the CLI's error handling start without loading TensorFlow.

KUBEFLOW = "kubeflow"
VERTEX = "vertex"
TARGETS = (KUBEFLOW, VERTEX)
DEFAULT_METADATA_STORE = metadata_lib.KFP_METADATA_SERVICE
DEFAULT_PVC_MOUNT = "/mnt/pipeline"
INGEST_TASK = "ingest"
REPORT_TASK = "report"
RUN_GROUP = "run"  # the exit handler's group: every task but the report
TASK_RETRIES = 2
REPORT_RETRIES = 1
RETRY_BACKOFF = "60s"
RETRY_BACKOFF_MAX = "600s"
DEFAULT_LEASE_TIMEOUT_MINUTES = 60
# Other tasks are small next to the Trainer; the Evaluator loads the model too.
DEFAULT_TASK_CPU = "1"
DEFAULT_TASK_MEMORY = "4G"
# The Dockerfile copies the project to /pipeline: the schema's path inside the image (Vertex target).
IMAGE_PROJECT_DIR = "/pipeline"
IMAGE_SCHEMA_PATH = posixpath.join(IMAGE_PROJECT_DIR, "pipeline", "schema", "schema.pbtxt")


class KubeflowUnreachableError(RuntimeError):
    """The KFP endpoint did not answer; the message names it."""


class TargetError(ValueError):
    """A compile setting that cannot work on the chosen target; the message says why."""


@dataclasses.dataclass(frozen=True)
class Deployment:
    """Everything about a deployment that is not the pipeline's own settings (those are PipelineConfig)."""

    image: str
    root: str
    data_dir: str = ""  # default of the `source` pipeline parameter; empty: train on the spans under root
    source_kind: str = "folder"  # default of the `source_kind` parameter: a kind of ingest.sources.LISTERS
    metadata_store: str = DEFAULT_METADATA_STORE  # grpc://HOST:PORT or sqlite:///PATH (local rehearsal)
    pvc: str | None = None  # a PersistentVolumeClaim mounted into every task at pvc_mount
    pvc_mount: str = DEFAULT_PVC_MOUNT
    beam_args: tuple[str, ...] = ()
    trainer_cpu: str | None = None
    trainer_memory: str | None = None
    trainer_accelerator: str | None = None  # e.g. nvidia.com/gpu
    trainer_accelerator_count: int = 1
    kfp_pipeline_root: str | None = None  # where KFP keeps its own artifacts (run page metrics, HTML)
    # A run's lease on the root whose heartbeat is older than this is taken over by the next run.
    lease_timeout_minutes: int = DEFAULT_LEASE_TIMEOUT_MINUTES

    def __post_init__(self):
        if not self.image:
            raise TargetError("--image is required: the container image with this project installed")
        is_uri = "://" in self.root
        if not is_uri and not posixpath.isabs(self.root):
            raise TargetError(f"--root {self.root!r}: give a URI (gs://bucket/folder) or an absolute path "
                              "(on the PVC, or on this machine for a local rehearsal)")
        if self.pvc and (is_uri or not _is_under(self.root, self.pvc_mount)):
            raise TargetError(f"--root {self.root!r} must lie under the PVC's mount path {self.pvc_mount} "
                              f"(--pvc {self.pvc})")
        if self.pvc and self.data_dir and "://" not in self.data_dir and not _is_under(self.data_dir,
                                                                                        self.pvc_mount):
            raise TargetError(f"--data-dir {self.data_dir!r} is not on the PVC ({self.pvc_mount}) nor a URI: "
                              "the tasks could not read it")
        if not self.metadata_store.startswith(("grpc://", "sqlite:///")):
            raise TargetError(f"metadata store {self.metadata_store!r}: expected grpc://HOST:PORT or "
                              "sqlite:///ABSOLUTE/PATH")
        from ingest.sources import LISTERS

        if self.source_kind not in LISTERS:
            raise TargetError(f"--source-kind {self.source_kind!r}: expected one of {', '.join(sorted(LISTERS))}")
        if self.lease_timeout_minutes < 1:
            raise TargetError("--lease-timeout-minutes must be at least 1")
        if self.trainer_accelerator_count < 1:
            raise TargetError("--trainer-accelerator-count must be at least 1")

    @property
    def locations(self) -> RunLayout:
        return RunLayout(self.root)

    @property
    def kfp_root(self) -> str | None:
        """KFP's own artifacts: as given, else <root>/kfp beside a gs:// root, else the cluster's default."""
        if self.kfp_pipeline_root:
            return self.kfp_pipeline_root
        return posixpath.join(self.root, "kfp") if self.root.startswith("gs://") else None


def _is_under(path: str, folder: str) -> bool:
    return posixpath.normpath(path).startswith(posixpath.normpath(folder).rstrip("/") + "/")


def default_beam_args() -> list[str]:
    """Beam in the task's own pod: DirectRunner, one worker process per core.

    For Dataflow pass e.g. --runner=DataflowRunner --project=P --region=R
    --temp_location=gs://B/tmp through `compile --beam-arg`.
    """
    return beam_policy.component_args()


def compile_package(config: PipelineConfig, output_file: str, deployment: Deployment) -> str:
    """Writes the KFP v2 package (YAML) for open-source Kubeflow Pipelines; returns its path."""
    from kfp import compiler

    _check_package_name(output_file)
    kfp_pipeline = build_kfp_pipeline(config, deployment)
    output_file = os.path.abspath(output_file)
    os.makedirs(os.path.dirname(output_file), exist_ok=True)
    compiler.Compiler().compile(kfp_pipeline, output_file)
    return output_file


def build_kfp_pipeline(config: PipelineConfig, deployment: Deployment):
    """The kfp pipeline: ingest -> one task per TFX node, in the DAG's order; the report as the exit handler."""
    from kfp import dsl

    from orchestration import kfp_components, tfx_node
    from pipeline import pipeline as pipeline_lib

    where = deployment.locations
    tfx_pipeline = pipeline_lib.create_pipeline(
        config, examples_root=where.examples_root, pipeline_root=where.pipeline_root,
        serving_dir=where.serving_dir, beam_pipeline_args=list(deployment.beam_args) or default_beam_args(),
        schema_path=where.schema_path)
    programs = tfx_node.node_programs(tfx_pipeline)
    image = deployment.image
    ingest_op = dsl.component(kfp_components.ingest_source, base_image=image, install_kfp_package=False)
    node_op = dsl.component(kfp_components.tfx_node, base_image=image, install_kfp_package=False)
    report_op = report_component(image)
    settings = dataclasses.asdict(config)

    @dsl.pipeline(name=config.name, pipeline_root=deployment.kfp_root,
                  description="Ingest images, validate, transform, train and fine-tune MobileNetV2, evaluate "
                              "against the served model, push if blessed (TFX nodes on a shared ML Metadata).")
    def kfp_pipeline(source: str = deployment.data_dir, source_kind: str = deployment.source_kind):
        # The exit handler runs whatever the DAG did (triggerPolicy ALL_UPSTREAM_TASKS_COMPLETED): every run,
        # failed and canceled ones too, gets its summary and report, and the root's lease is released.
        report = _named(report_op, REPORT_TASK)(
            metadata_store=deployment.metadata_store, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            pipeline_name=config.name, root=deployment.root, settings=settings,
            node_ids=[program.node_id for program in programs])
        _configure(report, deployment, retries=REPORT_RETRIES)
        with dsl.ExitHandler(report, name=RUN_GROUP):
            ingest = _named(ingest_op, INGEST_TASK)(
                source_kind=source_kind, source=source, root=deployment.root, data=settings["data"],
                metadata_store=deployment.metadata_store, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                lease_seconds=float(deployment.lease_timeout_minutes * 60))
            _configure(ingest, deployment, retries=TASK_RETRIES)
            tasks = {}
            for program in programs:
                task = _named(node_op, program.node_id)(node_program=program.ir_json,
                                                        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                                                        metadata_store=deployment.metadata_store, root=deployment.root)
                task.set_display_name(program.node_id)
                task.after(*([tasks[node] for node in program.upstream] or [ingest]))
                _configure(task, deployment, trainer=program.node_id == pipeline_lib.TRAINER, retries=TASK_RETRIES)
                tasks[program.node_id] = task

    return kfp_pipeline


def report_component(image: str):
    """The exit handler's component (also what `submit --local` runs after a failed DAG)."""
    from kfp import dsl

    from orchestration import kfp_components

    return dsl.component(kfp_components.run_report, base_image=image, install_kfp_package=False)


def _named(component, name: str):
    """A copy of `component` named `name`, so the task is called after the TFX node it runs."""
    named = copy.deepcopy(component)
    named.component_spec.name = name
    return named


def _configure(task, deployment: Deployment, trainer: bool = False, retries: int = 0) -> None:
    """KFP cache off (TFX decides), retries, resources, the PVC, and the run id from the pod's label as a
    fallback."""
    from kfp import kubernetes

    task.set_caching_options(False)
    if retries:
        # A pod killed by a drained node, a preempted GPU or the OOM killer is started again; TFX's launcher
        # reuses the execution it left RUNNING (orchestration.kfp_tasks.run_node).
        task.set_retry(num_retries=retries, backoff_duration=RETRY_BACKOFF, backoff_factor=2.0,
                       backoff_max_duration=RETRY_BACKOFF_MAX)
    if trainer:
        task.set_cpu_request(deployment.trainer_cpu or DEFAULT_TASK_CPU)
        task.set_memory_request(deployment.trainer_memory or DEFAULT_TASK_MEMORY)
        if deployment.trainer_cpu:
            task.set_cpu_limit(deployment.trainer_cpu)
        if deployment.trainer_memory:
            task.set_memory_limit(deployment.trainer_memory)
        if deployment.trainer_accelerator:
            task.set_accelerator_type(deployment.trainer_accelerator)
            task.set_accelerator_limit(deployment.trainer_accelerator_count)
    else:
        task.set_cpu_request(DEFAULT_TASK_CPU)
        task.set_memory_request(DEFAULT_TASK_MEMORY)
    if deployment.pvc:
        kubernetes.mount_pvc(task, pvc_name=deployment.pvc, mount_path=deployment.pvc_mount)
    kubernetes.use_field_path_as_env(task, env_name="KFP_RUN_ID", field_path="metadata.labels['pipeline/runid']")


def compile_vertex_package(config: PipelineConfig, output_file: str, *, image: str, root: str,
                           beam_args: list[str]) -> str:
    """Writes TFX's own KubeflowV2DagRunner package for Vertex AI Pipelines; returns its path."""
    from tfx import v1 as tfx

    from pipeline import pipeline as pipeline_lib

    _check_package_name(output_file)
    if config.data.span_window > 1:
        raise TargetError("--span-window > 1 needs TFX's SpanRangeStrategy, which the vertex target cannot "
                          "compile (only TFX's LatestBlessedModelStrategy); use the kubeflow target or "
                          "--span-window 1")
    where = RunLayout(root)
    pipeline = pipeline_lib.create_pipeline(
        config, examples_root=where.examples_root, pipeline_root=where.pipeline_root, serving_dir=where.serving_dir,
        beam_pipeline_args=beam_args or default_beam_args(), builtin_resolver=True, schema_path=IMAGE_SCHEMA_PATH)
    output_dir, filename = os.path.split(os.path.abspath(output_file))
    os.makedirs(output_dir, exist_ok=True)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image,
                                                                        use_pipeline_spec_2_1=True),
        output_dir=output_dir, output_filename=filename)
    runner.run(pipeline, write_out=True)
    return os.path.join(output_dir, filename)


def _check_package_name(output_file: str) -> None:
    if not output_file.endswith((".yaml", ".yml")):
        raise TargetError(f"the package file must end in .yaml (KFP's client reads .yaml), got {output_file!r}")


def _pipeline_spec(package: str) -> dict:
    import yaml

    with open(package) as f:
        return next(yaml.safe_load_all(f)) or {}


def package_pipeline_root(package: str) -> str | None:
    """The KFP pipeline root a package was compiled with (`defaultPipelineRoot`), if any."""
    return _pipeline_spec(package).get("defaultPipelineRoot")


def _task_constants(package: str, task_name: str) -> dict:
    """The constant inputs of one of the package's tasks (the report's: where its data and metadata are)."""
    spec = _pipeline_spec(package)
    task = spec.get("root", {}).get("dag", {}).get("tasks", {}).get(task_name, {})
    return {name: value["runtimeValue"]["constant"]
            for name, value in task.get("inputs", {}).get("parameters", {}).items() if "runtimeValue" in value}


def _report_constant(package: str, name: str):
    value = _task_constants(package, REPORT_TASK).get(name)
    return value if isinstance(value, str) else None


def package_root(package: str) -> str | None:
    return _report_constant(package, "root")


def package_metadata_store(package: str) -> str:
    return _report_constant(package, "metadata_store") or ""


@dataclasses.dataclass(frozen=True)
class LocalRun:
    run_id: str
    failure: str | None  # kfp.local's line naming the failed task; None when the DAG completed


def run_locally(package: str, arguments: dict, kfp_outputs: str, run_id: str | None = None) -> LocalRun:
    """Runs a compiled package on this machine with the kfp SDK's own local runner.

    Every task runs as a subprocess of this Python (the environment the image
    holds), in the package's dependency order; KFP's artifacts go under
    `kfp_outputs`. kfp 2.13's local runner stops at the first failed task and
    never runs an exit handler after a failure, so when the DAG fails the exit
    handler (the report) is run here, as the backend runs it, with the
    package's own inputs and the same run id.
    """
    from kfp import local
    from kfp.local import placeholder_utils

    run_id = run_id or f"local-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=kfp_outputs, raise_on_error=True)
    # The local runner draws a random number as the run id (the PIPELINE_JOB_ID placeholder); choosing it here
    # lets the report that follows a failure speak of the same run, and names the run's folder.
    chosen = placeholder_utils.make_random_id
    placeholder_utils.make_random_id = lambda: run_id
    try:
        try:
            _load_package(package)(**arguments)
            return LocalRun(run_id, None)
        except RuntimeError as error:  # kfp.local names the failed task (its log is above), in terminal colours
            plain = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
            failure = plain.splitlines()[0] if plain else "the local run failed"
        try:
            report_component(_package_image(package))(**_task_constants(package, REPORT_TASK))
        except RuntimeError as error:
            plain = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
            failure += f"; its exit handler failed too: {plain.splitlines()[0] if plain else error}"
        return LocalRun(run_id, failure)
    finally:
        placeholder_utils.make_random_id = chosen


def run_folder(root: str, run_id: str) -> str:
    """<root>/runs/<run id>: the run's summary, report and task records."""
    return posixpath.join(RunLayout(root).runs_dir, re.sub(r"[^A-Za-z0-9._-]", "_", run_id))


def run_outcome(folder: str) -> str | None:
    """The error the exit handler wrote into a run's summary (None: none written, or the run completed)."""
    import json

    path = posixpath.join(folder, layout.SUMMARY_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f).get("error")


def _load_package(package: str):
    from kfp import components

    return components.load_component_from_file(package)


def _package_image(package: str) -> str:
    executors = _pipeline_spec(package).get("deploymentSpec", {}).get("executors", {})
    return next(iter(executors.values()))["container"]["image"]


def _client(host: str):
    import kfp

    try:
        client = kfp.Client(host=host)
        client.list_experiments(page_size=1)  # the client connects lazily: ask something now
    except Exception as error:  # urllib3, requests and kfp_server_api raise different types
        raise KubeflowUnreachableError(f"cannot reach Kubeflow Pipelines at {host}: {first_line(error)}") from None
    return client


def submit(package: str, host: str, run_name: str, experiment: str, arguments: dict,
           pipeline_root: str | None) -> str:
    """Starts one run of the package; returns the run id. KFP's cache stays off: TFX's cache decides."""
    client = _client(host)
    run = client.create_run_from_pipeline_package(
        package, arguments=arguments, run_name=run_name, experiment_name=experiment,
        pipeline_root=pipeline_root or package_pipeline_root(package), enable_caching=False)
    return run.run_id


def schedule(package: str, host: str, job_name: str, experiment: str, cron: str, arguments: dict,
             pipeline_root: str | None) -> str:
    """Creates a recurring run, one run at a time; `cron` has six fields, seconds first (KFP's format)."""
    check_kfp_cron(cron)
    client = _client(host)
    experiment_id = client.create_experiment(experiment).experiment_id
    job = client.create_recurring_run(
        experiment_id=experiment_id, job_name=job_name, cron_expression=cron, pipeline_package_path=package,
        params=arguments, pipeline_root=pipeline_root or package_pipeline_root(package), enable_caching=False,
        max_concurrency=1)
    return job.recurring_run_id


def check_kfp_cron(cron: str) -> None:
    fields = cron.split()
    if len(fields) != 6:
        raise CronError(f"KFP cron expressions have 6 fields (seconds first), e.g. '0 0 3 * * *'; got {cron!r}")
