"""A pushed version, a rollback and a span are complete or invisible on an object store, wherever the writer dies.

Each scenario runs once whole to count its object changes, then again killed
after each of them in turn (tests/object_store.py: Cloud Storage as
TensorFlow's GCS file system uses it: directory markers, a folder rename object
by object in name order, its own marker first). After every kill the readers
must count nothing partial, and the next writer must clean up, say so, and
never reuse a number.
"""

import pytest
import tensorflow as tf

from components import serving_pusher
from components.serving_pusher import digest_problems, existing_versions, incomplete_versions, push_model
from contract import layout, served, storage
from ingest import span_report, spans
from tests.object_store import FakeObjectStore, Killed

ROOT = "gs://bucket/pipeline"
SERVING = f"{ROOT}/serving_model"
EXAMPLES = f"{ROOT}/examples"
STAGED = ".span-" + "2" * 32  # a staging folder as storage.staging_name names one
MODEL_FILES = ("saved_model.pb", "fingerprint.pb", "variables/variables.index",
               "variables/variables.data-00000-of-00001", layout.KERAS_MODEL_FILE)


def test_the_fake_store_keeps_directory_markers_and_renames_marker_first_as_tensorflows_gcs_file_system():
    """What gcs_file_system.cc does: CreateDir writes "<dir>/" for each missing folder, top down; RenameFile moves
    every object of a folder, its own marker first, copy then delete, in name order; listing hides the marker."""
    store = FakeObjectStore({"gs://b/root/kept": b"k"})
    store.makedirs("gs://b/root/a/b")
    store.makedirs("gs://b/root/a")  # exists: nothing written
    assert store.log == [("marker", "gs://b/root/a/"), ("marker", "gs://b/root/a/b/")]
    store.write("gs://b/root/a/.z", b"z")
    store.write("gs://b/root/a/b/f", b"f")
    assert store.listdir("gs://b/root/a") == [".z", "b"] and store.files("gs://b/root/a") == [".z", "b/f"]
    assert store.isdir("gs://b/root/a/b") and store.exists("gs://b/root/a")
    with pytest.raises(tf.errors.NotFoundError):
        store.listdir("gs://b/root/missing")
    store.log.clear()
    store.rename_folder("gs://b/root/a", "gs://b/root/c")
    assert store.log == [("copy", "gs://b/root/c/"), ("delete", "gs://b/root/a/"),
                         ("copy", "gs://b/root/c/.z"), ("delete", "gs://b/root/a/.z"),
                         ("copy", "gs://b/root/c/b/"), ("delete", "gs://b/root/a/b/"),
                         ("copy", "gs://b/root/c/b/f"), ("delete", "gs://b/root/a/b/f")]
    with pytest.raises(tf.errors.AlreadyExistsError):
        store.rename_folder("gs://b/root/kept", "gs://b/root/c")
    store.log.clear()
    store.rmtree("gs://b/root/c")
    assert [name for _, name in store.log] == ["gs://b/root/c/", "gs://b/root/c/.z", "gs://b/root/c/b/",
                                               "gs://b/root/c/b/f"]
    assert store.objects == {"gs://b/root/kept": b"k"}


def _model(uri: str, tag: bytes) -> dict[str, bytes]:
    return {f"{uri}/{name}": tag + name.encode() for name in MODEL_FILES}


@pytest.fixture
def use(monkeypatch):
    def install(store: FakeObjectStore) -> FakeObjectStore:
        monkeypatch.setattr(storage, "backend", store)
        return store
    return install


@pytest.fixture
def served_version_1(use):
    """Objects of a root that serves model-1 as version 1, with model-2's files waiting to be pushed."""
    store = use(FakeObjectStore({**_model("gs://bucket/models/1", b"one:"), **_model("gs://bucket/models/2", b"two:")}))
    assert push_model("gs://bucket/models/1", SERVING, model_uri="model-1").version == 1
    # Only KServe serves a gs:// root, from its copy in the pod.
    assert served.read_config(SERVING) == served.ServingConfig(served.MODEL_NAME, "/mnt/models", 1)
    return dict(store.objects)


PUSHES = {
    "push": lambda: push_model("gs://bucket/models/2", SERVING, model_uri="model-2"),
    # A rollback pushes an earlier version's folder as the next version (orchestration.serving.rollback).
    "rollback": lambda: push_model(f"{SERVING}/1", SERVING, model_uri="model-1-again",
                                   record={"rolled_back_to": 1, "rolled_back_from": 1}),
}


