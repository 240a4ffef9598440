import os
import pathlib
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
    (serving / "7").mkdir(parents=True)
    (serving / "not-a-version").mkdir()
    assert push_model(str(model_dir), str(serving)).version == 8
    assert existing_versions(str(serving)) == [7, 8]


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
