"""Labeled queues carried into every later span (ingest.carried): the images a person sorted stay in training,
each once and in the split it had, and a scheduled run on unchanged data ingests nothing new."""

import hashlib
import os
import shutil

import pytest
import tensorflow as tf

from contract import features, layout
from ingest import carried, sources, span_pipeline, span_report, spans, synthetic
from monitoring import looks, queue


def _sorted_queue(labeling, images, sort=None):
    """A queue exported from `images`, the first `sort` of them (all by default) sorted by their true class."""
    folder, _ = queue.export(str(labeling), images, None, {})
    unsorted = os.path.join(folder, layout.QUEUE_UNSORTED)
    for name in sorted(os.listdir(unsorted))[:sort]:
        _sort(folder, name)
    return folder


def _sort(folder, name):
    """looks.images draws cats and dogs in turn; export's file name starts with the image's index."""
    label = features.LABEL_NAMES[int(name[:6]) % 2]
    shutil.move(os.path.join(folder, layout.QUEUE_UNSORTED, name), os.path.join(folder, label, name))


def _splits(examples, span):
    """{sha256: [split, ...]} of every record of the span (a list: an image written twice shows twice)."""
    found = {}
    for path in sorted((examples / f"span-{span}").glob("*/*.tfrecord")):
        for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
            sha256 = tf.train.Example.FromString(record).features.feature[features.SHA256_KEY].bytes_list.value[0]
            found.setdefault(sha256.decode(), []).append(path.parent.name)
    return found


@pytest.fixture
def root(tmp_path):
    data = tmp_path / "data"
    synthetic.write_demo_images(data, 3)
    return {"data": data, "examples": tmp_path / "examples", "labeling": tmp_path / "root" / "labeling"}


def test_a_span_after_a_labeled_queue_carries_its_images_in_their_splits_and_unchanged_data_reuses_it(root):
    examples = root["examples"]
    spans.ingest("folder", root["data"], examples)
    queued = _sorted_queue(root["labeling"], looks.images("sketch", 12))
    queue_report = spans.ingest("folder", queued, examples)
    assert queue_report.span == 2 and queue_report.labeled_queue and queue_report.carried == []
    in_queue = {sha: split for sha, (split,) in _splits(examples, 2).items()}
    assert len(in_queue) == 12 and set(in_queue.values()) >= {"train", "test"}

    again = spans.ingest("folder", root["data"], examples)  # the scheduled run's data, unchanged
    assert (again.span, again.reused) == (3, False), "the data differs from the newest span: the queue's"
    (entry,) = again.carried
    assert entry["span"] == 2 and entry["examples"] == 12 and entry["left_out"] == 0
    assert entry["examples_per_split"] == queue_report.examples_per_split
    assert again.examples_written == 6 + 12 and again.examples_from_source == 6
    assert again.examples_per_label == {"cat": 3 + 6, "dog": 3 + 6}
    held = _splits(examples, 3)
    assert {sha: held[sha] for sha in in_queue} == {sha: [split] for sha, split in in_queue.items()}, \
        "each queued image once, in the split it had"
    assert {split: sum(1 for s in held.values() for x in s if x == split) for split in layout.SPLITS} \
        == again.examples_per_split
    assert sorted(p.name for p in (examples / "span-3" / "train").iterdir())[-1] == "queue-span-2.tfrecord"

    rerun = spans.ingest("folder", root["data"], examples)
    assert (rerun.span, rerun.reused) == (3, True), "the next scheduled run ingests nothing new"
    synthetic.write_demo_images(root["data"], 4)  # the data changes
    grown = spans.ingest("folder", root["data"], examples)
    assert (grown.span, grown.reused, [c["span"] for c in grown.carried]) == (4, False, [2])
    held = _splits(examples, 4)
    assert {sha: held[sha] for sha in in_queue} == {sha: [split] for sha, split in in_queue.items()}
    assert spans.ingest("folder", root["data"], examples).reused


