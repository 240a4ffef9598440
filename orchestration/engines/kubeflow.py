"""Kubeflow Pipelines: compile the pipeline into a KFP v2 package, and read a compiled package back.

From the same pipeline.create_pipeline the local run uses, a package authored
with the kfp SDK for open-source KFP 2.x: an ingest task takes the root's lease
and turns the source into a new span, one task per TFX node runs that node with
TFX's own launcher against an ML Metadata store all tasks share
(orchestration/engines/tfx_node.py; a resolver read by one node runs in that
node's task, just before it), and a report task, the run's exit handler, puts
the outcome, metrics, confusion matrix, decision and HTML report on the run
page. On a gs:// root, where KServe copies the versions into its pod once, a
rollout task after the Pusher starts the InferenceService's new revision
(orchestration.serving.kserve). Compiled with tuning (`compile --tune`), TFX's Tuner is one
of the nodes, before the Trainer, and its task gets the Trainer's resources and
accelerators. Only container executors, schema 2.1.0, no lifecycle hooks: what the KFP
backend runs. KFP's own cache is off: TFX's cache decides what reruns.
Running a package (here, or on a cluster) is orchestration.engines.kfp_runs; the
Vertex AI target is orchestration.engines.vertex; reading a package back is orchestration.engines.packages.
"""
# No `from __future__ import annotations` here: kfp reads the pipeline function's annotations as types.
import copy
import dataclasses
import os
import posixpath
from typing import Collection

from config import PipelineConfig, TuningConfig
from contract import accelerators, layout
from contract import metadata as metadata_lib
from contract.layout import RunLayout
from contract.settings import setting
from orchestration.engines.packages import TargetError, check_package_name, default_beam_args, tuner_line
from orchestration.root import lease
from orchestration.serving import kserve

# pipeline.pipeline (TFX, TensorFlow) is imported where a package is built, so that submit,
# schedule and the CLI's error handling start without loading TensorFlow.

DEFAULT_METADATA_STORE = metadata_lib.KFP_METADATA_SERVICE
DEFAULT_PVC_MOUNT = "/mnt/pipeline"
RUN_GROUP = "run"  # the exit handler's group: every task but the report
TASK_RETRIES = 2
REPORT_RETRIES = 1
RETRY_BACKOFF = "60s"
RETRY_BACKOFF_MAX = "600s"
DEFAULT_LEASE_TIMEOUT_MINUTES = lease.DEFAULT_STALE_AFTER_SECONDS // 60
MAX_LEASE_TIMEOUT_MINUTES = 30 * 24 * 60  # above any real run; far beyond it, float() of the seconds overflows
# Other tasks are small next to the Trainer; the Evaluator loads the model too.
DEFAULT_TASK_CPU = "1"
DEFAULT_TASK_MEMORY = "4G"
# The Tuner's trials are Trainer runs on the same data: its task gets the Trainer's resources and accelerators.
TRAINING_NODES = frozenset({metadata_lib.TRAINER, metadata_lib.TUNER})


