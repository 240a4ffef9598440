"""TFX's ImportExampleGen and Evaluator, taught that a span's test split may be missing.

Spans ingested now have three splits: train, eval (the Trainer keeps the epoch
with the lowest loss on it) and test (the Evaluator scores and blesses on it,
images that played no part in training or in the choice of epoch). Spans
written before, or by another tool, may have train and eval only. TFX's
ImportExampleGen fails on a split pattern that matches no file, and its
Evaluator on a split its examples do not have, so:
- SpanExampleGen's driver drops the test split from the input config when the
  span it resolves has no test file (train and eval stay required), so its
  Examples carry the splits the span has;
- JudgingEvaluator's executor scores the test split when the examples have it,
  else the eval split (contract.layout.judged_split), whose figures are then
  optimistic: the summary and the report say so; in the Vertex package it
  stamps its blessing with the pipeline's root (contract.metadata.stamp_root).
Everything else is TFX's own code. KubeflowV2DagRunner (Vertex) runs every
FileBasedExampleGen with TFX's container driver instead of this one: there a
span needs its three splits.
"""

from __future__ import annotations

import json
import posixpath

from tfx.components.evaluator import executor as evaluator_executor
from tfx.components.evaluator.component import Evaluator
from tfx.components.example_gen import driver as example_gen_driver
from tfx.components.example_gen import input_processor
from tfx.components.example_gen.import_example_gen.component import ImportExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from contract import interrupts, layout, metadata


def _span_pattern(pattern: str, span: int) -> str:
    return pattern.replace("{SPAN}", str(span))


class SpanSplitsDriver(example_gen_driver.FileBasedDriver):
    """Resolves the span from the required splits, then keeps only the optional splits that span has."""

    def resolve_exec_properties(self, exec_properties, pipeline_info, component_info):
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
        base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        range_config = None
        if exec_properties.get(standard_component_specs.RANGE_CONFIG_KEY):
            range_config = range_config_pb2.RangeConfig()
            proto_utils.json_to_proto(exec_properties[standard_component_specs.RANGE_CONFIG_KEY], range_config)
        required = [split for split in input_config.splits if split.name in layout.REQUIRED_SPLITS]
        span, _ = input_processor.FileBasedInputProcessor(base, required, range_config).resolve_span_and_version()
        kept = [split for split in input_config.splits if split.name in layout.REQUIRED_SPLITS
                or fileio.glob(posixpath.join(base, _span_pattern(split.pattern, span)))]
        if len(kept) < len(input_config.splits):
            del input_config.splits[:]
            input_config.splits.extend(kept)
            exec_properties = {**exec_properties,
                               standard_component_specs.INPUT_CONFIG_KEY: proto_utils.proto_to_json(input_config)}
        return super().resolve_exec_properties(exec_properties, pipeline_info, component_info)


class SpanExampleGen(ImportExampleGen):
    """ImportExampleGen reading the splits the latest span has (train and eval at least)."""

    DRIVER_CLASS = SpanSplitsDriver


class _JudgingExecutor(evaluator_executor.Executor):
    """TFX's Evaluator executor, on the split contract.layout.judged_split names for the examples given."""

    # A Ctrl-C that TFMA's or Beam's C code turned into another error is raised as the KeyboardInterrupt it was: TFX's
    # launcher would record that error as the Evaluator's failure; the run marks the stopped node CANCELED.
    @interrupts.ctrl_c_kept
    def Do(self, input_dict, output_dict, exec_properties):
        split_names = artifact_utils.decode_split_names(
            input_dict[standard_component_specs.EXAMPLES_KEY][0].split_names)
        exec_properties = {**exec_properties,
                           standard_component_specs.EXAMPLE_SPLITS_KEY: json.dumps([layout.judged_split(split_names)])}
        super().Do(input_dict, output_dict, exec_properties)
        metadata.stamp_root(output_dict[standard_component_specs.BLESSING_KEY])


class JudgingEvaluator(Evaluator):
    """TFX's Evaluator, scoring the test split, or the eval split of a span without one."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(_JudgingExecutor)
