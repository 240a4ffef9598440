import dataclasses
import json

from contract import layout
from contract import metadata as node_ids
from reporting import markdown_links, report_sections, run_index, run_report, run_summary


def _summary(**changes):
    fields = dict(pipeline="cats-vs-dogs", run_id="run-<7>", nodes=[], metrics={}, metrics_by_label={},
                  confusion_matrix=None, blessed=None, decision=None, pushed_version=None, pushed_path=None)
    return run_summary.RunSummary(**(fields | changes))


def _ingest_report():
    return {"span": 2, "reused": False, "source": "folder:/data/pets", "files_seen": 5,
            "counts": {"accepted": 4, "quarantined": 1}, "examples_per_label": {"cat": 2, "dog": 2},
            "examples_per_split": {"train": 3, "eval": 1},
            "quarantined": [{"file": "dog/<bad>.jpg", "reason": "not an image"}]}


def test_report_of_a_run_stopped_by_the_data_gate_shows_why_with_the_data(tmp_path):
    nodes = [run_summary.NodeRun("ImportExampleGen", "executed", 2.0, 1, 0.0),
             run_summary.NodeRun(node_ids.ANOMALIES_GATE, "failed", 0.5, 2, 2.0)]
    error = "DataAnomaliesError: eval split: 1 examples, fewer than the minimum 30"
    page = run_report.write_report(_summary(nodes=nodes, error=error), tmp_path, {}, _ingest_report())
    assert page == tmp_path / "report" / "index.html" and not (tmp_path / ".report.incoming").exists()
    text = page.read_text()
    assert "<h1>Run run-&lt;7&gt; of cats-vs-dogs</h1>" in text  # escaped
    assert "<td>AnomaliesGate</td><td>failed</td><td>0.5</td>" in text
    assert text.count(error) == 2, "once at the top, once with the data it is about"
    data = text[text.index("<h2 id=data>Data</h2>"):]
    assert f"<pre>{error}</pre>" in data
    assert "Span 2 from folder:/data/pets: 5 files." in data
    assert "<td>dog/&lt;bad&gt;.jpg</td><td>not an image</td>" in data
    assert "<td>accepted</td><td>4</td>" in data and "<td>eval</td><td>1</td>" in data
    assert "<h2 id=evaluation>" not in text
    top = text[:text.index("<nav>")]  # the outcome comes first, before the contents
    assert f'<p class="decision failed"><b>Failed</b>: {error}</p>' in top
    assert '<a href="#data">Data</a>' in text and '<a href="#evaluation">' not in text


def test_the_data_section_counts_a_queues_images_carried_unsorted_and_passed_over(tmp_path):
    from ingest import sources

    ingest = _ingest_report() | {
        "counts": {"accepted": 4, "normalized": 0, "duplicate": 0, "quarantined": 3},
        "quarantined": [{"file": f"unsorted/{n}.jpg", "reason": sources.NOT_SORTED.format(where="unsorted/")}
                        for n in (1, 2)] + [{"file": "dog/<bad>.jpg", "reason": "not an image"}],
        "carried": [{"span": 2, "examples": 34}, {"span": 4, "examples": 6}], "passed_over": [".DS_Store"]}
    data = run_report.write_report(_summary(), tmp_path, {}, ingest).read_text()
    data = data[data.index("<h2 id=data>Data</h2>"):]
    assert "Span 2 from folder:/data/pets: 5 files; and 40 images carried from the labeled queues of earlier spans " \
           "(span 2: 34, span 4: 6), counted in the examples below; passed over 1 file(s) the operating system keeps " \
           "(.DS_Store)." in data
    assert "<td>quarantined</td><td>1</td>" in data and "<td>not sorted</td><td>2</td>" in data


def test_a_cached_blessing_says_it_is_the_one_given_when_the_model_was_first_evaluated(tmp_path):
    nodes = [run_summary.NodeRun(node_ids.EVALUATOR, "cached", 0.0, 3, 0.0)]
    summary = _summary(nodes=nodes, blessed=True, decision="met binary_accuracy >= 0.8; no baseline yet")
    text = run_report.write_report(summary, tmp_path, {}, None).read_text()
    assert "met binary_accuracy &gt;= 0.8; no baseline yet when this model was first evaluated (cached)." in text
    assert "no baseline yet) when this model was first evaluated (cached)" in summary.text()


