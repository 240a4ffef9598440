"""A local root's runs, each in its own folder, and the newest report listing them (reporting.run_index)."""

import json
import os

from contract import layout
from reporting import run_index


def _run(root, name, summary, when, report=True):
    folder = root / "runs" / name
    (folder / "report").mkdir(parents=True)
    (folder / layout.SUMMARY_FILE).write_text(json.dumps(summary))
    if report:
        (folder / "report" / "index.html").write_text(f"<h1>{name}</h1>\n{run_index.SLOT}\n")
    os.utime(folder / layout.SUMMARY_FILE, (when, when))
    return folder


def test_outcomes_in_a_few_words():
    assert run_index.outcome({"error": "failed at AnomaliesGate: DataAnomaliesError: 1 found\n[test] 5 < 30"}) == \
        "failed at AnomaliesGate: DataAnomaliesError: 1 found"
    assert run_index.outcome({"error": "the pipeline recorded no run"}) == "failed: the pipeline recorded no run"
    assert run_index.outcome({"error": "DataAnomaliesError: 1 found; stopping:\n  [test] only 24 examples\n  x"}) == \
        "failed: DataAnomaliesError: 1 found; stopping: [test] only 24 examples"
    assert run_index.outcome({"error": "interrupted (Ctrl-C)"}) == "interrupted (Ctrl-C)"
    long = ("failed at Trainer: WeightsUnavailableError: could not load MobileNetV2 ImageNet weights: URL fetch "
            f"failure on https://storage.googleapis.com/{'x' * 200}_no_top.h5. Without network access, use "
            "--weights none.")
    cut = run_index.outcome({"error": long})
    assert len(cut) <= 240 and cut.startswith("failed at Trainer: WeightsUnavailableError: could not load")
    assert cut.endswith(" … " + long[-80:].lstrip()) and "use --weights none." in cut, "what to do is kept"
    assert run_index.outcome({"pushed_version": 3, "blessed": True}) == "blessed, pushed as version 3"
    assert run_index.outcome({"blessed": True}) == "blessed; nothing new pushed"
    assert run_index.outcome({"pushed_version": 2, "nodes": [{"node_id": "ServingPusher", "state": "cached"}]}) == \
        "nothing new pushed; version 2 is served"
    assert run_index.outcome({"blessed": False, "decision": "below 0.9"}) == "not blessed: below 0.9"
    assert run_index.outcome({}) == "every component cached or skipped; nothing pushed"


def test_the_newest_report_is_published_with_the_runs_and_the_served_models_report_marked(tmp_path):
    root = tmp_path / "root"
    _run(root, "a", {"run_id": "a", "pushed_version": 1}, 100)
    _run(root, "b", {"run_id": "<b>", "error": "failed at Trainer: <script>"}, 200)
    newest = _run(root, "c", {"run_id": "c", "blessed": False, "decision": "worse"}, 300)
    (newest / layout.SUMMARY_FILE).chmod(0o644)
    page = run_index.publish(root, newest, served_version=1)
    text = page.read_text()
    assert page == root / "report" / "index.html" and text.startswith("<h1>c</h1>")
    assert 'version 1, was pushed by run a: <a href="../runs/a/report/index.html">its report</a>' in text
    assert "&lt;b&gt;" in text and "&lt;script&gt;" in text and "<script>" not in text, "escaped"
    assert text.index("<td>c (this page)") < text.index("<td>&lt;b&gt;") < text.index("<td>a (serves now)")
    assert json.loads((root / layout.SUMMARY_FILE).read_text())["run_id"] == "c"
    assert sorted(os.listdir(root)) == ["report", "run_summary.json", "runs"], "no staging copy left"


def test_run_folders_beyond_the_bound_are_removed_oldest_first(tmp_path, monkeypatch):
    monkeypatch.setattr(run_index, "KEPT_RUNS", 3)
    root = tmp_path / "root"
    folders = [_run(root, f"r{i}", {"run_id": f"r{i}"}, 100 + i) for i in range(5)]
    run_index.publish(root, folders[-1], served_version=None)
    assert sorted(os.listdir(root / "runs")) == ["r2", "r3", "r4"]
    assert "r1" not in (root / "report" / "index.html").read_text()


def test_a_link_or_an_unreadable_summary_in_runs_is_passed_over(tmp_path):
    root = tmp_path / "root"
    newest = _run(root, "good", {"run_id": "good"}, 100)
    (root / "runs" / "broken").mkdir()
    (root / "runs" / "broken" / layout.SUMMARY_FILE).write_text("{not json")
    elsewhere = tmp_path / "elsewhere"
    _run(elsewhere, "theirs", {"run_id": "theirs"}, 50)
    (root / "runs" / "link").symlink_to(elsewhere / "runs" / "theirs")
    assert [run["run_id"] for run in run_index.runs(root)] == ["good"]
    run_index.publish(root, newest, served_version=None)
    assert (elsewhere / "runs" / "theirs" / layout.SUMMARY_FILE).is_file(), "a link is never followed nor removed"