def test_every_earlier_queue_is_carried_and_a_queue_ingested_again_replaces_its_earlier_span(root):
    examples = root["examples"]
    spans.ingest("folder", root["data"], examples)
    first = _sorted_queue(root["labeling"], looks.images("sketch", 8), sort=3)
    assert spans.ingest("folder", first, examples).examples_written == 3  # span 2
    for name in sorted(os.listdir(os.path.join(first, layout.QUEUE_UNSORTED))):  # the person sorts the rest
        _sort(first, name)
    more = spans.ingest("folder", first, examples)
    assert (more.span, more.carried, more.examples_written) == (3, [], 8), "its own earlier span: not carried"
    second = _sorted_queue(root["labeling"], looks.images("dusk", 4))
    report = spans.ingest("folder", second, examples)
    assert [c["span"] for c in report.carried] == [3] and report.examples_written == 4 + 8  # span 4
    data = spans.ingest("folder", root["data"], examples)
    assert data.span == 5 and [(c["span"], c["examples"]) for c in data.carried] == [(3, 8), (4, 4)]
    in_span = _splits(examples, 5)
    assert all(len(found) == 1 for found in in_span.values())
    assert len(in_span) == 6 + 8 + 4


def _labels(examples, span):
    """{sha256: [(split, label name), ...]} of every record of the span."""
    found = {}
    for path in sorted((examples / f"span-{span}").glob("*/*.tfrecord")):
        for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
            feature = tf.train.Example.FromString(record).features.feature
            found.setdefault(feature[features.SHA256_KEY].bytes_list.value[0].decode(), []).append(
                (path.parent.name, features.LABEL_NAMES[feature[features.LABEL_KEY].int64_list.value[0]]))
    return found


def test_an_image_the_data_and_a_queue_both_hold_keeps_the_datas_split_and_the_persons_label(root, tmp_path):
    """The data's split comes from its folders, the queue's from the content hash: the image stays where the data
    has it in every span, under the label a person gave it."""
    examples, data = root["examples"], tmp_path / "split_data"
    synthetic.write_demo_images(data / "train", 3)
    synthetic.write_demo_images(data / "test", 2, seed=1)
    images = looks.images("sketch", 12)
    spans.ingest("folder", _sorted_queue(root["labeling"], images), examples)  # span 1
    in_queue = _labels(examples, 1)
    by_sha = {hashlib.sha256(image).hexdigest(): image for image in images}
    ((sha, [(split, label)]),) = [(k, v) for k, v in in_queue.items() if v[0][0] != "train"][:1]
    other = features.LABEL_NAMES[1 - features.LABEL_NAMES.index(label)]
    (data / "train" / other / "also.jpg").write_bytes(by_sha[sha])  # in train, under the other label
    report = spans.ingest("folder", data, examples)  # span 2
    assert _labels(examples, 2)[sha] == [("train", label)], "the data's split, the person's label"
    assert report.quarantined == [] and report.carried[0]["in_source"] == 1
    assert report.carried[0]["examples"] == 11 and report.examples_written == 10 + 12
    assert "1 images a labeled queue holds too are kept from the source, in the source's split, with the label " \
           "a person gave them in the queue" in report.table()
    synthetic.write_demo_images(data / "train", 4)
    spans.ingest("folder", data, examples)  # span 3
    assert _labels(examples, 3)[sha] == [("train", label)], "no image moves between splits from span to span"


