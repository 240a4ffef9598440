import os
import pathlib
import shutil
import subprocess

import pytest

from components.serving_pusher import digest_problems, existing_versions, push_model
from contract import layout


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
    assert sorted(os.listdir(serving)) == ["1", "2"], "no staging folder may be left behind"


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
    (serving / ".incoming-dead").mkdir()  # ... and the staging copy of another
    assert existing_versions(str(serving)) == [1]
    result = push_model(str(model_dir), str(serving), model_uri="model-2")
    assert result.version == 3 and sorted(os.listdir(serving)) == ["1", "3"]
    assert result.cleaned[0] == "removed the staging copy .incoming-dead a killed push left"
    assert result.cleaned[1].startswith(f"version 2 was incomplete (no readable commit record "
                                        f"({layout.DIGESTS_FILE})): moved to {serving}.incomplete/2-")
    (aside,) = os.listdir(f"{serving}.incomplete")
    assert (serving.parent / "serving.incomplete" / aside / "saved_model.pb").read_bytes() == b"half"
    shutil.rmtree(serving / "3")  # with only version 1 left, the number moved aside still counts
    assert push_model(str(model_dir), str(serving), model_uri="model-3").version == 3


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
    assert sorted(os.listdir(serving)) == ["1"]
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
