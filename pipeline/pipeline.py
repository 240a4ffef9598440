"""The TFX pipeline definition, the same for every orchestrator.

create_pipeline() says what runs and how it connects. It touches no file and
picks no runner: the caller gives the paths, the metadata connection and the
Beam arguments.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Collection

# Not `tfx.v1`: it imports TFX's Google Cloud extensions, about 3 s of every `run` and `compile` for none of this.
from tfx.components.example_validator.component import ExampleValidator
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.components.statistics_gen.component import StatisticsGen
from tfx.components.trainer.component import Trainer
from tfx.components.transform.component import Transform
from tfx.dsl.components.base.base_node import BaseNode
from tfx.dsl.components.common.resolver import Resolver
from tfx.dsl.input_resolution.strategies.latest_artifact_strategy import LatestArtifactStrategy
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import LatestBlessedModelStrategy
from tfx.orchestration.pipeline import Pipeline
from tfx.proto import example_gen_pb2, range_config_pb2, trainer_pb2
from tfx.types import standard_artifacts
from tfx.types.channel import Channel

from components.anomalies_gate import AnomaliesGate
from components.baseline_resolver import LatestBeforeStrategy, LatestBlessedBeforeStrategy, RootSpanRangeStrategy
from components.judged_split import JudgingEvaluator, SpanExampleGen
from components.serving_pusher import ServingPusher
from components.tuner import NewestStrategy, SearchingTuner
from config import PipelineConfig, TuningConfig, beam_policy
from contract import layout
from contract.metadata import (
    ANOMALIES_GATE,
    BASELINE_RESOLVER,
    EVALUATOR,
    EXAMPLE_GEN,
    EXAMPLE_VALIDATOR,
    HYPERPARAMETERS_RESOLVER,
    PREVIOUS_STATISTICS_RESOLVER,
    PUSHER,
    SCHEMA_IMPORTER,
    SPAN_WINDOW_RESOLVER,
    STATISTICS_GEN,
    TRAINER,
    TRANSFORM,
    TUNER,
    WARM_START_RESOLVER,
)
from pipeline import SCHEMA_PATH, blessing
from pipeline.code_fingerprint import code_fingerprint

PREPROCESSING_FN = "trainer.preprocessing.preprocessing_fn"
RUN_FN = "trainer.task.run_fn"
TUNER_FN = "trainer.tuning.tuner_fn"


def _scoped(scope: str | None) -> dict:
    """The Resolver config of this project's strategies: read only `scope`'s artifacts (None: all of them)."""
    return {"config": {"root": scope}} if scope else {}


def _newest_blessed_model(before, node_id: str, builtin: bool, served_first: bool = False,
                          scope: str | None = None) -> Resolver:
    """A Resolver of the newest blessed model older than `before`; with `served_first`, of the model served
    when `before` was made, if any (a rollback's included; see components.baseline_resolver)."""
    history = {"model": Channel(type=standard_artifacts.Model),
               "model_blessing": Channel(type=standard_artifacts.ModelBlessing)}
    if builtin:
        return Resolver(strategy_class=LatestBlessedModelStrategy, **history).with_id(node_id)
    if served_first:
        history["pushed_model"] = Channel(type=standard_artifacts.PushedModel)
    return Resolver(strategy_class=LatestBlessedBeforeStrategy, before=before, **history, **_scoped(scope)
                    ).with_id(node_id)


def _data_nodes(config: PipelineConfig, examples_root: str, schema_path: str, allow_anomalies: bool,
                builtin_resolver: bool, code_version: str, scope: str | None = None) -> dict[str, BaseNode]:
    """{node id: node} from the ingested spans to the data gate: examples, schema, statistics, anomalies."""
    # Ingest decides the splits (the source's own, or by content hash); they are kept as they are. A span
    # without a test split (written earlier or by another tool) is read with the two it has.
    example_gen = SpanExampleGen(
        input_base=examples_root,
        input_config=example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name=name, pattern=pattern)
                                                   for name, pattern in layout.SPLIT_PATTERNS.items()]),
    ).with_id(EXAMPLE_GEN)
    schema_importer = ImportSchemaGen(schema_file=schema_path).with_id(SCHEMA_IMPORTER)
    # With the schema, statistics count the categorical label's values: the class-balance check needs them.
    statistics_gen = StatisticsGen(
        examples=example_gen.outputs["examples"], schema=schema_importer.outputs["schema"]).with_id(STATISTICS_GEN)
    example_validator = ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_importer.outputs["schema"],
    ).with_id(EXAMPLE_VALIDATOR)
    previous_statistics = None if builtin_resolver else Resolver(
        strategy_class=LatestBeforeStrategy, before=example_gen.outputs["examples"],
        artifact=Channel(type=standard_artifacts.ExampleStatistics), **_scoped(scope),
    ).with_id(PREVIOUS_STATISTICS_RESOLVER)
    gate = AnomaliesGate(
        anomalies=example_validator.outputs["anomalies"], schema=schema_importer.outputs["schema"],
        statistics=statistics_gen.outputs["statistics"],
        previous_statistics=previous_statistics.outputs["artifact"] if previous_statistics else None,
        allow_anomalies=allow_anomalies, max_class_ratio=float(config.data.max_class_ratio),
        max_size_drift=float(config.data.max_size_drift), min_eval_examples=config.data.min_eval_examples,
        code_version=code_version,
    ).with_id(ANOMALIES_GATE)
    nodes = [example_gen, schema_importer, statistics_gen, example_validator, previous_statistics, gate]
    return {node.id: node for node in nodes if node is not None}


