"""The TFX pipeline definition, the same for every orchestrator.

create_pipeline() says what runs and how it connects. It touches no file and
picks no runner: the caller gives the paths, the metadata connection and the
Beam arguments.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import pathlib

from tfx import v1 as tfx
from tfx.dsl.components.base.base_node import BaseNode

from components.anomalies_gate import AnomaliesGate
from components.baseline_resolver import LatestBeforeStrategy, LatestBlessedBeforeStrategy
from components.serving_pusher import ServingPusher
from config import PipelineConfig
from contract.layout import SPLIT_PATTERNS

# The node ids live in contract.metadata (the summary, the history and the tests read them); named here too.
from contract.metadata import (  # noqa: F401
    ANOMALIES_GATE,
    BASELINE_RESOLVER,
    EVALUATOR,
    EXAMPLE_GEN,
    EXAMPLE_VALIDATOR,
    PREVIOUS_STATISTICS_RESOLVER,
    PUSHER,
    RESOLVER_IDS,
    SCHEMA_IMPORTER,
    SPAN_WINDOW_RESOLVER,
    STATISTICS_GEN,
    TRAINER,
    TRANSFORM,
    WARM_START_RESOLVER,
)
from pipeline import blessing

SCHEMA_PATH = str(pathlib.Path(__file__).parent / "schema" / "schema.pbtxt")
PREPROCESSING_FN = "trainer.preprocessing.preprocessing_fn"
RUN_FN = "trainer.task.run_fn"

# The nodes of a pipeline with the default settings.
NODE_IDS = (EXAMPLE_GEN, SCHEMA_IMPORTER, STATISTICS_GEN, EXAMPLE_VALIDATOR, PREVIOUS_STATISTICS_RESOLVER,
            ANOMALIES_GATE, TRANSFORM, TRAINER, BASELINE_RESOLVER, EVALUATOR, PUSHER)


# What TFX runs from this project by module path, which its cache key does not see into: Transform's
# preprocessing_fn, the Trainer's run_fn and the custom components and resolver strategies.
CODE_ENTRY_POINTS = ("trainer.preprocessing", "trainer.task", "components.anomalies_gate",
                     "components.serving_pusher", "components.baseline_resolver")
PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent


def _module_files(root: pathlib.Path, module: str) -> list[pathlib.Path]:
    """The file of `module` and the __init__.py of each package it is in (importing it runs them all)."""
    parts = module.split(".")
    files = [root.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts) + 1)]
    files.append(root.joinpath(*parts[:-1], parts[-1] + ".py"))
    return [f for f in files if f.is_file()]


def _imports(path: pathlib.Path) -> set[str]:
    """Every module named by an import anywhere in the file (inside functions too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def code_files(entry_points: tuple[str, ...] = CODE_ENTRY_POINTS, root: pathlib.Path = PROJECT_ROOT
               ) -> list[pathlib.Path]:
    """The project's files that the entry points run: their modules and every project module they import."""
    seen: set[pathlib.Path] = set()
    pending = list(entry_points)
    while pending:
        for path in _module_files(root, pending.pop()):
            if path not in seen:
                seen.add(path)
                pending += [name for name in _imports(path) if (root / name.split(".")[0] / "__init__.py").is_file()]
    return sorted(seen)


def code_fingerprint(root: pathlib.Path = PROJECT_ROOT) -> str:
    """Hash of code_files: Transform, Trainer and the custom components get it as a parameter, so that a change
    to any code they run is a cache miss (and a change anywhere else is not)."""
    digest = hashlib.sha256()
    for path in code_files(root=root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _newest_blessed_model(before, node_id: str, builtin: bool, served_first: bool = False) -> tfx.dsl.Resolver:
    """A Resolver of the newest blessed model older than `before`; with `served_first`, of the model served
    when `before` was made, if any (a rollback's included; see components.baseline_resolver)."""
    history = {"model": tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
               "model_blessing": tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing)}
    if builtin:
        return tfx.dsl.Resolver(strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
                                **history).with_id(node_id)
    if served_first:
        history["pushed_model"] = tfx.dsl.Channel(type=tfx.types.standard_artifacts.PushedModel)
    return tfx.dsl.Resolver(strategy_class=LatestBlessedBeforeStrategy, before=before, **history).with_id(node_id)


def create_pipeline(
    config: PipelineConfig,
    *,
    examples_root: str,
    pipeline_root: str,
    serving_dir: str,
    metadata_connection_config=None,
    beam_pipeline_args: list[str] | None = None,
    allow_anomalies: bool = False,
    builtin_resolver: bool = False,
    schema_path: str = SCHEMA_PATH,
) -> tfx.dsl.Pipeline:
    """Ingested spans -> validated, transformed, trained, evaluated, pushed model.

    `builtin_resolver` takes TFX's LatestBlessedModelStrategy for the baseline
    (and warm start), the only kind KubeflowV2DagRunner compiles (the Vertex
    package). Its baseline on an unchanged rerun is the candidate itself, so
    Evaluator and Pusher run again there; the ServingPusher still adds no
    version for a model it already serves.
    `schema_path` is where the curated schema is for the component that reads
    it: this checkout locally, <root>/schema on Kubeflow, the image's copy on Vertex.
    """
    # Ingest decides the splits (the source's own, or by content hash); they are kept as they are.
    example_gen = tfx.components.ImportExampleGen(
        input_base=examples_root,
        input_config=tfx.proto.Input(splits=[tfx.proto.Input.Split(name=name, pattern=pattern)
                                             for name, pattern in SPLIT_PATTERNS.items()]),
    ).with_id(EXAMPLE_GEN)
    schema_importer = tfx.components.ImportSchemaGen(schema_file=schema_path).with_id(SCHEMA_IMPORTER)
    # With the schema, statistics count the categorical label's values: the class-balance check needs them.
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"], schema=schema_importer.outputs["schema"]).with_id(STATISTICS_GEN)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_importer.outputs["schema"],
    ).with_id(EXAMPLE_VALIDATOR)
    previous_statistics = None if builtin_resolver else tfx.dsl.Resolver(
        strategy_class=LatestBeforeStrategy, before=example_gen.outputs["examples"],
        artifact=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ExampleStatistics),
    ).with_id(PREVIOUS_STATISTICS_RESOLVER)
    code_version = code_fingerprint()
    gate = AnomaliesGate(
        anomalies=example_validator.outputs["anomalies"], schema=schema_importer.outputs["schema"],
        statistics=statistics_gen.outputs["statistics"],
        previous_statistics=previous_statistics.outputs["artifact"] if previous_statistics else None,
        allow_anomalies=allow_anomalies, max_class_ratio=float(config.data.max_class_ratio),
        max_size_drift=float(config.data.max_size_drift), min_eval_examples=config.data.min_eval_examples,
        code_version=code_version,
    ).with_id(ANOMALIES_GATE)

    training_examples = example_gen.outputs["examples"]
    span_window = None
    if config.data.span_window > 1:
        if builtin_resolver:
            raise ValueError("span_window > 1 needs TFX's SpanRangeStrategy, which KubeflowV2DagRunner cannot "
                             "compile; use span_window 1 on Kubeflow")
        span_window = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.SpanRangeStrategy,
            config={"range_config": tfx.proto.RangeConfig(
                rolling_range=tfx.proto.RollingRange(num_spans=config.data.span_window))},
            examples=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Examples,
                                     producer_component_id=EXAMPLE_GEN),
        ).with_id(SPAN_WINDOW_RESOLVER)
        span_window.add_upstream_node(example_gen)  # this run's span must exist before the window is taken
        training_examples = span_window.outputs["examples"]

    # Transform analyzes and writes its graph, but does not materialize its output: the Trainer
    # runs the graph (the TFT layer) while reading, decoding each image once into its cache.
    transform = tfx.components.Transform(
        examples=training_examples,
        schema=gate.outputs["validated_schema"],
        preprocessing_fn=PREPROCESSING_FN,
        materialize=False,
        disable_statistics=True,  # pre/post-transform statistics of pixel arrays cost most of its time
        custom_config={"image_size": config.data.image_size, "code_version": code_version},
    ).with_id(TRANSFORM)
    warm_start = _newest_blessed_model(example_gen.outputs["examples"], WARM_START_RESOLVER, builtin_resolver) \
        if config.training.warm_start else None
    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        base_model=warm_start.outputs["model"] if warm_start else None,
        examples=training_examples,
        transform_graph=transform.outputs["transform_graph"],
        schema=gate.outputs["validated_schema"],
        train_args=tfx.proto.TrainArgs(splits=["train"]),
        eval_args=tfx.proto.EvalArgs(splits=["eval"]),
        custom_config={"image_size": config.data.image_size, "training": dataclasses.asdict(config.training),
                       "code_version": code_version},
    ).with_id(TRAINER)

    baseline = _newest_blessed_model(trainer.outputs["model"], BASELINE_RESOLVER, builtin_resolver, served_first=True)
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        example_splits=["eval"],
        model=trainer.outputs["model"],
        baseline_model=baseline.outputs["model"],
        eval_config=blessing.eval_config(config),
    ).with_id(EVALUATOR)
    pusher = ServingPusher(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"], serving_dir=serving_dir,
        code_version=code_version, model_evaluation=evaluator.outputs["evaluation"], examples=training_examples,
        examples_root=examples_root, pipeline_name=config.name,
        training_settings=json.dumps(dataclasses.asdict(config.training), sort_keys=True),
    ).with_id(PUSHER)

    optional = [node for node in (previous_statistics, span_window, warm_start) if node is not None]
    components: list[BaseNode] = [example_gen, schema_importer, statistics_gen, example_validator, *optional, gate,
                                  transform, trainer, baseline, evaluator, pusher]
    return tfx.dsl.Pipeline(
        pipeline_name=config.name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=True,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [],
    )
