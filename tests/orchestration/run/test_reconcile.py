"""The history is never wrong about what is served: versions published but never recorded are found and recorded.

A real ML Metadata store (SQLite) holding what a pipeline writes for the
history (two blessed Models, a push of the first), a real serving folder, and
the faults: a Pusher killed after publishing and before recording, a rollback
killed between its push and its record.
"""

import pathlib
import shutil

import pytest
from ml_metadata.proto import metadata_store_pb2

import pipeline_runner
from components.serving_pusher import existing_versions, push_model
from contract import layout, served
from contract import metadata as metadata_lib
from contract.layout import RunLayout
from orchestration.run import reconcile
from orchestration.serving import rollback
from reporting import model_history
from tests.helpers import servable_model, tree_digest
from tests.object_store import Killed

PIPELINE = "cats-vs-dogs"


@pytest.fixture
def history(tmp_path, request):
    """A root whose store knows models 1 and 2 (both blessed) and the push of model 1 as version 1. Given a
    param, model 1 is exported as the pipeline exported before 2026-11-26 (tests.helpers.servable_model's
    keras_wrappers)."""
    root = tmp_path / "root"
    root.mkdir()
    name = metadata_lib.sqlite_store(RunLayout(root).metadata_path)
    store = metadata_lib.open_store(name)
    types = {t: store.put_artifact_type(metadata_store_pb2.ArtifactType(name=t))
             for t in ("Model", "ModelBlessing", "PushedModel")}
    context_type = store.put_context_type(metadata_store_pb2.ContextType(name="pipeline"))
    store.put_contexts([metadata_store_pb2.Context(type_id=context_type, name=PIPELINE)])
    models = {}
    for number in (1, 2):
        uri = servable_model(tmp_path / f"model-{number}", f"graph-{number}",
                             keras_wrappers=number == 1 and getattr(request, "param", False))
        [model_id] = store.put_artifacts([metadata_store_pb2.Artifact(type_id=types["Model"], uri=uri)])
        blessing = metadata_store_pb2.Artifact(type_id=types["ModelBlessing"], uri=f"{uri}-blessing")
        blessing.custom_properties[metadata_lib.BLESSED].int_value = 1
        blessing.custom_properties[metadata_lib.CURRENT_MODEL_ID].int_value = model_id
        store.put_artifacts([blessing])
        models[number] = (model_id, uri)
    serving = str(RunLayout(root).serving_dir)
    first = push_model(models[1][1], serving, model_uri=models[1][1])
    reconcile.record_push(store, PIPELINE, "ServingPusher", models[1][0], first.version, first.path, {})
    return {"root": root, "store": name, "serving": serving, "models": models}


def test_a_push_killed_before_its_record_is_named_by_models_and_recorded_by_the_next_run(history, capsys):
    model_id, uri = history["models"][2]
    push_model(uri, history["serving"], model_uri=uri)  # published; the Pusher died before recording it
    assert [v.version for v in model_history.pushed_versions(history["store"])] == [1]

    assert pipeline_runner.main(["models", "--root", str(history["root"]), "--metadata-sqlite",
                                 str(RunLayout(history["root"]).metadata_path)]) == 0
    shown = capsys.readouterr()
    assert "served: none of the recorded versions" in shown.out, "version 2 is served, but not recorded yet"
    assert f"warning: version 2 (model {uri}, pushed " in shown.err
    assert "is in " + history["serving"] + " but not in ML Metadata" in shown.err

    lines = reconcile.reconcile(history["store"], history["serving"], PIPELINE)
    assert list(lines) == [2] and lines[2].endswith("recorded now")
    versions = model_history.pushed_versions(history["store"])
    assert [(v.version, v.model_id, v.blessed, v.served) for v in versions] == [
        (1, history["models"][1][0], True, False), (2, model_id, True, True)]
    assert reconcile.reconcile(history["store"], history["serving"], PIPELINE) == {}, "recorded once"


def test_a_version_whose_model_the_store_does_not_hold_is_reported_not_invented(history, tmp_path):
    stranger = servable_model(tmp_path / "elsewhere", "graph-x")
    push_model(stranger, history["serving"], model_uri="gs://other-pipeline/model")
    lines = reconcile.reconcile(history["store"], history["serving"], PIPELINE)
    assert lines[2].startswith("version 2 (model gs://other-pipeline/model, pushed ")
    assert lines[2].endswith("and its model is not in this store: not recorded")
    assert [v.version for v in model_history.pushed_versions(history["store"])] == [1]


