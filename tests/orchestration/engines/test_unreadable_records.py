"""Records a deployment's run reads back (its tasks' records, its summary) and a model's training history:
damaged, each is named in one line and the reader goes on."""

import json

import pytest

from contract import layout, storage
from contract.layout import RunLayout
from orchestration.engines import kfp_runs, kfp_tasks
from trainer import export


class _NoNodes:
    nodes = []


def test_a_damaged_task_record_is_a_failure_the_exit_handler_names(tmp_path):
    folder = RunLayout(str(tmp_path)).run_dir("run-1") + "/" + layout.TASKS_DIR
    (tmp_path / "runs" / "run-1" / layout.TASKS_DIR).mkdir(parents=True)
    (tmp_path / "runs" / "run-1" / layout.TASKS_DIR / "ingest.json").write_text('{"task": "ingest", "refu')
    (tmp_path / "runs" / "run-1" / layout.TASKS_DIR / "rollout.json").write_text(
        json.dumps({"task": "rollout", "rollout": "serves version 2"}))
    records = kfp_tasks._read_records(str(tmp_path), "run-1")
    assert records["rollout"] == {"task": "rollout", "rollout": "serves version 2"}
    assert records["ingest"]["error"].startswith(f"its task record is unreadable: {folder}/ingest.json: not valid JSON")
    assert kfp_tasks.outcome_error(_NoNodes(), records, None, [], frozenset()).startswith(
        "failed at ingest: its task record is unreadable: ")


def test_a_damaged_run_summary_is_named_as_the_runs_outcome(tmp_path):
    (tmp_path / layout.SUMMARY_FILE).write_text("[]")
    assert kfp_runs.run_outcome(str(tmp_path)) == (f"its summary is unreadable: {tmp_path / layout.SUMMARY_FILE}: "
                                                   "holds a list where an object belongs")
    (tmp_path / layout.SUMMARY_FILE).write_text('{"error": "failed at Trainer: out of memory"}')
    assert kfp_runs.run_outcome(str(tmp_path)) == "failed at Trainer: out of memory"


@pytest.mark.parametrize("history, reason", [
    ({"epochs": [{"phase": "head"}]}, "its 'epochs' is not a list of epochs with their number"),
    ({"epochs": [], "cache": {"views": 2}}, "its 'cache' lacks location, views, bytes or fill_seconds"),
    ({"epochs": [], "devices": "CPU:0"}, "its 'devices' is not a list"),
])
def test_a_training_history_of_another_shape_is_named(tmp_path, history, reason):
    path = tmp_path / layout.TRAINING_HISTORY_FILE
    path.parent.mkdir()
    path.write_text(json.dumps(history))
    with pytest.raises(storage.UnreadableFileError, match=f"^{path}: {reason}$".replace("(", r"\(")):
        export.read_training_record(str(tmp_path))
    path.write_text(json.dumps({"epochs": [{"epoch": 0}], "devices": ["CPU:0"], "cache": None}))
    assert export.read_training_record(str(tmp_path)) == {"devices": ["CPU:0"], "cached_views": None, "cache": None,
                                                          "settings": None, "hyperparameters": None}


def _model_with(tmp_path, name: str, content: str) -> str:
    """A Model artifact's folder whose SavedModel folder holds one damaged file `name`."""
    path = tmp_path / "model" / layout.SERVING_MODEL_SUBDIR / name
    path.parent.mkdir(parents=True)
    path.write_text(content)
    return str(tmp_path / "model")


@pytest.mark.parametrize("name", [layout.TFLITE_FIDELITY_FILE, layout.TRAINING_HISTORY_FILE])
def test_a_runs_summary_notes_a_damaged_file_of_its_model(tmp_path, name):
    from ml_metadata.proto import metadata_store_pb2

    from contract import metadata as metadata_lib
    from reporting import run_summary

    store = metadata_lib.open_store(metadata_lib.sqlite_store(tmp_path / "metadata.sqlite"))
    run = metadata_store_pb2.Context(type_id=store.put_context_type(metadata_store_pb2.ContextType(
        name="pipeline_run")), name="run-1")
    [run.id] = store.put_contexts([run])
    model = metadata_store_pb2.Artifact(type_id=store.put_artifact_type(metadata_store_pb2.ArtifactType(name="Model")),
                                        uri=_model_with(tmp_path, name, "{\"models\": "))
    execution = metadata_store_pb2.Execution(type_id=store.put_execution_type(metadata_store_pb2.ExecutionType(
        name="Trainer")), last_known_state=metadata_store_pb2.Execution.COMPLETE)
    store.put_execution(execution, [(model, metadata_store_pb2.Event(type=metadata_store_pb2.Event.OUTPUT))], [run])

    summary = run_summary.summarize_run(store, "cats-vs-dogs", run_id="run-1")
    path = layout.serving_model_dir(model.uri) + "/" + name
    assert summary.notes == [f"unreadable: {path}: not valid JSON (Expecting value: line 1 column 12 (char 11))"]
    assert summary.tflite is None and summary.training is None
    assert f"note: unreadable: {path}: not valid JSON" in summary.text()


def test_a_model_card_is_written_without_a_damaged_fidelity_file(tmp_path):
    from components import model_card

    model_dir = layout.serving_model_dir(_model_with(tmp_path, layout.TFLITE_FIDELITY_FILE, "[]"))
    facts = model_card.gather("cats-vs-dogs", str(tmp_path / "model"), model_dir, None, [], "", {})
    assert facts.tflite is None and "# " in model_card.render(facts)