def _span_window(config: PipelineConfig, example_gen: BaseNode, builtin_resolver: bool,
                 scope: str | None = None) -> Resolver | None:
    """With span_window > 1, the resolver of the last N spans the Transform and Trainer read; else None."""
    if config.data.span_window <= 1:
        return None
    if builtin_resolver:
        raise ValueError("span_window > 1 needs TFX's SpanRangeStrategy, which KubeflowV2DagRunner cannot "
                         "compile; use span_window 1 on Kubeflow")
    span_window = Resolver(
        strategy_class=RootSpanRangeStrategy,
        config={"range_config": range_config_pb2.RangeConfig(
            rolling_range=range_config_pb2.RollingRange(num_spans=config.data.span_window)),
            **_scoped(scope).get("config", {})},
        examples=Channel(type=standard_artifacts.Examples, producer_component_id=EXAMPLE_GEN),
    ).with_id(SPAN_WINDOW_RESOLVER)
    span_window.add_upstream_node(example_gen)  # this run's span must exist before the window is taken
    return span_window


def _hyperparameters(tuning: TuningConfig | None, example_gen: BaseNode, training_examples, transform, gate,
                     custom_config: dict, builtin_resolver: bool, scope: str | None = None) -> BaseNode:
    """With `tuning`, the Tuner searching on the train split, choosing on the eval split (the test split, which
    the Evaluator blesses on, stays unseen); without, the Resolver of the newest search's result recorded for
    the pipeline (none: the Trainer trains with the settings as configured). Its `best_hyperparameters` or
    `hyperparameters` output feeds the Trainer."""
    if tuning is None:
        # TFX's own strategy is the only kind KubeflowV2DagRunner compiles; it fails where there is no result yet.
        resolver = Resolver(strategy_class=LatestArtifactStrategy if builtin_resolver else NewestStrategy,
                            hyperparameters=Channel(type=standard_artifacts.HyperParameters),
                            **({} if builtin_resolver else _scoped(scope))).with_id(HYPERPARAMETERS_RESOLVER)
        resolver.add_upstream_node(example_gen)  # a run starts from its data, as every other node waits for it
        return resolver
    return SearchingTuner(
        tuner_fn=TUNER_FN,
        examples=training_examples,
        transform_graph=transform.outputs["transform_graph"],
        schema=gate.outputs["validated_schema"],
        train_args=trainer_pb2.TrainArgs(splits=[layout.TRAIN_SPLIT]),
        eval_args=trainer_pb2.EvalArgs(splits=[layout.SELECTION_SPLIT]),
        custom_config={**custom_config, "tuning": dataclasses.asdict(tuning)},
    ).with_id(TUNER)