@dataclasses.dataclass(frozen=True)
class Deployment:
    """Everything about a deployment that is not the pipeline's own settings (those are PipelineConfig)."""

    image: str
    root: str
    # The package's `source` and `source_kind` parameters, which submit and schedule can change; their flags are
    # the command line's shared --data-dir and --source-kind (cli.targets.kubeflow).
    data_dir: str = ""
    source_kind: str = "folder"
    metadata_store: str = DEFAULT_METADATA_STORE  # grpc://HOST:PORT or sqlite:///PATH (local rehearsal)
    pvc: str | None = setting(None, "kubeflow: a PersistentVolumeClaim mounted into every task; --root and "
                                     "--data-dir are paths under its mount.")
    pvc_mount: str = setting(DEFAULT_PVC_MOUNT, "kubeflow: where the PVC is mounted in each task.")
    beam_args: tuple[str, ...] = ()
    trainer_cpu: str | None = setting(None, "kubeflow: CPUs of the Trainer's task and, with --tune, the Tuner's "
                                            "(request and limit), e.g. 4.")
    trainer_memory: str | None = setting(None, "kubeflow: memory of the Trainer's task and, with --tune, the "
                                                "Tuner's (request and limit), e.g. 16G.")
    trainer_accelerator: str | None = setting(
        None, "kubeflow: accelerator resource of the Trainer's task and, with --tune, the Tuner's, e.g. "
              "nvidia.com/gpu.", metavar="TYPE")
    trainer_accelerator_count: int = setting(1, "kubeflow: how many accelerators the Trainer's task (and the "
                                                "Tuner's) gets.")
    kfp_pipeline_root: str | None = None  # where KFP keeps its own artifacts (run page metrics, HTML)
    lease_timeout_minutes: int = setting(
        DEFAULT_LEASE_TIMEOUT_MINUTES, "kubeflow: a run's lease on the root whose heartbeat is older than this is "
                                       "taken over by the next run (a run whose pods all died); at least 3 (three "
                                       "heartbeats).")
    # The InferenceService a gs:// root's rollout task patches after each push; None: no rollout task (the
    # versions are served some other way).
    serving: kserve.Serving | None = kserve.Serving()

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
        if self.lease_timeout_minutes > MAX_LEASE_TIMEOUT_MINUTES:
            raise TargetError(f"--lease-timeout-minutes must be at most {MAX_LEASE_TIMEOUT_MINUTES:,} (30 days): a "
                              "killed run's lease goes stale only after it, and every run waits that long")
        if self.lease_timeout_minutes * 60 < lease.MIN_STALE_AFTER_SECONDS:
            raise TargetError(f"--lease-timeout-minutes must be at least {lease.MIN_STALE_AFTER_SECONDS // 60}: "
                              f"tasks renew the lease every {lease.HEARTBEAT_SECONDS} s, and a live run must not "
                              "look stale when a renewal is late")
        if self.trainer_accelerator_count < 1:
            raise TargetError("--trainer-accelerator-count must be at least 1")

    @property
    def locations(self) -> RunLayout:
        return RunLayout(self.root)

    @property
    def rolls_out(self) -> bool:
        """Whether the package patches the InferenceService after the Pusher: a root KServe copies once."""
        return self.serving is not None and kserve.copied_once(self.root)

    @property
    def kfp_root(self) -> str | None:
        """KFP's own artifacts: as given, else <root>/kfp beside a gs:// root, else the cluster's default."""
        if self.kfp_pipeline_root:
            return self.kfp_pipeline_root
        return posixpath.join(self.root, "kfp") if self.root.startswith("gs://") else None


def _is_under(path: str, folder: str) -> bool:
    return posixpath.normpath(path).startswith(posixpath.normpath(folder).rstrip("/") + "/")


def compile_package(config: PipelineConfig, output_file: str, deployment: Deployment,
                    tuning: TuningConfig | None = None, fixed_settings: Collection[str] = ()) -> str:
    """Writes the KFP v2 package (YAML) for open-source Kubeflow Pipelines; returns its path. `tuning` and
    `fixed_settings` as pipeline.create_pipeline takes them: with `tuning`, a Tuner task before the Trainer."""
    from kfp import compiler

    check_package_name(output_file)
    kfp_pipeline = build_kfp_pipeline(config, deployment, tuning, fixed_settings)
    output_file = os.path.abspath(output_file)
    os.makedirs(os.path.dirname(output_file), exist_ok=True)
    compiler.Compiler().compile(kfp_pipeline, output_file)
    return output_file


def tfx_pipeline(config: PipelineConfig, deployment: Deployment, tuning: TuningConfig | None = None,
                 fixed_settings: Collection[str] = ()):
    """The TFX pipeline whose nodes the package's tasks run."""
    from pipeline import pipeline as pipeline_lib

    where = deployment.locations
    return pipeline_lib.create_pipeline(
        config, examples_root=where.examples_root, pipeline_root=where.pipeline_root,
        serving_dir=where.serving_dir, beam_pipeline_args=list(deployment.beam_args) or default_beam_args(),
        schema_path=where.schema_path,
        served_as=(deployment.serving.name, kserve.MODEL_MOUNT) if deployment.serving else ("", ""),
        # The store (the cluster's metadata service by default) may hold other deployments' runs of this pipeline
        # name (every deployment is cats-vs-dogs): the resolvers read only this root's artifacts.
        tuning=tuning, fixed_settings=fixed_settings, scope=deployment.root)