def test_a_rollback_killed_between_push_and_record_completes_on_retry(history, monkeypatch):
    model_id, uri = history["models"][2]
    second = push_model(uri, history["serving"], model_uri=uri)
    reconcile.record_push(metadata_lib.open_store(history["store"]), PIPELINE, "ServingPusher", model_id,
                          second.version, second.path, {})
    record = reconcile.record_push

    def dies_before_recording(store, pipeline_name, execution_type, *args):
        if execution_type == metadata_lib.ROLLBACK_EXECUTION_TYPE:
            raise Killed()  # the port-forward dropped, the laptop slept
        return record(store, pipeline_name, execution_type, *args)

    monkeypatch.setattr(reconcile, "record_push", dies_before_recording)
    with pytest.raises(Killed):
        rollback.rollback(history["root"], history["store"], 1, "version 2 misreads night photos", PIPELINE)
    assert existing_versions(history["serving"]) == [1, 2, 3]
    assert 3 not in {v.version for v in model_history.pushed_versions(history["store"])}

    monkeypatch.setattr(reconcile, "record_push", record)
    done = rollback.rollback(history["root"], history["store"], 1, "version 2 misreads night photos", PIPELINE)
    assert done.completed and (done.to_version, done.from_version, done.pushed.version) == (1, 2, 3)
    assert existing_versions(history["serving"]) == [1, 2, 3], "the retry pushes nothing more"
    served = model_history.pushed_versions(history["store"])[-1]
    assert (served.version, served.rolled_back_to, served.rolled_back_from, served.reason, served.model_id) == (
        3, 1, 2, "version 2 misreads night photos", history["models"][1][0])
    with pytest.raises(rollback.RollbackError, match="already the one served"):
        rollback.rollback(history["root"], history["store"], 1, "", PIPELINE)


def test_a_rollback_cleans_up_an_incomplete_version_and_says_so(history):
    model_id, uri = history["models"][2]
    second = push_model(uri, history["serving"], model_uri=uri)
    reconcile.record_push(metadata_lib.open_store(history["store"]), PIPELINE, "ServingPusher", model_id,
                          second.version, second.path, {})
    half = history["root"] / "serving_model" / "3"
    half.mkdir()
    (half / "saved_model.pb").write_bytes(b"half")  # a push killed before its commit record
    done = rollback.rollback(history["root"], history["store"], 1, "", PIPELINE)
    assert done.pushed.version == 4 and not done.completed
    assert any(note.startswith("version 3 was incomplete") for note in done.notes), done.notes
    assert not half.exists() and (half.parent / "1" / layout.DIGESTS_FILE).is_file()
    assert "clients do not see version 4" in rollback.reach_clients("gs://b/root", 4, None)
    assert "at its next read" in rollback.reach_clients(str(history["root"]), 4, None)


def _models_output(history, capsys) -> str:
    assert pipeline_runner.main(["models", "--root", str(history["root"]), "--metadata-sqlite",
                                 str(RunLayout(history["root"]).metadata_path)]) == 0
    return capsys.readouterr().out


def _baseline(history) -> list[int]:
    """The model ids the Evaluator's baseline resolver picks for a new candidate, from the store's artifacts."""
    from tfx.types import artifact_utils

    from components.baseline_resolver import LatestBlessedBeforeStrategy

    store = metadata_lib.open_store(history["store"])

    def of_type(name):
        artifact_type = store.get_artifact_type(name)
        return [artifact_utils.deserialize_artifact(artifact_type, a) for a in store.get_artifacts_by_type(name)]

    candidate = of_type("Model")[0].__class__()
    candidate.id = 10_000
    resolved = LatestBlessedBeforeStrategy().resolve_artifacts(store, {
        "before": [candidate], "model": of_type("Model"), "model_blessing": of_type("ModelBlessing"),
        "pushed_model": of_type("PushedModel")})
    return [m.id for m in resolved["model"]]


def _push_and_record_model_2(history):
    model_id, uri = history["models"][2]
    second = push_model(uri, history["serving"], model_uri=uri)
    reconcile.record_push(metadata_lib.open_store(history["store"]), PIPELINE, "ServingPusher", model_id,
                          second.version, second.path, {})
    return second


