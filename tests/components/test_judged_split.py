"""ImportExampleGen's driver reads the splits the latest span has; the Evaluator judges on test, else eval."""

import json

import pytest
from tfx.components.example_gen import driver as tfx_driver
from tfx.proto import example_gen_pb2
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

from components import judged_split
from contract import layout


def _span(root, number, splits):
    for split in splits:
        folder = root / f"span-{number}" / split
        folder.mkdir(parents=True)
        (folder / "images-00000-of-00001.tfrecord").write_bytes(b"")


def _resolve(root):
    config = example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name=name, pattern=pattern)
                                           for name, pattern in layout.SPLIT_PATTERNS.items()])
    properties = {standard_component_specs.INPUT_BASE_KEY: str(root),
                  standard_component_specs.INPUT_CONFIG_KEY: proto_utils.proto_to_json(config),
                  standard_component_specs.RANGE_CONFIG_KEY: None}
    resolved = judged_split.SpanSplitsDriver(None).resolve_exec_properties(properties, None, None)
    config = example_gen_pb2.Input()
    proto_utils.json_to_proto(resolved[standard_component_specs.INPUT_CONFIG_KEY], config)
    return resolved["span"], {split.name: split.pattern for split in config.splits}


def test_a_span_with_three_splits_is_read_with_three(tmp_path):
    _span(tmp_path, 1, ["train", "eval"])
    _span(tmp_path, 2, ["train", "eval", "test"])
    span, patterns = _resolve(tmp_path)
    assert span == 2 and patterns == {"train": "span-2/train/*", "eval": "span-2/eval/*", "test": "span-2/test/*"}


def test_a_latest_span_without_a_test_split_is_read_with_its_two(tmp_path):
    _span(tmp_path, 1, ["train", "eval", "test"])  # an older span's test split is not this span's
    _span(tmp_path, 2, ["train", "eval"])
    span, patterns = _resolve(tmp_path)
    assert span == 2 and patterns == {"train": "span-2/train/*", "eval": "span-2/eval/*"}
    # TFX's own driver refuses such a span outright
    config = example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name=name, pattern=pattern)
                                           for name, pattern in layout.SPLIT_PATTERNS.items()])
    with pytest.raises(ValueError):
        tfx_driver.FileBasedDriver(None).resolve_exec_properties(
            {standard_component_specs.INPUT_BASE_KEY: str(tmp_path),
             standard_component_specs.INPUT_CONFIG_KEY: proto_utils.proto_to_json(config)}, None, None)


def test_train_and_eval_stay_required(tmp_path):
    _span(tmp_path, 1, ["train", "test"])
    with pytest.raises(ValueError, match="eval"):
        _resolve(tmp_path)


def test_the_evaluator_judges_on_test_and_on_eval_only_where_there_is_no_test():
    assert layout.judged_split(["train", "eval", "test"]) == "test"
    assert layout.judged_split(json.loads('["train", "eval"]')) == "eval"


def test_a_ctrl_c_that_c_code_turned_into_another_error_leaves_the_evaluator_as_a_keyboard_interrupt(monkeypatch):
    """TFX's launcher records an executor's Exception as the node's failure; a KeyboardInterrupt passes it by, and
    the run marks the node CANCELED. Other errors stay as they were."""
    from tfx.components.evaluator import executor as evaluator_executor
    from tfx.types import artifact_utils, standard_artifacts

    examples = standard_artifacts.Examples()
    examples.split_names = artifact_utils.encode_split_names(["train", "eval", "test"])
    inputs = {standard_component_specs.EXAMPLES_KEY: [examples]}
    outputs = {standard_component_specs.BLESSING_KEY: [standard_artifacts.ModelBlessing()]}

    def as_c_code_reports_a_ctrl_c(self, input_dict, output_dict, exec_properties):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:  # what CPython raises when C code called back into Python
            raise SystemError("<built-in function __import__> returned a result with an exception set") from interrupt

    monkeypatch.setattr(evaluator_executor.Executor, "Do", as_c_code_reports_a_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        judged_split._JudgingExecutor().Do(inputs, outputs, {})
    monkeypatch.setattr(evaluator_executor.Executor, "Do", lambda *args: (_ for _ in ()).throw(ValueError("a fault")))
    with pytest.raises(ValueError, match="a fault"):
        judged_split._JudgingExecutor().Do(inputs, outputs, {})
