"""One node of the TFX pipeline, run in a process of its own against a shared ML Metadata store.

This is how the Kubeflow package runs the pipeline: each KFP task launches one
node with TFX's own Launcher (driver, executor, publisher), exactly as
LocalDagRunner launches each node in turn, with the run id shared by all tasks
of a run. So TFX's cache, span resolution, the curated schema gate and this
project's resolver strategies behave on a cluster as they do locally, and
nodes pass artifacts to each other through MLMD, not through KFP.

`node_programs` compiles `create_pipeline`'s pipeline to TFX's IR once and cuts
it into one small IR per node (the pipeline's info and runtime spec, the node,
and only that node's executor and driver specs), which its task carries as JSON;
`task_programs` puts a resolver read by one node into that node's task.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import uuid
from typing import Callable

import tensorflow as tf
from google.protobuf import json_format
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from contract import layout
from contract import metadata as metadata_lib
from contract.errors import CommandError, first_line


class NodeTaskError(CommandError, RuntimeError):
    """A fault the task reports in one line: unreachable store, unwritable root, unknown node."""


class NodeFailedError(RuntimeError):
    """A resolver whose inputs could not be resolved (failed_resolutions_raise): TFX would record it FAILED and
    go on."""


@dataclasses.dataclass(frozen=True)
class NodeProgram:
    """What one task runs: a node id, the ids of the nodes it waits for, its IR as JSON."""

    node_id: str
    upstream: tuple[str, ...]
    ir_json: str


def node_programs(pipeline) -> list[NodeProgram]:
    """The pipeline's nodes in topological order, each with an IR holding only itself."""
    from tfx.dsl.compiler import compiler
    from tfx.proto.orchestration import pipeline_pb2

    ir = compiler.Compiler().compile(pipeline)
    deployment = pipeline_pb2.IntermediateDeploymentConfig()
    ir.deployment_config.Unpack(deployment)
    programs = []
    for node in ir.nodes:
        node_id = node.pipeline_node.node_info.id
        own = pipeline_pb2.Pipeline(pipeline_info=ir.pipeline_info, runtime_spec=ir.runtime_spec,
                                    execution_mode=ir.execution_mode, sdk_version=ir.sdk_version)
        own.nodes.add().CopyFrom(node)
        own_deployment = pipeline_pb2.IntermediateDeploymentConfig()
        for field in ("executor_specs", "custom_driver_specs", "node_level_platform_configs"):
            specs = getattr(deployment, field)
            if node_id in specs:
                getattr(own_deployment, field)[node_id].CopyFrom(specs[node_id])
        own.deployment_config.Pack(own_deployment)
        programs.append(NodeProgram(node_id, tuple(sorted(node.pipeline_node.upstream_nodes)),
                                    json_format.MessageToJson(own, indent=None, sort_keys=True)))
    return programs


@dataclasses.dataclass(frozen=True)
class TaskProgram:
    """What one KFP task runs: the resolvers only its node reads, then the node; the ids of the tasks it waits
    for."""

    node: NodeProgram
    resolvers: tuple[NodeProgram, ...]
    upstream: tuple[str, ...]


def task_programs(programs: list[NodeProgram]) -> list[TaskProgram]:
    """One task per node, but a resolver read by exactly one other node runs in that node's task, just before it.

    A resolver only queries ML Metadata (a fraction of a second); a task of its own costs a pod that starts and
    imports TensorFlow and TFX, on a cluster and in the rehearsal alike (about 10 s of CPU). TFX's own
    compilation for KFP's v2 backend does not give a resolver a container either (it becomes a resolver spec
    that KFP's driver runs). Each resolver here resolves relative to an artifact of this run upstream of it
    (this run's examples; for the baseline, the candidate model), so run later in the run, just before its
    reader, it resolves the same artifacts.
    """
    readers: dict[str, list[str]] = {program.node_id: [] for program in programs}
    for program in programs:
        for upstream in program.upstream:
            readers[upstream].append(program.node_id)
    folded = {program.node_id: readers[program.node_id][0] for program in programs
              if program.node_id in metadata_lib.RESOLVER_IDS and len(readers[program.node_id]) == 1
              and readers[program.node_id][0] not in metadata_lib.RESOLVER_IDS}
    tasks = []
    for program in programs:
        if program.node_id in folded:
            continue
        resolvers = tuple(p for p in programs if folded.get(p.node_id) == program.node_id)
        upstream = {node for p in (program, *resolvers) for node in p.upstream} - {p.node_id for p in resolvers}
        tasks.append(TaskProgram(program, resolvers, tuple(sorted(upstream))))
    return tasks


