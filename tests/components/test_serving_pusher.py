import os
import pathlib
import shutil
import subprocess

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from components.serving_pusher import (
    WITHDRAWN_WEIGHTS,
    digest_problems,
    digests_text,
    existing_versions,
    follow_commit,
    push_model,
    withdrawn_twin,
    withdrawn_weights,
)
from contract import layout, metadata, served

CONFIG = served.CONFIG_FILE


@pytest.fixture
def model_dir(tmp_path):
    model = tmp_path / "model"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"graph-1")
    (model / "variables" / "variables.index").write_bytes(b"index")
    return model


def test_pushes_numbered_versions_and_never_touches_existing_ones(model_dir, tmp_path):
    serving = str(tmp_path / "serving")
    result = push_model(str(model_dir), serving, model_uri="model-1")
    assert (result.version, result.path, result.new) == (1, os.path.join(serving, "1"), True)
    first_bytes = (tmp_path / "serving" / "1" / "saved_model.pb").read_bytes()
    (model_dir / "saved_model.pb").write_bytes(b"graph-2")
    assert push_model(str(model_dir), serving, model_uri="model-2").version == 2
    assert (tmp_path / "serving" / "1" / "saved_model.pb").read_bytes() == first_bytes
    assert (tmp_path / "serving" / "2" / "saved_model.pb").read_bytes() == b"graph-2"
    assert (tmp_path / "serving" / "2" / "variables" / "variables.index").exists()
    assert sorted(os.listdir(serving)) == ["1", "2", CONFIG], "no staging folder may be left behind"


def test_next_version_follows_the_highest_even_with_gaps(model_dir, tmp_path):
    serving = tmp_path / "serving"
    push_model(str(model_dir), str(serving), model_uri="model-1")
    (serving / "1").rename(serving / "7")
    (serving / "not-a-version").mkdir()
    assert push_model(str(model_dir), str(serving), model_uri="model-2").version == 8
    assert existing_versions(str(serving)) == [7, 8]


def test_an_incomplete_version_is_moved_aside_and_its_number_never_used_again(model_dir, tmp_path):
    serving = tmp_path / "serving"
    push_model(str(model_dir), str(serving), model_uri="model-1")
    (serving / "2" / "variables").mkdir(parents=True)  # a push killed before its commit record
    (serving / "2" / "saved_model.pb").write_bytes(b"half")
    (serving / ".incoming-deaddeaddeaddeaddeaddeaddeaddead").mkdir()  # ... and the staging copy of another
    assert existing_versions(str(serving)) == [1]
    result = push_model(str(model_dir), str(serving), model_uri="model-2")
    assert result.version == 3 and sorted(os.listdir(serving)) == ["1", "3", CONFIG]
    assert result.cleaned[0] == "removed the staging copy .incoming-deaddeaddeaddeaddeaddeaddeaddead a killed push left"
    assert result.cleaned[1].startswith(f"version 2 was incomplete (no readable commit record "
                                        f"({layout.DIGESTS_FILE})): moved to {serving}.incomplete/2-")
    (aside,) = os.listdir(f"{serving}.incomplete")
    assert (serving.parent / "serving.incomplete" / aside / "saved_model.pb").read_bytes() == b"half"
    shutil.rmtree(serving / "3")  # with only version 1 left, neither the number moved aside nor the served one's
    assert push_model(str(model_dir), str(serving), model_uri="model-3").version == 4  # (3, deleted) is used again


def test_the_number_of_a_served_version_deleted_by_hand_is_never_used_again(model_dir, tmp_path):
    """A server may still hold the version the config names: a new model under that number would never be loaded,
    and the root's records of that number would describe another model."""
    serving = tmp_path / "serving"
    push_model(str(model_dir), str(serving), model_uri="model-1")
    push_model(str(model_dir), str(serving), model_uri="model-2")
    shutil.rmtree(serving / "2")  # "version 2 is bad": deleted by hand, the config still naming it
    assert served.read_config(str(serving)).version == 2
    result = push_model(str(model_dir), str(serving), model_uri="model-1", always_new=True)  # a rollback to 1
    assert result.version == 3 and served.read_config(str(serving)).version == 3
    assert existing_versions(str(serving)) == [1, 3]