def test_report_of_an_evaluated_run_gives_the_decision_and_the_metrics(tmp_path):
    error = "RuntimeError: the Trainer ran out of memory"
    summary = _summary(nodes=[run_summary.NodeRun("Trainer", "failed", 1.0, 3, 0.0)], error=error, blessed=False,
                       decision="binary_accuracy 0.5000 is below the minimum 0.8",
                       metrics={"candidate": {"binary_accuracy": 0.5, "example_count": 40.0},
                                "baseline": {"binary_accuracy": 0.8125, "example_count": 40.0}},
                       metrics_by_label={"label=0": {"binary_accuracy": 0.25}, "label=1": {"binary_accuracy": 0.75}},
                       confusion_matrix={"threshold": 0.5, "true_positives": 15.0, "false_positives": 10.0,
                                         "true_negatives": 5.0, "false_negatives": 10.0})
    text = run_report.write_report(summary, tmp_path, {}, None).read_text()
    top = text[:text.index("<nav>")]  # the failure and the decision, each once, before the contents
    assert f'<p class="decision failed"><b>Failed</b>: {error}</p>' in top and text.count(error) == 1
    assert "<b>Not blessed</b>:\nbinary_accuracy 0.5000 is below the minimum 0.8." in top
    assert text.count("is below the minimum 0.8") == 1
    assert '<a href="#evaluation">Evaluation</a>' in text
    assert "Nothing pushed; the served model is unchanged." in top
    assert "<tr><td>candidate</td><td>0.5000</td><td>40</td></tr>" in text
    assert "<tr><td>baseline</td><td>0.8125</td><td>40</td></tr>" in text
    assert "<tr><td>label=1 (dog)</td><td>0.7500</td></tr>" in text, "a label slice says its class"
    assert '<img src="confusion_matrix.png"' in text and (tmp_path / "report" / "confusion_matrix.png").is_file()
    assert "<pre>" not in text  # not the data gate's failure


def test_the_pushed_versions_model_card_is_a_section_with_outside_text_escaped(tmp_path):
    version = tmp_path / "serving_model" / "1"
    (version / "assets.extra").mkdir(parents=True)
    (version / layout.MODEL_CARD_FILE).write_text("# Model card: cats-vs-dogs\n\n## Data\n\n"
                                                  "| span | source |\n| --- | --- |\n| 1 | folder:/data/<b>pets |\n")
    summary = _summary(blessed=True, decision="met binary_accuracy >= 0.8", pushed_version=1,
                       pushed_path=str(version))
    text = run_report.write_report(summary, tmp_path, {}, None).read_text()
    card = text[text.index("<h2 id=card>"):text.index("<h2 id=data>")]
    assert "<td>folder:/data/&lt;b&gt;pets</td>" in card and "<b>pets" not in text
    assert "<h1>Model card: cats-vs-dogs</h1>" in card
    assert "<h2 id=card>" not in run_report.write_report(_summary(), tmp_path, {}, None).read_text()


def test_a_card_renders_no_link_but_http_and_relative_ones_inside_the_report(tmp_path):
    """The card holds the source and weights paths, which whoever submits a run sets."""
    version = tmp_path / "serving_model" / "1"
    (version / "assets.extra").mkdir(parents=True)
    hostile = ["javascript:alert(1)", "JaVaScRiPt:alert(1)", "java\tscript:alert(1)", "data:text/html,x",
               "file:///etc/passwd", "/etc/passwd", "../../../etc/passwd", "//evil.example/x", "vbscript:x"]
    rows = "".join(f"| {i} | [source {i}]({url}) |\n" for i, url in enumerate(hostile))
    (version / layout.MODEL_CARD_FILE).write_text(
        "# Model card\n\n| span | source |\n| --- | --- |\n" + rows
        + "\n[kept](https://example.com/cats) [figure](figures/curves.png) ![alt text](javascript:alert(2))\n"
        + "\n[by reference][r]\n\n[r]: javascript:alert(3)\n")
    summary = _summary(blessed=True, decision="met", pushed_version=1, pushed_path=str(version))
    text = run_report.write_report(summary, tmp_path, {}, None).read_text()
    card = text[text.index("<h2 id=card>"):text.index("<h2 id=data>")]
    assert 'href="https://example.com/cats"' in card and 'href="figures/curves.png"' in card
    assert card.count("href=") == 2 and "src=" not in card, card
    assert all(f"source {i}" in card for i in range(len(hostile))), "the text stays, only the link goes"
    assert "alt text" in card and "by reference" in card
    for url in hostile:
        assert not markdown_links.safe_link(url), url