def test_a_queue_ingested_after_the_data_keeps_an_image_the_data_holds_in_the_datas_split(root, tmp_path):
    examples, data = root["examples"], tmp_path / "split_data"
    synthetic.write_demo_images(data / "train", 3)
    images = looks.images("sketch", 12)
    shas = [hashlib.sha256(image).hexdigest() for image in images]
    hashed = {sha: span_pipeline.hash_split(sha, spans.IngestSettings()) for sha in shas}
    index = next(i for i, sha in enumerate(shas) if hashed[sha] != "train")
    (data / "train" / "cat" / "also.jpg").write_bytes(images[index])
    spans.ingest("folder", data, examples)  # span 1: in train
    spans.ingest("folder", _sorted_queue(root["labeling"], images), examples)  # span 2
    assert [split for split, _ in _labels(examples, 2)[shas[index]]] == ["train"], "the data's split"
    spans.ingest("folder", data, examples)  # span 3
    assert [split for split, _ in _labels(examples, 3)[shas[index]]] == ["train"]


def test_a_newer_queue_relabels_an_image_an_older_queue_labelled(root):
    examples = root["examples"]
    images = looks.images("sketch", 4)
    spans.ingest("folder", root["data"], examples)
    spans.ingest("folder", _sorted_queue(root["labeling"], images), examples)  # span 2: image 0 a cat
    newer = _sorted_queue(root["labeling"], looks.images("dusk", 2))
    with open(os.path.join(newer, "dog", "older_cat.jpg"), "wb") as f:  # the person moves it into the newer queue
        f.write(images[0])
    report = spans.ingest("folder", newer, examples)  # span 3
    sha = hashlib.sha256(images[0]).hexdigest()
    assert report.quarantined == [] and report.counts["accepted"] == 3
    assert "1 images an earlier labeled queue held are kept as this queue labels them" in report.table()
    assert [label for _, label in _labels(examples, 3)[sha]] == ["dog"]
    spans.ingest("folder", root["data"], examples)  # span 4
    assert [label for _, label in _labels(examples, 4)[sha]] == ["dog"]
    assert sum(len(v) for v in _labels(examples, 4).values()) == 6 + 4 + 2


def test_a_span_window_above_one_is_refused_before_any_work_where_labeled_queues_are(root):
    """With a wider window the Trainer would read a queued image in the queue's span and again carried."""
    from config import DataConfig
    from orchestration.run import lifecycle

    examples, wide = root["examples"], spans.IngestSettings(span_window=2)
    spans.ingest("folder", root["data"], examples, wide)  # no queue yet: a wide window is fine
    queued = _sorted_queue(root["labeling"], looks.images("sketch", 4))
    with pytest.raises(carried.WindowRefused, match="labeled queues are carried at --span-window 1 only; the "
                                                    "source is one"):
        spans.ingest("folder", queued, examples, wide)
    spans.ingest("folder", queued, examples)
    for kind, location in (("folder", str(root["data"])), (None, "")):
        with pytest.raises(lifecycle.RunRefused, match="--span-window 1 only; span 2 holds one"):
            lifecycle.ingest(kind, location, str(examples), DataConfig(span_window=3))
    assert span_report.existing_spans(examples) == [1, 2], "nothing written"
    assert spans.ingest("folder", root["data"], examples).carried  # at window 1 the queue is carried


def test_a_queue_whose_span_is_removed_is_carried_no_more(root):
    examples = root["examples"]
    spans.ingest("folder", root["data"], examples)
    spans.ingest("folder", _sorted_queue(root["labeling"], looks.images("sketch", 4)), examples)
    assert spans.ingest("folder", root["data"], examples).carried  # span 3
    shutil.rmtree(examples / "span-2")
    dropped = spans.ingest("folder", root["data"], examples)
    assert (dropped.span, dropped.reused, dropped.carried, dropped.examples_written) == (4, False, [], 6)


