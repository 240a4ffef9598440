"""The scale benchmark's steps, end to end at 200 images with a tiny model: every figure it prints is measured.

Nothing is timed here: the figures' values are the benchmark's business (docs/performance.md).
"""

import json

import pytest

from benchmarks import scale

pytestmark = pytest.mark.e2e


def test_the_scale_benchmark_measures_each_size_from_the_folder_to_the_push(tmp_path, capsys, monkeypatch):
    for quieted in ("PYTHONWARNINGS", "TF_CPP_MIN_LOG_LEVEL"):  # the benchmark quiets the libraries as `run` does:
        monkeypatch.delenv(quieted, raising=False)  # not for the tests that run after it in this process
    figures_path = tmp_path / "scale.json"
    assert scale.main(["--quick", "--images", "200", "--json", str(figures_path), "--scratch", str(tmp_path)]) == 0
    (result,) = json.loads(figures_path.read_text())["sizes"]
    assert result["images"] == 200
    # ingest before the DAG, then every component of the run, each with its time per 1,000 images
    assert {"ingest", "ImportExampleGen", "StatisticsGen", "Transform", "Trainer", "Evaluator",
            "ServingPusher"} <= set(result["components"])
    assert set(result["per_1000_images"]) == set(result["components"])
    assert result["whole_seconds"] == pytest.approx(result["ingest_seconds"] + result["run_seconds"], abs=0.2)
    assert result["run_seconds"] >= sum(v for k, v in result["components"].items() if k != "ingest") - 1
    assert 0 < result["peak_gib"] < 24 and result["disk_gib"] > 0 and result["source_gib"] > 0
    # the seconds are written to 0.1 s and the ratio to 0.01, each from the unrounded times: the ratio of the
    # written seconds can only be bounded by their rounding, then the ratio's own (0.254 written as 0.26 is right)
    plain, whole = result["plain_training_seconds"], result["whole_seconds"]
    assert plain > 0 and (plain - 0.05) / (whole + 0.05) - 0.005 <= result["speedup"] <= (
        (plain + 0.05) / (whole - 0.05) + 0.005)
    assert 0 <= result["accuracy"] <= 1 and 0 <= result["plain_accuracy"] <= 1
    assert result["decode_loop_per_second"] > 0 and result["ingest_transform_per_core"] > 0
    out = capsys.readouterr().out
    assert "200 images: whole run" in out and "faster than the plain script's training" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scale-logs", "scale.json"], "images and roots go"
    assert sorted(p.name for p in (tmp_path / "scale-logs").iterdir()) == ["ingest-200.log", "run-200.log"]


@pytest.mark.parametrize("arguments,named", [
    (["--images", "10"], "from 20 images"), (["--images", "1000000000"], "to 100,000"),
    (["--scratch", "{file}"], "is not a folder this user can write in"),
    (["--scratch", "{missing}"], "is not a folder this user can write in"),
    (["--json", "{folder}"], "cannot be written"), (["--json", "{file}/scale.json"], "cannot be written"),
])
def test_settings_that_cannot_work_are_refused_in_one_line_before_any_work(tmp_path, capsys, arguments, named):
    (tmp_path / "a-file").write_text("")
    paths = {"file": tmp_path / "a-file", "missing": tmp_path / "missing" / "x", "folder": tmp_path}
    with pytest.raises(SystemExit) as refused:
        scale.main([argument.format(**paths) for argument in arguments])
    assert refused.value.code == 2 and named in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