def test_a_recorded_version_with_files_removed_is_named_damaged_and_never_served_or_the_baseline(history, capsys):
    """Recorded version 2 with variables/ removed: `models`, the baseline, `rollback` and `predict` agree it is
    not served, and a rollback to version 1 mends it."""
    from inference import predict

    _push_and_record_model_2(history)
    first_model = history["models"][1][0]
    assert _baseline(history) == [history["models"][2][0]], "intact, version 2's model is the baseline"
    shutil.rmtree(history["root"] / "serving_model" / "2" / "variables")

    shown = _models_output(history, capsys)
    assert "served: version 2" not in shown
    assert "version 2: damaged, not a complete version: 2 of the files its commit record names are missing " \
           "(variables/variables.data-00000-of-00001, variables/variables.index)" in shown
    assert "served: nothing a server can load: version 2, the one to be served, is damaged" in shown
    assert _baseline(history) == [first_model], "the newest intact version's model, never version 2's"
    with pytest.raises(predict.NoModelError, match="version 2 .named in models.config. is damaged"):
        predict.latest_version_dir(history["serving"])
    with pytest.raises(rollback.RollbackError, match=r"^version 2's files in .* are not a complete version"):
        rollback.rollback(history["root"], history["store"], 2, "", PIPELINE)

    done = rollback.rollback(history["root"], history["store"], 1, "version 2 lost its variables", PIPELINE)
    assert (done.to_version, done.from_version, done.pushed.version) == (1, 2, 3)
    assert served.read_config(history["serving"]).version == 3
    assert "served: version 3 (the model of version 1)" in _models_output(history, capsys)
    assert predict.latest_version_dir(history["serving"]).name == "3"
    assert _baseline(history) == [first_model]


def test_a_version_complete_but_for_its_commit_record_is_not_served_by_anyone(history, capsys):
    """A push killed between its last file and its commit record: the config a fresh server reads names version
    1, and `models`, the baseline, `rollback` and `predict` agree version 1 is served."""
    from inference import predict

    model_id, uri = history["models"][2]
    config_before = (history["root"] / "serving_model" / served.CONFIG_FILE).read_bytes()
    push_model(uri, history["serving"], model_uri=uri)
    (history["root"] / "serving_model" / "2" / layout.DIGESTS_FILE).unlink()
    (history["root"] / "serving_model" / served.CONFIG_FILE).write_bytes(config_before)

    assert served.read_config(history["serving"]).version == 1
    assert "served: version 1" in _models_output(history, capsys)
    assert _baseline(history) == [history["models"][1][0]]
    assert predict.latest_version_dir(history["serving"]).name == "1"
    with pytest.raises(rollback.RollbackError, match=r"already the one served \(version 1\)"):
        rollback.rollback(history["root"], history["store"], 1, "", PIPELINE)
    assert served.read_config(history["serving"]).version == 1, "a refused rollback names nothing new"


def test_a_push_stopped_before_naming_its_version_is_named_by_the_next_run_and_models_says_so(history, capsys):
    config = history["root"] / "serving_model" / served.CONFIG_FILE
    before = config.read_bytes()
    _push_and_record_model_2(history)
    config.write_bytes(before)  # the pusher died between the commit record and the config
    assert pipeline_runner.main(["models", "--root", str(history["root"]), "--metadata-sqlite",
                                 str(RunLayout(history["root"]).metadata_path)]) == 0
    shown = capsys.readouterr()
    assert "served: version 1" in shown.out, "what servers load until the config names version 2"
    assert (f"warning: version 2 is committed but {served.CONFIG_FILE} names version 1 (its push stopped before "
            "naming it): servers load version 1; the next run or rollback names version 2") in shown.err
    lines = reconcile.reconcile(history["store"], history["serving"], PIPELINE)
    assert lines == {2: f"version 2 was committed but {served.CONFIG_FILE} still named version 1 (its push stopped "
                        f"before naming it): {served.CONFIG_FILE} now names version 2"}
    assert model_history.pushed_versions(history["store"])[-1].served


def _hand_made_version(history, number: int, model_uri: str):
    """A version folder made by hand whose commit record matches its files: whole, never evaluated."""
    from components.serving_pusher import digests_text

    folder = history["root"] / "serving_model" / str(number)
    shutil.copytree(history["root"] / "serving_model" / "1", folder)
    (folder / "saved_model.pb").write_bytes(b"never evaluated")
    (folder / layout.PUSH_RECORD_FILE).write_text(f'{{"model_uri": "{model_uri}"}}')
    (folder / layout.DIGESTS_FILE).write_text(digests_text(str(folder)))