def test_a_queue_whose_newest_span_is_gone_is_dropped_never_its_superseded_span_brought_back(root):
    examples = root["examples"]
    spans.ingest("folder", root["data"], examples)
    queued = _sorted_queue(root["labeling"], looks.images("sketch", 4), sort=2)
    spans.ingest("folder", queued, examples)  # span 2: the first sort
    spans.ingest("folder", root["data"], examples)  # span 3 carries span 2
    for name in sorted(os.listdir(os.path.join(queued, layout.QUEUE_UNSORTED))):
        _sort(queued, name)
    spans.ingest("folder", queued, examples)  # span 4 supersedes span 2
    synthetic.write_demo_images(root["data"], 4)
    assert [c["span"] for c in spans.ingest("folder", root["data"], examples).carried] == [4]  # span 5
    shutil.rmtree(examples / "span-4")
    synthetic.write_demo_images(root["data"], 5)
    report = spans.ingest("folder", root["data"], examples)  # span 6
    assert (report.span, report.carried, report.examples_written) == (6, [], 10)
    assert f"{os.path.basename(queued)}'s newest span-4 is gone; its earlier span-2 is not carried" in report.table()
    shutil.rmtree(examples / "span-5")  # span 6's report still names the queue's newest span
    synthetic.write_demo_images(root["data"], 6)
    later = spans.ingest("folder", root["data"], examples)
    assert (later.span, later.carried, [e["span"] for e in later.not_carried]) == (7, [], [4])


def test_a_removed_newest_queue_span_stops_the_queue_when_no_span_came_after_it_and_its_number_is_not_reused(root):
    """No later report names the removed span: the numbers file does."""
    examples = root["examples"]
    spans.ingest("folder", root["data"], examples)
    queued = _sorted_queue(root["labeling"], looks.images("sketch", 4), sort=2)
    spans.ingest("folder", queued, examples)  # span 2: the first sort
    spans.ingest("folder", root["data"], examples)  # span 3 carries span 2
    for name in sorted(os.listdir(os.path.join(queued, layout.QUEUE_UNSORTED))):
        _sort(queued, name)
    assert spans.ingest("folder", queued, examples).span == 4  # supersedes span 2; the newest span
    shutil.rmtree(examples / "span-4")
    # The data unchanged: span 3 carries the superseded span 2, so it is not what the next span would be.
    report = spans.ingest("folder", root["data"], examples)
    assert not report.reused and (report.span, report.carried) == (5, []), "span 4's number stays used"
    assert f"{os.path.basename(queued)}'s newest span-4 is gone; its earlier span-2 is not carried" in report.table()
    assert spans.ingest("folder", root["data"], examples).reused, "then the same data again is that span"
    synthetic.write_demo_images(root["data"], 4)
    report = spans.ingest("folder", root["data"], examples)
    assert (report.span, report.carried, report.examples_written) == (6, [], 8)
    assert f"{os.path.basename(queued)}'s newest span-4 is gone; its earlier span-2 is not carried" in report.table()
    assert span_report.numbers_used(examples) == {1: None, 2: report.not_carried[0]["queue"], 3: None,
                                                  4: report.not_carried[0]["queue"], 5: None, 6: None}


def test_a_root_from_before_the_numbers_file_gets_one_with_its_spans_and_a_damaged_one_stops_ingest(root):
    examples = root["examples"]
    spans.ingest("folder", root["data"], examples)
    (examples / span_report.NUMBERS_FILE).unlink()  # as a root written before the file was
    synthetic.write_demo_images(root["data"], 4)
    spans.ingest("folder", root["data"], examples)
    assert span_report.numbers_used(examples) == {1: None, 2: None}
    shutil.rmtree(examples / "span-2")
    synthetic.write_demo_images(root["data"], 5)
    assert spans.ingest("folder", root["data"], examples).span == 3
    (examples / span_report.NUMBERS_FILE).write_text('{"spans": [{"span": "3"}]}')
    with pytest.raises(span_report.DamagedReportError, match=f"{span_report.NUMBERS_FILE} is damaged .*restore it"):
        spans.ingest("folder", root["data"] / "cat", examples)
    assert span_report.existing_spans(examples) == [1, 3]


def test_the_fingerprint_covers_the_carried_queues_content_not_their_span_numbers():
    assert carried.fingerprint("abc", []) == "abc"
    one = carried.fingerprint("abc", [carried.QueueSpan(2, "q1", "q")])
    assert one != "abc" and one != carried.fingerprint("abc", [carried.QueueSpan(2, "q1", "r")])
    assert one == carried.fingerprint("abc", [carried.QueueSpan(4, "q1", "q")]), "the same queue, ingested again"