def test_the_report_opens_in_a_browser_with_every_figure_and_no_console_error(tmp_path):
    from PIL import Image

    from tests import browser

    summary = _summary(blessed=True, decision="met binary_accuracy >= 0.8", pushed_version=None, pushed_path=None,
                       metrics={"candidate": {"binary_accuracy": 0.9, "example_count": 40.0}},
                       confusion_matrix={"threshold": 0.5, "true_positives": 18.0, "false_positives": 2.0,
                                         "true_negatives": 18.0, "false_negatives": 2.0})
    # Long words a user's data brings (a folder of photos named by a camera app, an error naming a path): the page
    # still fits a 1280-pixel window without a horizontal scrollbar.
    long_name = "dog/" + "IMG_20261125_" * 12 + ".jpg"
    ingest = _ingest_report() | {"source": "folder:/home/someone/" + "photos_" * 30,
                                 "quarantined": [{"file": long_name, "reason": "not an image: " + "x" * 300}]}
    summary.error = "OSError: cannot write /runs/" + "deep/" * 60 + "summary.json"
    page = run_report.write_report(summary, tmp_path, {}, ingest)
    view = browser.open_page(page)
    assert view.errors == []
    assert view.overflow == 0, f"the page is {view.overflow} px wider than a 1280-pixel window"
    assert view.images == {"confusion_matrix.png": True}
    screenshot = tmp_path / "report.png"
    screenshot.write_bytes(view.screenshot)
    with Image.open(screenshot) as image:
        assert image.width >= 1000 and image.height > 900  # the whole page, not a blank viewport
        assert len(image.convert("L").getcolors(1 << 16)) > 50  # text and a figure, not an empty page
    # A figure that is missing is seen as such.
    (page.parent / "confusion_matrix.png").unlink()
    broken = browser.open_page(page)
    assert broken.images == {"confusion_matrix.png": False} and broken.errors


def test_the_model_diagram_is_drawn_from_the_training_record_without_the_model(tmp_path):
    from config import TrainingConfig
    from trainer import model as model_lib

    classifier = model_lib.build_classifier(TrainingConfig(weights="none", alpha=0.35), 64)
    description = model_lib.describe(classifier)
    assert description["input_shape"] == [64, 64, 3]
    assert [layer["name"] for layer in description["layers"]] == [layer.name for layer in classifier.layers[1:]]
    assert description["layers"][-1]["output_shape"] == [1]  # the logit
    assert description["base"]["layers"] == len(model_lib.get_base(classifier).layers) > 100
    assert sum(layer["weights"] for layer in description["layers"]) == classifier.count_params()
    # A model folder with the training record and no model in it: the diagram cannot have come from a model file.
    model_uri = tmp_path / "Model"
    record = report_sections.serving_dir(str(model_uri)) / layout.TRAINING_HISTORY_FILE
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"epochs": [{"epoch": 0, "accuracy": 0.5, "val_accuracy": 0.5, "loss": 0.7,
                                              "val_loss": 0.7}], "best_epoch": 0, "best_val_loss": 0.7,
                                  "model": description}))
    page = run_report.write_report(_summary(artifacts={"Model": str(model_uri)}), tmp_path / "out",
                                   {"fine_tune_from": 60}, None)
    assert (page.parent / "model.png").stat().st_size > 0
    assert not list(model_uri.rglob("*.keras"))


def test_a_rerun_whose_push_was_cached_says_nothing_new_was_pushed(tmp_path):
    """The run summary says `pushed: nothing new` for a cached push; the report's outcome says the same."""
    nodes = [run_summary.NodeRun(node_ids.PUSHER, "cached", 0.0, 9, 0.0)]
    summary = _summary(nodes=nodes, blessed=True, decision="met binary_accuracy >= 0.8", pushed_version=1,
                       pushed_path=str(tmp_path / "serving_model" / "1"))
    page = run_report.write_report(summary, tmp_path / "cached", {}, None).read_text()
    top = page.split("<nav>")[0]
    assert "Nothing new pushed; version 1, pushed earlier, is served." in top
    assert "ushed as version" not in page, "no section of the page says otherwise"
    # a rollback since served version 1's model again as version 3: the page and the summary name version 3
    rolled = dataclasses.replace(summary, served_version=3)
    top = run_report.write_report(rolled, tmp_path / "rolled", {}, None).read_text().split("<nav>")[0]
    assert "Nothing new pushed; version 3 is\nserved (version 1, this model's push, was replaced since" in top, top
    assert "  pushed: nothing new; version 3 is served (version 1, this model's push, was replaced since, by a " \
        "later push or a rollback)" in rolled.text()
    assert run_index.outcome(rolled.to_json()) == "nothing new pushed; version 3 is served"
    pushed = run_report.write_report(dataclasses.replace(summary, nodes=[]), tmp_path / "new", {}, None).read_text()
    assert f"Pushed as version 1 ({tmp_path / 'serving_model' / '1'})." in pushed.split("<nav>")[0]


