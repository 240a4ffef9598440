"""What the built pipeline wires (create_pipeline, not run): the splits each component reads, the data gate's
settings and inputs, and the span window. The e2e scenarios show the same through real runs."""

import json

import pytest

from config import PipelineConfig
from contract import layout
from contract import metadata as node_ids
from pipeline.pipeline import create_pipeline


def _nodes(**overrides):
    config = PipelineConfig().replace(**overrides)
    built = create_pipeline(config, examples_root="/nowhere/examples", pipeline_root="/nowhere/root",
                            serving_dir="/nowhere/serving_model")
    return {node.id: node for node in built.components}


@pytest.fixture(scope="module")
def nodes():
    return _nodes(min_eval_examples=45, max_size_drift=0.25)


def test_the_trainer_reads_train_and_eval_and_the_evaluator_scores_test(nodes):
    trainer = nodes[node_ids.TRAINER]
    assert json.loads(trainer.exec_properties["train_args"])["splits"] == [layout.TRAIN_SPLIT]
    assert json.loads(trainer.exec_properties["eval_args"])["splits"] == [layout.SELECTION_SPLIT]
    assert layout.TEST_SPLIT not in (layout.TRAIN_SPLIT, layout.SELECTION_SPLIT)
    assert json.loads(nodes[node_ids.EVALUATOR].exec_properties["example_splits"]) == [layout.TEST_SPLIT]


def test_the_data_gate_gets_its_settings_and_the_previous_spans_statistics(nodes):
    gate = nodes[node_ids.ANOMALIES_GATE]
    assert gate.exec_properties["min_eval_examples"] == 45
    assert gate.exec_properties["max_size_drift"] == 0.25
    assert gate.exec_properties["allow_anomalies"] is False
    assert gate.inputs["previous_statistics"].producer_component_id == node_ids.PREVIOUS_STATISTICS_RESOLVER
    previous = nodes[node_ids.PREVIOUS_STATISTICS_RESOLVER]
    assert {node.id for node in previous.upstream_nodes} == {node_ids.EXAMPLE_GEN}  # older than this run's span
    assert gate.inputs["statistics"].producer_component_id == node_ids.STATISTICS_GEN


@pytest.mark.parametrize("window", [1, 3])
def test_the_span_window_feeds_transform_and_trainer_and_the_evaluator_judges_this_span(window):
    nodes = _nodes(span_window=window)
    reader = node_ids.SPAN_WINDOW_RESOLVER if window > 1 else node_ids.EXAMPLE_GEN
    for node in (node_ids.TRANSFORM, node_ids.TRAINER):
        assert nodes[node].inputs["examples"].producer_component_id == reader
    assert nodes[node_ids.EVALUATOR].inputs["examples"].producer_component_id == node_ids.EXAMPLE_GEN
    if window > 1:
        config = nodes[node_ids.SPAN_WINDOW_RESOLVER].exec_properties["source_uri"]["range_config"]
        assert config.rolling_range.num_spans == window
    else:
        assert node_ids.SPAN_WINDOW_RESOLVER not in nodes


def test_with_tune_the_tuner_searches_on_train_and_eval_and_feeds_the_trainer():
    from config import TuningConfig
    from pipeline.pipeline import TUNER_FN

    built = create_pipeline(PipelineConfig(), examples_root="/nowhere/examples", pipeline_root="/nowhere/root",
                            serving_dir="/nowhere/serving_model", tuning=TuningConfig(trials=3, minutes=5.0),
                            fixed_settings=("dropout",))
    nodes = {node.id: node for node in built.components}
    tuner, trainer = nodes[node_ids.TUNER], nodes[node_ids.TRAINER]
    assert node_ids.HYPERPARAMETERS_RESOLVER not in nodes
    # the test split, which the Evaluator blesses on, is never the Tuner's
    assert json.loads(tuner.exec_properties["train_args"])["splits"] == [layout.TRAIN_SPLIT]
    assert json.loads(tuner.exec_properties["eval_args"])["splits"] == [layout.SELECTION_SPLIT]
    assert tuner.exec_properties["tuner_fn"] == TUNER_FN
    custom = json.loads(tuner.exec_properties["custom_config"])
    assert custom["tuning"] == {"trials": 3, "minutes": 5.0, "epoch_fraction": 0.25}
    assert custom["fixed_settings"] == ["dropout"]
    assert trainer.inputs["hyperparameters"].producer_component_id == node_ids.TUNER
    assert trainer.inputs["hyperparameters"].output_key == "best_hyperparameters"
    assert json.loads(trainer.exec_properties["custom_config"])["fixed_settings"] == ["dropout"]


def test_without_tune_the_trainer_takes_the_newest_search_result_of_the_pipeline(nodes):
    from components.tuner import NewestStrategy

    assert node_ids.TUNER not in nodes
    resolver = nodes[node_ids.HYPERPARAMETERS_RESOLVER]
    assert resolver._strategy_class is NewestStrategy
    assert resolver._raw_inputs["hyperparameters"].type_name == "HyperParameters"
    assert nodes[node_ids.TRAINER].inputs["hyperparameters"].producer_component_id == \
        node_ids.HYPERPARAMETERS_RESOLVER


def test_the_newest_result_or_none():
    from tfx.types import standard_artifacts

    from components.tuner import NewestStrategy

    results = []
    for artifact_id in (4, 9, 7):
        results.append(standard_artifacts.HyperParameters())
        results[-1].id = artifact_id
    assert [a.id for a in NewestStrategy().resolve_artifacts(None, {"hyperparameters": results})[
        "hyperparameters"]] == [9]
    assert NewestStrategy().resolve_artifacts(None, {"hyperparameters": []}) == {"hyperparameters": []}
