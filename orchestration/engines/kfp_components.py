"""The lightweight Python components of the Kubeflow package.

KFP copies each function's source into the package and runs it in the
project's image with `python3 -m kfp.dsl.executor_main`, so each one imports
what it needs inside its body (TensorFlow, TFX and Beam without the garbage collector's passes:
contract.startup) and hands the work to orchestration.engines.kfp_tasks.
A body is the task's command line: it alone writes to the task's log, the
lines kfp_tasks hands to its `say` (flushed, so they keep their place among
TFX's and Beam's own output).
"""

from kfp.dsl import HTML, ClassificationMetrics, Markdown, Metrics, Output


def ingest_source(source_kind: str, source: str, root: str, data: dict, metadata_store: str, run_id: str,
                  lease_seconds: float, ingest_report: Output[Markdown]) -> str:
    """Takes the root's lease; the source becomes a new span under <root>/examples (unchanged data writes
    nothing)."""
    from contract import startup

    with startup.loading_libraries():
        from orchestration.engines import kfp_tasks

    table = kfp_tasks.ingest(source_kind, source, root, data, metadata_store, run_id, lease_seconds,
                             say=lambda line: print(line, flush=True))
    with open(ingest_report.path, "w") as f:
        f.write("```\n" + table + "\n```\n")
    return table


def tfx_node(node_program: str, resolver_programs: list, run_id: str, metadata_store: str, root: str) -> str:
    """Runs one node of the TFX pipeline with TFX's launcher against the shared ML Metadata store, after the
    resolvers only it reads."""
    from contract import startup

    with startup.loading_libraries():
        from orchestration.engines import kfp_tasks

    return kfp_tasks.run_node(node_program, run_id, metadata_store, root, say=lambda line: print(line, flush=True),
                              resolver_programs=resolver_programs)


def kserve_rollout(root: str, serving: dict, run_id: str) -> str:
    """On a gs:// root, where KServe copies the versions once: a new revision of the InferenceService that serves
    the highest pushed version (nothing when it already does)."""
    from contract import startup

    with startup.loading_libraries():
        from orchestration.engines import kfp_tasks

    return kfp_tasks.rollout(root, serving, run_id, say=lambda line: print(line, flush=True))


def run_report(metadata_store: str, run_id: str, pipeline_name: str, root: str, settings: dict, node_ids: list,
               metrics: Output[Metrics], confusion_matrix: Output[ClassificationMetrics],
               decision: Output[Markdown], report: Output[HTML]) -> str:
    """The run's exit handler: its outcome, metrics, confusion matrix, blessing decision and HTML report for the
    KFP run page; releases the root."""
    from contract import features, startup

    with startup.loading_libraries():
        from orchestration.engines import kfp_tasks

    values, matrix, run_folder = kfp_tasks.report(metadata_store, run_id, pipeline_name, root, settings, node_ids,
                                                  decision.path, report.path, say=lambda line: print(line, flush=True))
    for name, value in values.items():
        metrics.log_metric(name, value)
    if matrix:
        confusion_matrix.log_confusion_matrix(
            list(features.LABEL_NAMES),
            [[int(matrix["true_negatives"]), int(matrix["false_positives"])],
             [int(matrix["false_negatives"]), int(matrix["true_positives"])]])
    return run_folder


def monitor_traffic(root: str, metadata_store: str, settings: dict, drift_report: Output[HTML],
                    verdict: Output[Markdown]) -> str:
    """The monitoring package's one task: `monitor` on the root's traffic against the served model's data, the
    check recorded in the shared ML Metadata store; the drift report and the verdict for the KFP run page."""
    from contract import startup

    with startup.loading_libraries():
        from orchestration.engines import kfp_tasks

    return kfp_tasks.monitor(root, metadata_store, settings, drift_report.path, verdict.path,
                             say=lambda line: print(line, flush=True))