@contextlib.contextmanager
def failed_resolutions_raise():
    """Within it, a resolver node whose inputs cannot be resolved raises NodeFailedError, naming why.

    TFX's resolver handler turns any error of the resolution (a strategy's,
    the store's: TFX wraps each as an InputResolutionError) into a FAILED
    execution and returns; LocalDagRunner then runs the nodes that read the
    resolver, whose inputs from it are all optional: an Evaluator with no
    baseline would bless a candidate on its thresholds alone, and the Pusher
    push it. Raised instead, the run stops at the resolver, as at any node's
    error. Only the resolver handler's view of TFX's inputs_utils is changed.
    """
    from tfx.orchestration.portable import inputs_utils, resolver_node_handler
    from tfx.orchestration.portable.input_resolution import exceptions

    class RaisingInputs:
        def __getattr__(self, name):
            return getattr(inputs_utils, name)

        @staticmethod
        def resolve_input_artifacts(*, pipeline_node, metadata_handle):
            try:
                return inputs_utils.resolve_input_artifacts(pipeline_node=pipeline_node,
                                                            metadata_handle=metadata_handle)
            except exceptions.InputResolutionError as error:
                raise NodeFailedError(f"{pipeline_node.node_info.id} could not resolve its inputs: "
                                      f"{first_line(error.__cause__ or error, with_type=True)}") from error

    seen = resolver_node_handler.inputs_utils
    resolver_node_handler.inputs_utils = RaisingInputs()
    try:
        yield
    finally:
        resolver_node_handler.inputs_utils = seen


def connection_config(store: str):
    """`grpc://HOST:PORT` or `sqlite:///ABSOLUTE/PATH` -> an MLMD connection config."""
    try:
        return metadata_lib.connection_config(store)
    except CommandError as error:  # the task's error class, for the task's tests and logs alike
        raise NodeTaskError(str(error)) from None


def check_store(store: str) -> None:
    """Asks the store something now, so an unreachable one is named before any work."""
    try:
        metadata_lib.reachable_store(store)
    except CommandError as error:
        raise NodeTaskError(str(error)) from None


def check_writable(folder: str) -> None:
    """Creates `folder` if needed and writes a probe file there: a root the task cannot write is named now."""
    probe = os.path.join(folder, f"{layout.WRITE_PROBE_PREFIX}{uuid.uuid4().hex}")
    try:
        tf.io.gfile.makedirs(folder)
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("ok")
        tf.io.gfile.remove(probe)
    except Exception as error:
        raise NodeTaskError(f"cannot write to {folder}: {first_line(error)}") from None


def resolve_run_id(run_id: str) -> str:
    """The KFP run id all tasks of a run share (TFX's pipeline run id).

    KFP substitutes the placeholder; where a backend does not, the pod's
    `pipeline/runid` label, passed in as KFP_RUN_ID, is used instead.
    """
    if run_id and "{{" not in run_id:
        return run_id
    from_pod = os.environ.get("KFP_RUN_ID", "")
    if from_pod:
        return from_pod
    raise NodeTaskError(f"no run id: the task got {run_id!r} and no KFP_RUN_ID in its environment")