def test_a_hand_made_version_is_never_rolled_forward_to_and_rollback_agrees_with_models(history, capsys):
    _hand_made_version(history, 2, "/somewhere/unknown")
    lines = reconcile.reconcile(history["store"], history["serving"], PIPELINE)
    assert lines[2].startswith("version 2 is complete but its model (/somewhere/unknown) is no blessed model of this "
                               f"pipeline's store: not served; {served.CONFIG_FILE} still names version 1")
    assert served.read_config(history["serving"]).version == 1
    assert pipeline_runner.main(["models", "--root", str(history["root"]), "--metadata-sqlite",
                                 str(RunLayout(history["root"]).metadata_path)]) == 0
    shown = capsys.readouterr()
    assert "served: version 1" in shown.out
    assert "but not in ML Metadata and its model is not in this store: never recorded" in shown.err
    assert ("version 2 is complete but no blessed model of this pipeline's store: never named in "
            f"{served.CONFIG_FILE} by a run or rollback; servers load version 1") in shown.err
    with pytest.raises(rollback.RollbackError, match=r"already the one served \(version 1\)"):
        rollback.rollback(history["root"], history["store"], 1, "", PIPELINE)
    assert served.read_config(history["serving"]).version == 1 and existing_versions(history["serving"]) == [1, 2]


def test_a_forged_version_naming_a_blessed_model_is_neither_served_nor_recorded(history):
    """Its push record names model 2 (blessed, in the store) and its commit record matches its files, but its
    graph is not model 2's: only the files show what a version holds."""
    _hand_made_version(history, 2, history["models"][2][1])
    lines = reconcile.reconcile(history["store"], history["serving"], PIPELINE)
    assert "not served" in lines[2] and "saved_model.pb differs from the model's): not recorded" in lines[2]
    assert served.read_config(history["serving"]).version == 1
    assert [v.version for v in model_history.pushed_versions(history["store"])] == [1]
    with pytest.raises(rollback.RollbackError, match="never pushed"):
        rollback.rollback(history["root"], history["store"], 99, "", PIPELINE)
    assert served.read_config(history["serving"]).version == 1


def test_a_version_of_a_model_the_store_holds_unblessed_is_not_rolled_forward_to(history):
    store = metadata_lib.open_store(history["store"])
    model_type = store.get_artifact_type("Model").id
    store.put_artifacts([metadata_store_pb2.Artifact(type_id=model_type, uri="/never/blessed")])
    _hand_made_version(history, 2, "/never/blessed")
    assert "is no blessed model" in reconcile.reconcile(history["store"], history["serving"], PIPELINE)[2]
    assert served.read_config(history["serving"]).version == 1


def test_a_blessed_model_pushed_but_neither_named_nor_recorded_is_rolled_forward_to(history):
    config = history["root"] / "serving_model" / served.CONFIG_FILE
    before = config.read_bytes()
    uri = history["models"][2][1]
    push_model(uri, history["serving"], model_uri=uri)
    config.write_bytes(before)  # killed between its commit record and the config, before recording
    lines = reconcile.reconcile(history["store"], history["serving"], PIPELINE)
    assert f"{served.CONFIG_FILE} now names version 2" in lines[2] and lines[2].endswith("recorded now")
    assert served.read_config(history["serving"]).version == 2


@pytest.mark.parametrize("history", ["model 1 exported before 2026-11-26"], indirect=True)
def test_a_version_tf_serving_cannot_run_is_never_served_again_and_the_refusal_says_why(history, capsys):
    """Version 1's model tracks Keras 3's variable wrappers, as the pipeline exported before 2026-11-26:
    tf.saved_model.load (the Evaluator, `predict`) answers with it, TF Serving fails every request. A rollback to
    it is refused in one line naming TF Serving's error, and changes nothing; a version exported now is served."""
    import tensorflow as tf

    from inference import tf_serving

    _push_and_record_model_2(history)
    serving = pathlib.Path(history["serving"])
    image = tf.constant([tf.io.encode_jpeg(tf.zeros([4, 4, 3], tf.uint8)).numpy()])
    assert tf.saved_model.load(str(serving / "1")).signatures["serving_default"](image_bytes=image)["tag"].numpy() == \
        [b"graph-1"], "loaded through its object graph, version 1 answers"
    before = tree_digest(serving)
    command = ["rollback", "--root", str(history["root"]), "--metadata-sqlite",
               str(RunLayout(history["root"]).metadata_path), "--to", "1"]
    assert pipeline_runner.main(command) == 2
    out, err = capsys.readouterr()
    assert err == "error: cannot roll back to version 1: TF Serving cannot serve version 1: its signatures read 2 " \
        "variables its restore op never writes (head/bias, head/kernel): TF Serving would fail every request with " \
        "\"Could not find variable\", as with every version exported before 2026-11-26; pick another version " \
        "(`models` lists them) or push a new one with `run`; nothing was changed\n", err
    assert tree_digest(serving) == before and served.read_config(history["serving"]).version == 2
    assert tf_serving.problem(str(serving / "2")) is None
    with pytest.raises(rollback.RollbackError, match="already the one served"):
        rollback.rollback(history["root"], history["store"], 2, "", PIPELINE)