def test_this_runs_folder_is_kept_whatever_the_clocks_said_of_the_others(tmp_path, monkeypatch):
    monkeypatch.setattr(run_index, "KEPT_RUNS", 2)
    root = tmp_path / "root"
    later = [_run(root, f"skewed{i}", {"run_id": f"skewed{i}"}, 2_000_000_000 + i) for i in range(3)]
    this = _run(root, "this", {"run_id": "this"}, 100)
    run_index.publish(root, this, served_version=None)
    assert sorted(os.listdir(root / "runs")) == ["skewed2", "this"] and later[2].is_dir()


def test_summaries_no_run_wrote_are_passed_over_and_a_linked_report_is_never_written_through(tmp_path):
    root = tmp_path / "root"
    for name, text in (("nodes", '{"nodes": 5, "pushed_version": 1}'), ("blank", '{"error": "   "}'),
                       ("deep", "[" * 100_000 + "]" * 100_000), ("list", "[1]")):
        (root / "runs" / name).mkdir(parents=True)
        (root / "runs" / name / layout.SUMMARY_FILE).write_text(text)
    newest = _run(root, "a#b", {"run_id": "a#b"}, 100)
    assert [run["run_id"] for run in run_index.runs(root)] == ["blank", "a#b"]
    page = run_index.publish(root, newest, served_version=None).read_text()
    assert 'href="../runs/a%23b/report/index.html"' in page
    victim = tmp_path / "victim.html"
    victim.write_text(run_index.SLOT)
    (newest / "report" / "index.html").unlink()
    (newest / "report" / "index.html").symlink_to(victim)
    try:
        run_index.publish(root, newest, served_version=None)
        raise AssertionError("a linked page was published")
    except OSError as error:
        assert "is a symbolic link" in str(error)
    assert victim.read_text() == run_index.SLOT and (root / "report" / "index.html").read_text() == page


def test_the_served_models_run_is_kept_past_the_bound_and_found_through_a_rollback(tmp_path, monkeypatch):
    monkeypatch.setattr(run_index, "KEPT_RUNS", 3)
    root = tmp_path / "root"
    _run(root, "pushed1", {"run_id": "pushed1", "pushed_version": 1}, 100)
    _run(root, "pushed2", {"run_id": "pushed2", "pushed_version": 2}, 101)
    nightly = [_run(root, f"n{i}", {"run_id": f"n{i}", "blessed": False}, 200 + i) for i in range(5)]
    page = run_index.publish(root, nightly[-1], served_version=1).read_text()
    assert sorted(os.listdir(root / "runs")) == ["n2", "n3", "n4", "pushed1"], "the served model's report stays"
    assert 'version 1, was pushed by run pushed1: <a href="../runs/pushed1/report/index.html">' in page
    assert "<td>pushed1 (serves now)</td>" in page
    # version 3 is a rollback to version 1: the run that pushed version 1 pushed the model served
    page = run_index.publish(root, nightly[-1], served_version=3, rolled_back_to=1).read_text()
    assert "The served model, version 3 (a rollback to version 1), was pushed by run pushed1" in page


def test_a_run_under_way_replaces_the_root_page_by_one_that_says_so_and_lists_every_report(tmp_path):
    root = tmp_path / "root"
    served = _run(root, "good", {"run_id": "good", "pushed_version": 1}, 100)
    run_index.publish(root, served, served_version=1)
    page = run_index.started(root, served_version=1)
    text = page.read_text()
    assert page == root / "report" / "index.html" and "<h1>A run of this root is in progress</h1>" in text
    assert "has written no report yet" in text and "<h1>good</h1>" not in text, "not the last run's page"
    assert "<td>good (serves now)</td>" in text and 'href="../runs/good/report/index.html"' in text
    assert sorted(os.listdir(root)) == ["report", "run_summary.json", "runs"], "no staging copy left"


def test_a_served_run_that_wrote_no_report_is_named_without_a_dead_link(tmp_path):
    root = tmp_path / "root"
    _run(root, "killed", {"run_id": "killed", "pushed_version": 2}, 100, report=False)
    newest = _run(root, "later", {"run_id": "later", "blessed": False}, 200)
    page = run_index.publish(root, newest, served_version=2).read_text()
    assert "was pushed by run killed: it wrote no report (it stopped after the push)" in page
    assert "runs/killed/report" not in page
