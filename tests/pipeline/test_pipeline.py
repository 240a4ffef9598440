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