def test_a_folder_without_a_saved_model_is_refused(tmp_path):
    serving = tmp_path / "serving"
    (tmp_path / "empty-model").mkdir()
    for source in ("missing-model", "empty-model"):
        with pytest.raises(FileNotFoundError, match="holds no SavedModel"):
            push_model(str(tmp_path / source), str(serving))
    assert existing_versions(str(serving)) == []


def test_the_model_already_served_is_not_pushed_again(model_dir, tmp_path):
    serving = str(tmp_path / "serving")
    assert push_model(str(model_dir), serving, model_uri="model-1").new
    again = push_model(str(model_dir), serving, model_uri="model-1")
    assert (again.version, again.new) == (1, False)
    assert sorted(os.listdir(serving)) == ["1", CONFIG]
    assert push_model(str(model_dir), serving, model_uri="model-2").version == 2


def test_each_version_records_its_files_digests_in_sha256sum_format(model_dir, tmp_path):
    serving = tmp_path / "serving"
    version = pathlib.Path(push_model(str(model_dir), str(serving), model_uri="model-1").path)
    listed = (version / layout.DIGESTS_FILE).read_text().splitlines()
    assert sorted(line.split("  ", 1)[1] for line in listed) == [
        layout.PUSH_RECORD_FILE, "saved_model.pb", "variables/variables.index"]
    check = subprocess.run(["sha256sum", "--check", "--strict", layout.DIGESTS_FILE], cwd=version,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert digest_problems(str(version)) == []


def test_altered_missing_or_added_files_are_named(model_dir, tmp_path):
    version = pathlib.Path(push_model(str(model_dir), str(tmp_path / "serving")).path)
    (version / "saved_model.pb").write_bytes(b"graph-tampered")
    (version / "variables" / "variables.index").unlink()
    (version / "extra.txt").write_text("x")
    assert digest_problems(str(version)) == ["variables/variables.index: missing",
                                             "extra.txt: not in the version when it was pushed",
                                             "saved_model.pb: changed since the push"]
    (version / layout.DIGESTS_FILE).unlink()
    assert digest_problems(str(version)) == [f"no {layout.DIGESTS_FILE}: its files cannot be checked"]


def _config(serving) -> model_server_config_pb2.ModelServerConfig:
    """The serving config as TF Serving parses it."""
    return text_format.Parse((pathlib.Path(serving) / CONFIG).read_text(), model_server_config_pb2.ModelServerConfig())


def test_each_push_names_its_version_in_tf_servings_model_config(model_dir, tmp_path):
    serving = tmp_path / "serving"
    push_model(str(model_dir), str(serving), model_uri="model-1")
    push_model(str(model_dir), str(serving), model_uri="model-2")
    (model,) = _config(serving).model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == (served.MODEL_NAME, str(serving), "tensorflow")
    assert list(model.model_version_policy.specific.versions) == [2], "exactly the pushed version, no other"
    # The name and the path the server sees are kept once set (KServe: the InferenceService's, /mnt/models).
    push_model(str(model_dir), str(serving), model_uri="model-3", served_name="pets", served_base_path="/mnt/models")
    push_model(str(model_dir), str(serving), model_uri="model-4")
    (model,) = _config(serving).model_config_list.config
    assert (model.name, model.base_path, list(model.model_version_policy.specific.versions)) == (
        "pets", "/mnt/models", [4])


def test_a_version_without_its_commit_record_is_never_named_and_the_server_keeps_the_one_before(model_dir, tmp_path):
    """A push killed between its last file and its commit record: a fresh server reads the config and loads the
    version before; every reader of the project agrees."""
    serving = tmp_path / "serving"
    push_model(str(model_dir), str(serving), model_uri="model-1")
    shutil.copytree(serving / "1", serving / "2")
    (serving / "2" / layout.DIGESTS_FILE).unlink()  # complete but for the commit record
    assert list(_config(serving).model_config_list.config[0].model_version_policy.specific.versions) == [1]
    assert served.served(str(serving)) == served.Served(1, 1)
    assert follow_commit(str(serving), lambda v: True) == {}, "an uncommitted version is not rolled forward to"


def _versions_named(serving):
    return list(_config(serving).model_config_list.config[0].model_version_policy.specific.versions)


def test_a_push_stopped_between_commit_record_and_config_is_rolled_forward_only_to_a_trusted_model(model_dir,
                                                                                                   tmp_path):
    serving = tmp_path / "serving"
    push_model(str(model_dir), str(serving), model_uri="model-1")
    before = (serving / CONFIG).read_bytes()
    push_model(str(model_dir), str(serving), model_uri="model-2")
    (serving / CONFIG).write_bytes(before)  # as if the pusher died before writing the config
    assert served.served(str(serving)).version == 1, "what a server loads until the config names version 2"
    assert follow_commit(str(serving), lambda v: False) == {2: (
        f"version 2 is complete but its model (model-2) is no blessed model of this pipeline's store: not served; "
        f"{CONFIG} still names version 1")}
    assert _versions_named(serving) == [1], "a version whose model the store does not vouch for is never named"
    assert follow_commit(str(serving), lambda v: v == 2) == {2: (
        f"version 2 was committed but {CONFIG} still named version 1 (its push stopped before naming it): {CONFIG} "
        "now names version 2")}
    assert _versions_named(serving) == [2]


def test_a_push_rolls_nothing_forward_but_names_its_own_version(model_dir, tmp_path):
    serving = tmp_path / "serving"
    push_model(str(model_dir), str(serving), model_uri="model-1")
    before = (serving / CONFIG).read_bytes()
    push_model(str(model_dir), str(serving), model_uri="model-2")
    (serving / CONFIG).write_bytes(before)
    assert push_model(str(model_dir), str(serving), model_uri="model-2").cleaned == ()
    assert _versions_named(serving) == [2], "the retry of the same push names its own model's version"
    (serving / CONFIG).write_bytes(before)
    (serving / "2" / "saved_model.pb").write_bytes(b"by hand")
    (serving / "2" / layout.DIGESTS_FILE).write_text(digests_text(str(serving / "2")))  # whole, never evaluated
    result = push_model(str(model_dir), str(serving), model_uri="model-1")
    assert (result.version, result.cleaned, _versions_named(serving)) == (3, (), [3])


def test_a_root_without_a_config_gets_one_from_the_next_writer(model_dir, tmp_path):
    serving = tmp_path / "serving"
    push_model(str(model_dir), str(serving), model_uri="model-1")
    (serving / CONFIG).unlink()  # a serving folder an earlier release wrote
    assert served.served(str(serving)) == served.Served(1, 1, configured=False)
    assert follow_commit(str(serving), lambda v: True) == {
        1: f"{CONFIG} was missing (a serving folder an earlier release wrote): written to name version 1, the newest "
           "complete one"}
    assert list(_config(serving).model_config_list.config[0].model_version_policy.specific.versions) == [1]
    (serving / CONFIG).write_text("model_config_list { config { name: ")  # cut short by hand
    assert "not a ModelServerConfig" in served.served(str(serving)).config_error
    assert "rewritten to name version 1" in follow_commit(str(serving), lambda v: True)[1]


def test_a_damaged_served_version_is_not_served(model_dir, tmp_path):
    serving = tmp_path / "serving"
    push_model(str(model_dir), str(serving), model_uri="model-1")
    push_model(str(model_dir), str(serving), model_uri="model-2")
    (serving / "2" / "saved_model.pb").write_bytes(b"graph-tampered")
    state = served.served(str(serving))
    assert (state.version, state.named) == (None, 2)
    assert state.problem() == (f"version 2 (named in {CONFIG}) is damaged: its files differ from those pushed "
                               "(saved_model.pb: changed since the push)")


def test_files_made_of_the_version_number_name_the_version_they_land_in_when_another_pusher_took_one(
        model_dir, tmp_path, monkeypatch):
    """The model card names its version folder: written again, with its commit record, when the number it was
    written for went to another pusher between the look and the rename."""
    from contract import storage

    serving = tmp_path / "serving"
    publish = storage.publish

    def race(staging, final, commit_file, commit):
        if final.endswith("/1"):  # another pusher publishes version 1 first
            shutil.copytree(model_dir, final)
            (pathlib.Path(final) / layout.DIGESTS_FILE).parent.mkdir(parents=True, exist_ok=True)
            (pathlib.Path(final) / layout.DIGESTS_FILE).write_text(digests_text(final))
        return publish(staging, final, commit_file, commit)

    monkeypatch.setattr(storage, "publish", race)
    result = push_model(str(model_dir), str(serving), model_uri="m",
                        extra_files=lambda version: {"assets.extra/card.md": f"version {version}\n"})
    assert result.version == 2
    assert (serving / "2" / "assets.extra" / "card.md").read_text() == "version 2\n"
    assert digest_problems(str(serving / "2")) == [], "the commit record covers the card as written"


def _model(folder, graph: bytes, weights: bytes):
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(graph)
    (folder / "variables" / "variables.data-00000-of-00001").write_bytes(weights)
    (folder / "variables" / "variables.index").write_bytes(b"index")
    return str(folder)


def test_a_model_with_the_weights_a_rollback_withdrew_is_withheld_until_a_rollback_serves_them_again(tmp_path):
    """A search that kept the configured values retrained, with no new data, the very model a rollback had withdrawn
    (the same weights, another graph): blessed against the model rolled back to, it was pushed, undoing the
    rollback."""
    serving = str(tmp_path / "serving")
    push_model(_model(tmp_path / "a", b"graph-a", b"A"), serving, model_uri="model-a")
    push_model(_model(tmp_path / "b", b"graph-b", b"B"), serving, model_uri="model-b")
    rolled_back = {metadata.ROLLED_BACK_TO: 1, metadata.ROLLED_BACK_FROM: 2, metadata.ROLLBACK_REASON: "night photos"}
    push_model(os.path.join(serving, "1"), serving, model_uri="model-a", record=rolled_back, always_new=True)
    retrained = _model(tmp_path / "b-again", b"graph-b, its functions numbered otherwise", b"B")
    assert withdrawn_twin(retrained, serving) == (
        "the candidate's weights are version 2's, which the rollback to version 1 (pushed as version 3) withdrew "
        "(night photos): pushing it would undo that rollback; train on new data or other settings for another "
        "model, or, if version 2's weights should be served after all, `rollback --to 2`")
    assert withdrawn_twin(_model(tmp_path / "c", b"graph-b", b"C"), serving) is None, "other weights: pushed"
    assert withdrawn_twin(_model(tmp_path / "a-again", b"graph-a", b"A"), serving) is None, "the served weights"
    # the rollback's own record names the weights it withdrew (as `rollback` writes it): deleting version 2 keeps
    # the block
    serving_b = str(tmp_path / "serving-b")
    push_model(_model(tmp_path / "a2", b"graph-a", b"A"), serving_b, model_uri="model-a")
    push_model(_model(tmp_path / "b2", b"graph-b", b"B"), serving_b, model_uri="model-b")
    push_model(os.path.join(serving_b, "1"), serving_b, model_uri="model-a", always_new=True,
               record={**rolled_back, WITHDRAWN_WEIGHTS: withdrawn_weights(os.path.join(serving_b, "2"))})
    shutil.rmtree(os.path.join(serving_b, "2"))
    assert withdrawn_twin(retrained, serving_b).endswith(
        f"train on new data or other settings for another model (version 2 is no longer in {serving_b})")
    # a record edited by hand into other shapes: no fault, nothing read from it
    for index, damaged in enumerate(({"variables/variables.index": ["not", "a", "digest"]}, {}, "x")):
        push_model(os.path.join(serving_b, "1"), serving_b, model_uri="model-a", always_new=True,
                   record={**rolled_back, WITHDRAWN_WEIGHTS: damaged})
        assert withdrawn_twin(_model(tmp_path / f"c-{index}", b"graph", b"C"), serving_b) is None
    # where the record's own entry is unusable, the withdrawn version's commit record still says what it held
    serving_c = str(tmp_path / "serving-c")
    push_model(_model(tmp_path / "a3", b"graph-a", b"A"), serving_c, model_uri="model-a")
    push_model(_model(tmp_path / "b3", b"graph-b", b"B"), serving_c, model_uri="model-b")
    push_model(os.path.join(serving_c, "1"), serving_c, model_uri="model-a", always_new=True,
               record={**rolled_back, WITHDRAWN_WEIGHTS: {"variables/variables.index": 1}})
    assert withdrawn_twin(retrained, serving_c).startswith("the candidate's weights are version 2's")
    # a person serves version 2's model again: its weights are no longer withdrawn, version 3's (A) are
    push_model(os.path.join(serving, "2"), serving, model_uri="model-b", always_new=True,
               record={metadata.ROLLED_BACK_TO: 2, metadata.ROLLED_BACK_FROM: 3})
    assert withdrawn_twin(retrained, serving) is None
    assert withdrawn_twin(str(tmp_path / "a-again"), serving).startswith(
        "the candidate's weights are version 3's, which the rollback to version 2 (pushed as version 4) withdrew: "
        "pushing it would undo that rollback")


def test_a_serving_config_naming_the_folders_place_before_its_root_moved_follows_the_root(tmp_path):
    """A root moved or copied kept a config naming the old place: a TF Serving started on the new one (as the
    README runs it) served the old place's versions, or none. Only the old root's serving folder, as the store's
    records name that root, is taken for it: a base_path set by hand for a server in a container
    (/models/serving_model), or a server's own mount (KServe's), is kept by the run and by every push."""
    from components import serving_pusher

    serving = tmp_path / "moved" / "serving_model"
    serving.mkdir(parents=True)
    served.write_config(str(serving), served.ServingConfig("cats-vs-dogs", "/old/place/serving_model", 2))
    assert serving_pusher.follow_root(str(serving), ["/elsewhere"]) is None
    assert serving_pusher.follow_root(str(serving), ["/old/place"]) == (
        f"models.config named /old/place/serving_model, this folder's place before its root was moved or copied: it "
        f"names {serving} now")
    assert served.read_config(str(serving)) == served.ServingConfig("cats-vs-dogs", str(serving), 2)
    assert serving_pusher.follow_root(str(serving), ["/old/place"]) is None, "once"
    for kept in ("/models/serving_model", layout.KSERVE_MODEL_MOUNT):
        served.write_config(str(serving), served.ServingConfig("cats-vs-dogs", kept, 3))
        assert serving_pusher.follow_root(str(serving), ["/old/place"]) is None
        assert serving_pusher.name_version(str(serving), 4) and served.read_config(str(serving)).base_path == kept


def test_a_config_naming_a_number_no_push_could_write_does_not_block_the_next_push(model_dir, tmp_path):
    serving = tmp_path / "serving"
    push_model(str(model_dir), str(serving), model_uri="model-1")
    config = (serving / CONFIG).read_text()
    (serving / CONFIG).write_text(config.replace("versions: 1", f"versions: {2 ** 62}"))  # edited by hand
    assert served.read_config(str(serving)).version == 2 ** 62
    assert push_model(str(model_dir), str(serving), model_uri="model-2").version == 2