def build_kfp_pipeline(config: PipelineConfig, deployment: Deployment, tuning: TuningConfig | None = None,
                       fixed_settings: Collection[str] = ()):
    """The kfp pipeline: ingest -> one task per TFX node (a resolver in its reader's: tfx_node.task_programs), in
    the DAG's order; the report as the exit handler."""
    from kfp import dsl

    from orchestration.engines import kfp_components, tfx_node

    programs = tfx_node.node_programs(tfx_pipeline(config, deployment, tuning, fixed_settings))
    task_programs = tfx_node.task_programs(programs)
    image = deployment.image
    ingest_op = dsl.component(kfp_components.ingest_source, base_image=image, install_kfp_package=False)
    node_op = dsl.component(kfp_components.tfx_node, base_image=image, install_kfp_package=False)
    report_op = report_component(image)
    rollout_op = dsl.component(kfp_components.kserve_rollout, base_image=image, install_kfp_package=False)
    settings = dataclasses.asdict(config)

    @dsl.pipeline(name=config.name, pipeline_root=deployment.kfp_root,
                  description="Ingest images, validate, transform, train and fine-tune MobileNetV2, evaluate "
                              "against the served model, push if blessed (TFX nodes on a shared ML Metadata).")
    def kfp_pipeline(source: str = deployment.data_dir, source_kind: str = deployment.source_kind):
        # The exit handler runs whatever the DAG did (triggerPolicy ALL_UPSTREAM_TASKS_COMPLETED): every run,
        # failed and canceled ones too, gets its summary and report, and the root's lease is released.
        report = _named(report_op, layout.REPORT_TASK)(
            metadata_store=deployment.metadata_store, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            pipeline_name=config.name, root=deployment.root, settings=settings,
            node_ids=[program.node_id for program in programs])
        _configure(report, deployment, retries=REPORT_RETRIES)
        with dsl.ExitHandler(report, name=RUN_GROUP):
            ingest = _named(ingest_op, layout.INGEST_TASK)(
                source_kind=source_kind, source=source, root=deployment.root, data=settings["data"],
                metadata_store=deployment.metadata_store, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                lease_seconds=float(deployment.lease_timeout_minutes * 60))
            _configure(ingest, deployment, retries=TASK_RETRIES)
            tasks = {}
            for task_program in task_programs:
                program = task_program.node
                task = _named(node_op, program.node_id)(
                    node_program=program.ir_json,
                    resolver_programs=[resolver.ir_json for resolver in task_program.resolvers],
                    run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, metadata_store=deployment.metadata_store,
                    root=deployment.root)
                task.set_display_name(program.node_id)
                task.after(*([tasks[node] for node in task_program.upstream] or [ingest]))
                _configure(task, deployment, trainer=program.node_id in TRAINING_NODES, retries=TASK_RETRIES)
                tasks[program.node_id] = task
            if deployment.rolls_out:
                rollout = _named(rollout_op, layout.ROLLOUT_TASK)(
                    root=deployment.root, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                    serving={"name": deployment.serving.name, "namespace": deployment.serving.namespace})
                rollout.set_display_name("KServe rollout")
                rollout.after(tasks[metadata_lib.PUSHER])
                _configure(rollout, deployment, retries=TASK_RETRIES)

    return kfp_pipeline


MONITORED_SETTINGS = ("window", "false_alarm_rate", "sample", "min_window", "queue")  # MonitorSettings' fields


def compile_monitor_package(config: PipelineConfig, output_file: str, deployment: Deployment, settings) -> str:
    """Writes the monitoring package (YAML): one task that runs `monitor` on the deployment's root with its store
    and `settings` (monitoring.settings.MonitorSettings), for a recurring run beside the pipeline's; returns its
    path."""
    from kfp import compiler

    check_package_name(output_file)
    output_file = os.path.abspath(output_file)
    os.makedirs(os.path.dirname(output_file), exist_ok=True)
    compiler.Compiler().compile(build_monitor_pipeline(config, deployment, settings), output_file)
    return output_file


def build_monitor_pipeline(config: PipelineConfig, deployment: Deployment, settings):
    """The monitoring package's pipeline: the monitor task on the project's image, with the volume, the store and
    the run id fallback the pipeline's own tasks get (_configure)."""
    from kfp import dsl

    from orchestration.engines import kfp_components

    monitor_op = _named(dsl.component(kfp_components.monitor_traffic, base_image=deployment.image,
                                      install_kfp_package=False), layout.MONITOR_TASK)
    chosen = {name: getattr(settings, name) for name in MONITORED_SETTINGS}

    @dsl.pipeline(name=f"{config.name}-monitoring", pipeline_root=deployment.kfp_root,
                  description="Compare the newest window of served traffic with the served model's data; record "
                              "the check in ML Metadata; on drift, queue the window's images for labels.")
    def monitor_pipeline():
        task = monitor_op(root=deployment.root, metadata_store=deployment.metadata_store, settings=chosen)
        task.set_display_name("drift check")
        # A pod killed mid-check is started again; a refusal (too small a window) is said again, once.
        _configure(task, deployment, retries=REPORT_RETRIES)

    return monitor_pipeline


