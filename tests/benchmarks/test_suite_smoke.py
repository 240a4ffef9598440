"""The benchmark suite's quick path runs on tiny data and yields a figure for every section.

Nothing is timed here: the figures' values are the suite's business.
"""

import json
import math
import os

import pytest

from benchmarks import suite

pytestmark = pytest.mark.e2e


def test_quick_suite_measures_every_section(tmp_path, capsys, monkeypatch):
    for quieted in ("PYTHONWARNINGS", "TF_CPP_MIN_LOG_LEVEL"):  # the suite quiets the libraries as `run` does:
        monkeypatch.delenv(quieted, raising=False)  # not for the tests that run after it in this process
    figures_path = tmp_path / "figures.json"
    assert suite.main(["--quick", "--sizes", "60", "--json", str(figures_path)]) == 0
    figures = json.loads(figures_path.read_text())["figures"]
    sections = {f["section"] for f in figures}
    assert sections == {"1 training", "1 tuning trial", "2 pipeline", "3 ingest+transform", "4 bytes", "5 evaluator",
                        "6 memory", "6 serving", "7 traffic sink", "8 monitor"}
    for figure in figures:
        assert math.isfinite(figure["value"]), figure
        # an accuracy difference between two trainings may fall either way; every other figure is a size or a time
        difference = figure["unit"] == "acc" and ("minus" in figure["name"] or "difference" in figure["name"])
        assert figure["value"] >= 0 or difference, figure
        if figure["ratio"] is not None:
            assert figure["reference"] and figure["reference"] > 0, figure
            # ingest+transform is compared per core with a single-threaded decode loop
            per = (os.cpu_count() or 1) if "per core" in figure["name"] else 1
            # training's ratios are speed-ups (the reference's time over ours), the others value over reference
            expected = figure["reference"] / figure["value"] if figure["section"] == "1 training" \
                else figure["value"] / per / figure["reference"]
            assert figure["ratio"] == pytest.approx(expected, rel=1e-6), figure
    with_ratio = {f["section"] for f in figures if f["ratio"] is not None}
    assert {"1 training", "1 tuning trial", "3 ingest+transform", "5 evaluator", "6 serving", "7 traffic sink",
            "8 monitor"} <= with_ratio
    assert "training: phase 1 vs plain Keras" in capsys.readouterr().out
    written = [f for f in figures if f["section"] == "4 bytes"]
    assert written and all(f["value"] > 0 for f in written), "Transform's output must be measured, not assumed"