@pytest.mark.parametrize("kind", sorted(PUSHES))
def test_a_push_killed_after_any_object_is_never_counted_and_the_next_push_cleans_up(kind, use, served_version_1):
    whole = use(FakeObjectStore(served_version_1))
    PUSHES[kind]()
    assert whole.changes > 10
    markers_only = []
    for budget in range(whole.changes):
        killed = use(FakeObjectStore(served_version_1, budget=budget))
        with pytest.raises(Killed):
            PUSHES[kind]()
        after = use(FakeObjectStore(killed.objects))
        complete = existing_versions(SERVING)
        assert complete in ([1], [1, 2]), (budget, complete)
        assert all(digest_problems(f"{SERVING}/{v}") == [] for v in complete), budget
        left_incomplete = sorted(incomplete_versions(SERVING))
        assert set(left_incomplete).isdisjoint(complete)
        # A fresh server reads the config: it names a committed version only, 1 until the push's last object.
        assert served.read_config(SERVING).version == served.served(SERVING).version in complete, budget

        retried = PUSHES[kind]()
        if complete == [1, 2]:  # killed after the commit record, before the config: the retry names its version 2
            assert (retried.version, retried.new) == (2, False), budget
            assert not any("was committed but" in line for line in retried.cleaned), "a push rolls nothing forward"
        else:
            assert retried.version > max(left_incomplete + complete), (budget, "a number a server saw was reused")
        names = [name for name in after.listdir(SERVING) if name != served.CONFIG_FILE]
        assert all(name.isdigit() for name in names), (budget, names)  # no staging copy, nothing incomplete
        assert existing_versions(SERVING) == sorted(int(n) for n in names)
        assert served.read_config(SERVING).version == retried.version == max(existing_versions(SERVING)), budget
        assert digest_problems(retried.path) == []
        for version in left_incomplete:
            assert any(line.startswith(f"version {version} was incomplete") and "moved to" in line
                       for line in retried.cleaned), (budget, retried.cleaned)
        aside = serving_pusher.aside_dir(SERVING)
        moved = after.listdir(aside) if after.isdir(aside) else []
        assert sorted({int(name.split("-")[0]) for name in moved}) == left_incomplete, (budget, moved)
        markers_only.append(killed.isdir(f"{SERVING}/2") and not killed.files(f"{SERVING}/2"))
    assert any(markers_only), "no kill left a version folder holding only its directory marker"


def test_a_version_without_its_commit_record_or_with_files_missing_is_incomplete(use, served_version_1):
    use(FakeObjectStore(served_version_1))
    version = f"{SERVING}/1"
    assert serving_pusher.incomplete_reason(version) is None
    storage.backend.remove(f"{version}/variables/variables.index")
    assert "variables/variables.index" in serving_pusher.incomplete_reason(version)
    storage.backend.remove(f"{version}/{layout.DIGESTS_FILE}")
    assert serving_pusher.incomplete_reason(version) == f"no readable commit record ({layout.DIGESTS_FILE})"
    assert existing_versions(SERVING) == []


def test_a_local_push_publishes_the_commit_record_last(tmp_path, monkeypatch):
    serving = str(tmp_path / "serving")
    model = tmp_path / "model"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"graph")
    (model / "variables" / "variables.index").write_bytes(b"index")
    seen = []
    original = storage.publish

    def watch(staging, final, commit_file, commit):
        seen.append(sorted(storage.backend.files(staging)))
        original(staging, final, commit_file, commit)

    monkeypatch.setattr(storage, "publish", watch)
    result = push_model(str(model), serving, model_uri="m")
    assert layout.DIGESTS_FILE not in seen[0] and "saved_model.pb" in seen[0]
    assert (tmp_path / "serving" / "1" / layout.DIGESTS_FILE).is_file() and digest_problems(result.path) == []


def _stage_span(name: str) -> None:
    """Stages a span as ingest does: its folder made, the marker first, the TFRecords (Beam's writes make no
    directory markers), then the folder of an empty split."""
    staging = f"{EXAMPLES}/{name}"
    storage.backend.makedirs(staging)
    storage.backend.write(f"{staging}/{layout.SPAN_UNCOMMITTED}", b"")
    for shard, data in (("train/images-00000-of-00002.tfrecord", b"t0"),
                        ("train/images-00001-of-00002.tfrecord", b"t1"),
                        ("eval/images-00000-of-00001.tfrecord", b"e0")):
        storage.backend.write(f"{staging}/{shard}", data)
    storage.backend.makedirs(f"{staging}/test")


def _report(span: int) -> span_report.IngestReport:
    return span_report.IngestReport(
        source="folder:/data", span=span, reused=False, source_fingerprint=f"f{span}", files_seen=3,
        counts={"accepted": 3, "normalized": 0, "duplicate": 0, "quarantined": 0},
        examples_per_label={"cat": 1, "dog": 2}, examples_per_split={"train": 2, "eval": 1},
        quarantined=[], duplicates=[], normalized=[])


@pytest.fixture
def span_1(use):
    """An examples root with span 1 complete and span 2 staged, ready to publish."""
    store = use(FakeObjectStore())
    _stage_span(".span-one")
    _stage_span(STAGED)
    spans.publish_span(f"{EXAMPLES}/.span-one", layout.span_dir(EXAMPLES, 1), _report(1))
    return dict(store.objects)


def _publish_span_2():
    spans.publish_span(f"{EXAMPLES}/{STAGED}", layout.span_dir(EXAMPLES, 2), _report(2))