def test_a_run_that_pushed_nothing_names_the_version_that_stays_served(tmp_path):
    summary = _summary(blessed=False, decision="binary_accuracy 0.5000 is below the minimum 0.8")
    for served, words in ((3, "Nothing pushed; version 3 stays served."),
                          (0, "Nothing pushed; no model is served yet."),
                          (None, "Nothing pushed; the served model is unchanged.")):
        summary.served_version = served
        top = run_report.write_report(summary, tmp_path / str(served), {}, None).read_text().split("<nav>")[0]
        assert words in top, top
        line = [n for n in summary.text().splitlines() if "pushed:" in n]
        assert line == ["  " + {3: "pushed: nothing; version 3 stays served",
                                0: "pushed: nothing; no model is served yet",
                                None: "pushed: nothing (the served model, if any, is unchanged)"}[served]], line


def test_the_cards_sections_the_report_shows_itself_are_left_out_of_its_copy():
    card = ("# Model card: x\n\nVersion `serving_model/2`.\n\n## Intended use\n\nCats.\n\n## Training\n\nepochs\n\n"
            "## Evaluation\n\n| metric |\n\n## Blessing\n\nDecision: met.\n\n## TFLite models\n\nint8\n\n"
            "## Known limits\n\n- few images\n")
    text, left_out = report_sections.card_sections_not_shown(card)
    assert left_out == ["Training", "Evaluation", "Blessing", "TFLite models"]
    assert "## Intended use" in text and "## Known limits" in text and "few images" in text
    assert not any(word in text for word in ("epochs", "| metric |", "Decision: met", "int8")), text


def test_a_blessed_model_withheld_because_a_rollback_withdrew_its_weights_is_said_so(tmp_path):
    withheld = ("the candidate's weights are version 2's, which the rollback to version 1 (pushed as version 3) "
                "withdrew: pushing it would undo that rollback; train on new data or other settings for another "
                "model, or, if version 2's weights should be served after all, `rollback --to 2`")
    summary = dataclasses.replace(_summary(blessed=True, decision="no worse than the baseline"), withheld=withheld,
                                  served_version=3)
    assert f"  pushed: nothing: {withheld}; version 3 stays served" in summary.text().splitlines()
    top = run_report.write_report(summary, tmp_path / "page", {}, None).read_text().split("<nav>")[0]
    assert "Nothing pushed: the candidate&#39;s weights are version 2&#39;s, which the rollback" in top, top
    assert run_index.outcome(summary.to_json()) == "blessed; not pushed: a rollback withdrew these weights"


def test_a_run_given_no_source_does_not_say_it_ingested(tmp_path):
    """It printed `ingest: span 1: 400 files, accepted 400` as if it had ingested the newest span again."""
    page = run_report.write_report(_summary(), tmp_path, {}, _ingest_report() | {"no_source": True}).read_text()
    assert "No source given: this run ingested nothing and trains on the spans already ingested. The newest: span 2 " \
        "from folder:/data/pets: 5 files" in page
    ingest = {"span": 1, "reused": False, "files_seen": 400, "counts": {"accepted": 400}, "carried": 0}
    said = [line for line in _summary(ingest=ingest | {"no_source": True}).text().splitlines() if "ingest:" in line]
    assert said == ["  ingest: none (no source given); trains on the spans there, the newest: span 1: 400 files, "
                    "accepted 400"]
    said = [line for line in _summary(ingest=ingest | {"no_source": False}).text().splitlines() if "ingest:" in line]
    assert said == ["  ingest: span 1: 400 files, accepted 400"]


def test_the_baseline_is_named_by_the_version_it_was_pushed_as(tmp_path):
    """`baseline metrics:` did not say which model it was, and `models` scores each version on its own spans' test
    images: the two figures of one version looked like a contradiction."""
    metrics = {"candidate": {"binary_accuracy": 0.9}, "baseline": {"binary_accuracy": 0.8}}
    summary = _summary(metrics=metrics, baseline="version 1's model, served as version 5", blessed=True, decision="x")
    assert "  baseline (version 1's model, served as version 5) metrics: binary_accuracy 0.8000" in \
        summary.text().splitlines()
    page = run_report.write_report(summary, tmp_path / "page", {}, None).read_text()
    assert "<td>baseline (version 1&#39;s model, served as version 5)</td>" in page