def test_an_unchanged_queue_ingested_again_is_the_span_that_carries_it(root):
    examples = root["examples"]
    spans.ingest("folder", root["data"], examples)
    queued = _sorted_queue(root["labeling"], looks.images("sketch", 4))
    spans.ingest("folder", queued, examples)
    spans.ingest("folder", root["data"], examples)  # span 3 carries it
    again = spans.ingest("folder", queued, examples)
    assert (again.span, again.reused) == (3, True)
    assert (spans.ingest("folder", root["data"], examples).span, span_report.existing_spans(examples)) == (3, [1, 2, 3])
    shutil.copy(next((examples.parent / "data" / "cat").iterdir()), os.path.join(queued, "cat", "more.jpg"))
    assert spans.ingest("folder", queued, examples).span == 4, "the queue sorted further is ingested"


def test_a_queue_span_holding_a_link_is_refused_and_what_it_points_at_untouched(root, tmp_path):
    examples = root["examples"]
    spans.ingest("folder", _sorted_queue(root["labeling"], looks.images("sketch", 4)), examples)
    outside = tmp_path / "users.tfrecord"
    outside.write_bytes(b"the user's")
    os.symlink(outside, examples / "span-1" / "train" / "extra.tfrecord")
    with pytest.raises(sources.SourceError, match="labeled queue of span 1 cannot be carried.*symbolic link"):
        spans.ingest("folder", root["data"], examples)
    assert outside.read_bytes() == b"the user's" and span_report.existing_spans(examples) == [1]


def test_an_ingest_that_fails_after_carrying_leaves_no_span_and_no_staging(root, monkeypatch):
    examples = root["examples"]
    spans.ingest("folder", _sorted_queue(root["labeling"], looks.images("sketch", 4)), examples)

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(span_pipeline, "write_shards", full_disk)
    with pytest.raises(OSError):
        spans.ingest("folder", root["data"], examples)
    assert sorted(os.listdir(examples)) == ["span-1", span_report.NUMBERS_FILE]


def test_a_damaged_report_of_an_earlier_span_stops_the_ingest_naming_it(root):
    """It may be a labeled queue's: ingesting on without it would drop the queue unsaid."""
    examples = root["examples"]
    spans.ingest("folder", root["data"], examples)
    synthetic.write_demo_images(root["data"], 4)
    spans.ingest("folder", root["data"], examples)
    (examples / "span-1" / layout.INGEST_REPORT).write_text('{"source": ')
    synthetic.write_demo_images(root["data"], 5)
    with pytest.raises(span_report.DamagedReportError, match="span-1/ingest_report.json is damaged"):
        spans.ingest("folder", root["data"], examples)
    assert span_report.existing_spans(examples) == [1, 2]


def test_a_queue_ingested_then_deleted_is_neither_queued_again_nor_its_number_given_to_another(root):
    """Its folder is gone after its ingest: the next drifting window's images it held are not queued again (a
    person would sort them twice, and the newer label win without a word), nor is its number used again."""
    examples, labeling = root["examples"], root["labeling"]
    spans.ingest("folder", root["data"], examples)
    images = looks.images("sketch", 12)
    queued = _sorted_queue(labeling, images[:8])
    spans.ingest("folder", queued, examples)
    shutil.rmtree(queued)
    known = queue.ingested(str(examples))
    assert len(known[0]) == 8 and known[1] == 1
    assert queue.export(str(labeling), images[:8], None, {}, known) == (None, 0), "every image was queued before"
    folder, written = queue.export(str(labeling), images, None, {}, known)
    assert written == 4 and os.path.basename(folder) == "queue-2"
    assert queue.ingested(str(examples / "none")) == (set(), 0)