def _training_nodes(config: PipelineConfig, example_gen: BaseNode, gate: BaseNode, training_examples, *,
                    builtin_resolver: bool, code_version: str, tuning: TuningConfig | None,
                    fixed_settings: Collection[str], scope: str | None = None) -> dict[str, BaseNode]:
    """{node id: node} from Transform to the Trainer: Transform, the Tuner or the hyperparameters' Resolver, the
    warm start's Resolver (with warm_start) and the Trainer."""
    # Transform analyzes and writes its graph, but does not materialize its output: the Trainer
    # runs the graph (the TFT layer) while reading, decoding each image once into its cache.
    transform = Transform(
        examples=training_examples,
        schema=gate.outputs["validated_schema"],
        preprocessing_fn=PREPROCESSING_FN,
        materialize=False,
        disable_statistics=True,  # pre/post-transform statistics of pixel arrays cost most of its time
        custom_config={"image_size": config.data.image_size, "code_version": code_version},
    ).with_id(TRANSFORM)
    training_settings = {"image_size": config.data.image_size, "training": dataclasses.asdict(config.training),
                         "max_image_pixels": config.data.max_image_pixels, "code_version": code_version,
                         "fixed_settings": sorted(fixed_settings)}
    hyperparameters = _hyperparameters(tuning, example_gen, training_examples, transform, gate, training_settings,
                                       builtin_resolver, scope)
    warm_start = _newest_blessed_model(example_gen.outputs["examples"], WARM_START_RESOLVER, builtin_resolver,
                                       scope=scope) \
        if config.training.warm_start else None
    trainer = Trainer(
        run_fn=RUN_FN,
        base_model=warm_start.outputs["model"] if warm_start else None,
        examples=training_examples,
        transform_graph=transform.outputs["transform_graph"],
        schema=gate.outputs["validated_schema"],
        # The kept epoch is chosen on the eval split; the test split stays unseen until the Evaluator.
        train_args=trainer_pb2.TrainArgs(splits=[layout.TRAIN_SPLIT]),
        eval_args=trainer_pb2.EvalArgs(splits=[layout.SELECTION_SPLIT]),
        hyperparameters=hyperparameters.outputs["best_hyperparameters" if tuning else "hyperparameters"],
        custom_config=training_settings,
    ).with_id(TRAINER)

    nodes = [transform, hyperparameters, warm_start, trainer]
    return {node.id: node for node in nodes if node is not None}


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
    served_as: tuple[str, str] = ("", ""),
    tuning: TuningConfig | None = None,
    fixed_settings: Collection[str] = (),
    scope: str | None = None,
) -> Pipeline:
    """Ingested spans -> validated, transformed, trained, evaluated, pushed model.

    `builtin_resolver` takes TFX's LatestBlessedModelStrategy for the baseline
    (and warm start), the only kind KubeflowV2DagRunner compiles (the Vertex
    package). Its baseline on an unchanged rerun is the candidate itself, so
    Evaluator and Pusher run again there; the ServingPusher still adds no
    version for a model it already serves.
    `schema_path` is where the curated schema is for the component that reads
    it: this checkout locally, <root>/schema on Kubeflow, the image's copy on Vertex.
    `served_as`: (model name, serving folder) as the server sees them (components.serving_pusher.name_version).
    `tuning`: search the hyperparameters this run (TFX's Tuner, trainer.tuning) within this budget; None: the
    Trainer takes the newest search's result recorded for the pipeline, or the settings as configured.
    `fixed_settings`: TrainingConfig fields the user set, which no search changes (not searched, not replaced
    by a recorded result).
    `scope`: a root whose artifacts alone this project's resolvers read (the Kubeflow package's, whose store
    other deployments of the same pipeline name may share); None: every artifact of the pipeline's context.
    """
    code_version = code_fingerprint()
    data = _data_nodes(config, examples_root, schema_path, allow_anomalies, builtin_resolver, code_version, scope)
    example_gen, gate = data[EXAMPLE_GEN], data[ANOMALIES_GATE]
    span_window = _span_window(config, example_gen, builtin_resolver, scope)
    training_examples = span_window.outputs["examples"] if span_window else example_gen.outputs["examples"]

    training = _training_nodes(config, example_gen, gate, training_examples, builtin_resolver=builtin_resolver,
                               code_version=code_version, tuning=tuning, fixed_settings=fixed_settings, scope=scope)
    trainer = training[TRAINER]

    baseline = _newest_blessed_model(trainer.outputs["model"], BASELINE_RESOLVER, builtin_resolver, served_first=True,
                                     scope=scope)
    evaluator = JudgingEvaluator(
        examples=example_gen.outputs["examples"],
        example_splits=[layout.TEST_SPLIT],  # the eval split where the span has no test split
        model=trainer.outputs["model"],
        baseline_model=baseline.outputs["model"],
        eval_config=blessing.eval_config(config),
    ).with_id(EVALUATOR)
    pusher = ServingPusher(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"], serving_dir=serving_dir,
        code_version=code_version, model_evaluation=evaluator.outputs["evaluation"], examples=training_examples,
        examples_root=examples_root, pipeline_name=config.name, served_name=served_as[0], served_base_path=served_as[1],
        training_settings=json.dumps(dataclasses.asdict(config.training), sort_keys=True),
    ).with_id(PUSHER)

    optional = [node for node in (span_window,) if node is not None]
    components: list[BaseNode] = [*data.values(), *optional, *training.values(), baseline, evaluator, pusher]
    return Pipeline(
        pipeline_name=config.name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=True,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_policy.tfx_args(beam_pipeline_args or []),
    )