def prepare(ir_json: str, run_id: str, store: str, say: Callable[[str], None], once: bool = False) -> Callable[[], str]:
    """Checks the task can run the node of `ir_json` in run `run_id` (its store reachable, its root writable;
    NodeTaskError if not) and clears what a killed attempt left; returns what launches it, which returns how it
    ended ('executed', 'cached', 'skipped'). Two steps: a fault of the task is raised by this one, the node's own
    error by the launch. `once`: a node that already completed in this run (a resolver in the task of its reader,
    whose pod was killed after it) is not launched again ('done earlier'): TFX's launcher would record a second
    execution of it."""
    # TFX's launcher here, not where the module loads: the ingest and report tasks use this module's checks alone,
    # and the launcher brings every TFX component with it (TFMA among them: seconds of each task's start).
    from tfx.dsl.compiler import constants
    from tfx.orchestration import metadata
    from tfx.orchestration.local import runner_utils
    from tfx.orchestration.portable import launcher, runtime_parameter_utils
    from tfx.proto.orchestration import pipeline_pb2

    ir = pipeline_pb2.Pipeline()
    json_format.Parse(ir_json, ir)
    if len(ir.nodes) != 1:
        raise NodeTaskError(f"a node program holds exactly one node, this one holds {len(ir.nodes)}")
    run_id = resolve_run_id(run_id)
    runtime_parameter_utils.substitute_runtime_parameter(ir, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: run_id})
    node = ir.nodes[0].pipeline_node
    check_store(store)
    check_writable(ir.runtime_spec.pipeline_root.field_value.string_value)
    deployment = runner_utils.extract_local_deployment_config(ir)
    node_id = node.node_info.id
    pipeline_root = ir.runtime_spec.pipeline_root.field_value.string_value
    if once and _execution_in(store, ir.pipeline_info.id, node_id, run_id, _FINISHED) is not None:
        return lambda: "done earlier"
    killed = _execution_in(store, ir.pipeline_info.id, node_id, run_id, _UNFINISHED)
    if killed is not None:
        removed = _remove_outputs_of(pipeline_root, node_id, killed)
        say(f"{node_id}: an earlier attempt in this run stopped while it ran (execution {killed}, its pod killed?);"
            f" removed its partial outputs ({len(removed)} folders) and running it again")
    node_launcher = launcher.Launcher(
        pipeline_node=node,
        mlmd_connection=metadata.Metadata(connection_config(store)),
        pipeline_info=ir.pipeline_info,
        pipeline_runtime_spec=ir.runtime_spec,
        executor_spec=runner_utils.extract_executor_spec(deployment, node_id),
        custom_driver_spec=runner_utils.extract_custom_driver_spec(deployment, node_id))

    def launch() -> str:
        with failed_resolutions_raise():
            info = node_launcher.launch()  # reuses the killed attempt's execution: one execution per node and run
        if info is None or info.execution_id is None:
            return "skipped"
        execution = metadata_store.MetadataStore(connection_config(store)).get_executions_by_id(
            [info.execution_id])[0]
        return "cached" if execution.last_known_state == metadata_store_pb2.Execution.CACHED else "executed"
    return launch



_UNFINISHED = (metadata_store_pb2.Execution.NEW, metadata_store_pb2.Execution.RUNNING)  # what a killed attempt left
_FINISHED = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)


def _execution_in(store: str, pipeline_name: str, node_id: str, run_id: str, states) -> int | None:
    """The id of the node's execution in run `run_id` in one of `states`, if any."""
    opened = metadata_store.MetadataStore(connection_config(store))
    run = opened.get_context_by_type_and_name("pipeline_run", run_id)
    node = opened.get_context_by_type_and_name("node", f"{pipeline_name}.{node_id}")
    if run is None or node is None:
        return None
    in_node = {e.id for e in opened.get_executions_by_context(node.id)}
    return next((e.id for e in opened.get_executions_by_context(run.id)
                 if e.id in in_node and e.last_known_state in states), None)


def _remove_outputs_of(pipeline_root: str, node_id: str, execution_id: int) -> list[str]:
    """Removes what an execution wrote before it was killed. TFX keeps an execution's outputs, working and
    temporary folders at <pipeline_root>/<node>/<output or .system/kind>/<execution id>; the relaunched
    execution (the same id) writes them anew, so nothing of the killed attempt stays beside its files."""
    node_dir = os.path.join(pipeline_root, node_id)
    folders = sorted(set(tf.io.gfile.glob(os.path.join(node_dir, "*", str(execution_id)))
                         + tf.io.gfile.glob(os.path.join(node_dir, ".system", "*", str(execution_id)))))
    for folder in folders:
        tf.io.gfile.rmtree(folder)
    return folders