def report_component(image: str):
    """The exit handler's component (also what `submit --local` runs after a failed DAG)."""
    from kfp import dsl

    from orchestration.engines import kfp_components

    return dsl.component(kfp_components.run_report, base_image=image, install_kfp_package=False)


def _named(component, name: str):
    """A copy of `component` named `name`, so the task is called after the TFX node it runs."""
    named = copy.deepcopy(component)
    named.component_spec.name = name
    return named


def _configure(task, deployment: Deployment, trainer: bool = False, retries: int = 0) -> None:
    """KFP cache off (TFX decides), retries, resources (`trainer`: the Trainer's or the Tuner's task), the PVC,
    and the run id from the pod's label as a fallback."""
    from kfp import kubernetes

    task.set_caching_options(False)
    if retries:
        # A pod killed by a drained node, a preempted GPU or the OOM killer is started again; TFX's launcher
        # reuses the execution it left RUNNING (orchestration.engines.kfp_tasks.run_node).
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
            # The Trainer (and the Tuner's trials) fail on these, rather than train on the CPU, when TensorFlow
            # sees fewer GPUs.
            task.set_env_variable(accelerators.ACCELERATOR_ENV, deployment.trainer_accelerator)
            task.set_env_variable(accelerators.ACCELERATOR_COUNT_ENV, str(deployment.trainer_accelerator_count))
    else:
        task.set_cpu_request(DEFAULT_TASK_CPU)
        task.set_memory_request(DEFAULT_TASK_MEMORY)
    if deployment.pvc:
        kubernetes.mount_pvc(task, pvc_name=deployment.pvc, mount_path=deployment.pvc_mount)
    kubernetes.use_field_path_as_env(task, env_name="KFP_RUN_ID", field_path="metadata.labels['pipeline/runid']")


def compile_for_cluster(config: PipelineConfig, output_file: str, deployment: Deployment,
                        serving: kserve.Serving, tuning: TuningConfig | None = None,
                        fixed_settings: Collection[str] = ()) -> list[str]:
    """The package (compile_package), and beside it the manifest of `serving`, the KServe InferenceService that
    serves the root's versions (none for a root on this machine); returns what to tell the user, line by line."""
    path = compile_package(config, output_file, deployment, tuning, fixed_settings)
    lines = [f"wrote Kubeflow Pipelines package {path}"]
    if tuning is not None:
        lines.append(tuner_line(tuning))
    if deployment.rolls_out:
        lines.append(f"after each push, its rollout task starts a new revision of InferenceService "
                     f"{serving.namespace}/{serving.name} (KServe copies a gs:// root once): the pipeline's service "
                     "account needs get and patch on inferenceservices.serving.kserve.io there "
                     "(docs/operating-on-kubeflow.md)")
    uri = kserve.storage_uri(deployment.root, deployment.pvc, deployment.pvc_mount)
    if uri is None:
        lines.append(f"no KServe manifest: the root {deployment.root} is on this machine (a rehearsal); a cluster "
                     "serves from a gs:// root or a PVC (--pvc)")
    else:
        sink = kserve.TrafficSink(deployment.image, deployment.root, deployment.pvc, deployment.pvc_mount) \
            if serving.traffic_sink else None
        manifest = kserve.write_manifest(kserve.manifest_path(path), serving, uri, sink)
        lines.append(f"wrote KServe InferenceService {manifest} (serves the version "
                     f"{uri}/{layout.SERVING_CONFIG_FILE} names, the newest push or rollback"
                     + (f"; its logger sends every request and response to the traffic sink {sink.name(serving)} "
                        f"deployed with it, which records them under {RunLayout(deployment.root).traffic_root}"
                        if sink else "") + f"): kubectl apply -f {manifest}")
        if deployment.pvc:  # a claim is seen only in its own namespace: pods elsewhere wait for it for ever
            lines.append(f"the InferenceService{' and the traffic sink' if sink else ''} mount the PVC "
                         f"{deployment.pvc} in namespace {serving.namespace}: the claim must be there (create it "
                         "there, or compile with --serving-namespace set to the claim's)")
    return lines