def test_a_span_published_killed_after_any_object_is_never_read_and_is_moved_aside(use, span_1):
    whole = use(FakeObjectStore(span_1))
    _publish_span_2()
    assert span_report.existing_spans(EXAMPLES) == [1, 2] and span_report.load_report(EXAMPLES, 2).span == 2
    assert whole.objects[f"{layout.span_dir(EXAMPLES, 2)}/test/"] == b"", "an empty split's folder is kept"
    markers_only = []
    for budget in range(whole.changes):
        killed = use(FakeObjectStore(span_1, budget=budget))
        with pytest.raises(Killed):
            _publish_span_2()
        after = use(FakeObjectStore(killed.objects))
        readable = span_report.existing_spans(EXAMPLES)
        assert readable in ([1], [1, 2]), (budget, readable)
        assert all(span_report.load_report(EXAMPLES, s) is not None for s in readable), \
            (budget, "a span cut short would be read as one another tool wrote")
        if readable == [1, 2]:
            assert len(after.files(f"{layout.span_dir(EXAMPLES, 2)}/train")) == 2
        cut_short = after.isdir(layout.span_dir(EXAMPLES, 2)) and readable == [1]
        markers_only.append(cut_short and not after.files(layout.span_dir(EXAMPLES, 2)))
        done, highest = span_report.clean_up(EXAMPLES)
        assert highest == (2 if cut_short or readable == [1, 2] else 1), budget
        assert all(layout.span_number(n) is not None for n in after.listdir(EXAMPLES)), after.listdir(EXAMPLES)
        assert any(line.startswith("span 2 was cut short") for line in done) == cut_short, (budget, done)
        staging_left = any(name.startswith(f"{EXAMPLES}/{STAGED}/") for name in killed.objects)
        assert any(line.startswith(f"removed the staging folder {STAGED}") for line in done) == staging_left
        assert span_report.existing_spans(EXAMPLES) == readable and span_report.clean_up(EXAMPLES)[0] == []
    assert any(markers_only), "no kill left a span folder holding only its directory marker"


def test_a_span_killed_after_its_first_object_is_cut_short_and_moved_aside(use, span_1):
    """The rename's first object is the folder's own marker: killed after it, span-2/ exists and holds nothing."""
    killed = use(FakeObjectStore(span_1, budget=1))
    with pytest.raises(Killed):
        _publish_span_2()
    assert killed.log == [("copy", f"{layout.span_dir(EXAMPLES, 2)}/")]
    use(FakeObjectStore(killed.objects))
    assert span_report.is_cut_short(EXAMPLES, 2) and span_report.existing_spans(EXAMPLES) == [1]
    done, highest = span_report.clean_up(EXAMPLES)
    assert highest == 2 and any(line.startswith("span 2 was cut short") for line in done), done
    assert storage.backend.listdir(EXAMPLES) == ["span-1"]
    assert [name.split("-")[:2] for name in storage.backend.listdir(span_report.aside_dir(EXAMPLES))] == \
        [["span", "2"]]


def test_moving_a_span_aside_killed_after_any_object_leaves_it_cut_short_until_done(use, span_1):
    partial = {name: data for name, data in span_1.items() if STAGED not in name}
    partial[f"{layout.span_dir(EXAMPLES, 2)}/"] = b""  # directory markers: a move must not leave them readable
    partial[f"{layout.span_dir(EXAMPLES, 2)}/{layout.SPAN_UNCOMMITTED}"] = b""
    partial[f"{layout.span_dir(EXAMPLES, 2)}/test/"] = b""
    partial[f"{layout.span_dir(EXAMPLES, 2)}/train/images-00000-of-00002.tfrecord"] = b"t0"
    whole = use(FakeObjectStore(partial))
    span_report.clean_up(EXAMPLES)
    for budget in range(whole.changes):
        killed = use(FakeObjectStore(partial, budget=budget))
        with pytest.raises(Killed):
            span_report.clean_up(EXAMPLES)
        use(FakeObjectStore(killed.objects))
        assert span_report.existing_spans(EXAMPLES) == [1], budget
        span_report.clean_up(EXAMPLES)
        assert span_report.existing_spans(EXAMPLES) == [1] and storage.backend.listdir(EXAMPLES) == ["span-1"]
        assert span_report.clean_up(EXAMPLES) == ([], 2), "the number of the span moved aside is kept"


@pytest.mark.parametrize("markers", [(), ("span-4/", "span-4/train/")], ids=["no markers", "markers"])
def test_a_span_another_tool_wrote_is_still_read(use, markers):
    use(FakeObjectStore({f"{EXAMPLES}/span-4/train/part-0": b"x", f"{EXAMPLES}/span-4/eval/part-0": b"y",
                         **{f"{EXAMPLES}/{marker}": b"" for marker in markers}}))
    assert span_report.existing_spans(EXAMPLES) == [4] and span_report.load_report(EXAMPLES, 4) is None
    assert span_report.clean_up(EXAMPLES) == ([], 4)

