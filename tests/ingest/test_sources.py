"""Each source layout, as users bring it, into the same span format."""

import io
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from ingest import listing, sources, spans, synthetic
from tests.helpers import deep_tree


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _labels_by_id(report_items):
    return {item.id: item.label for item in report_items}


def test_pet_images_layout(tmp_path, demo_jpegs):
    root = tmp_path / "PetImages"
    _write(root / "Cat" / "0.jpg", demo_jpegs["cat"][0])
    _write(root / "Dog" / "0.jpg", demo_jpegs["dog"][0])
    _write(root / "Dog" / "Thumbs.db", b"\x00" * 32)
    for where in (root, tmp_path):  # the PetImages folder itself, or its parent
        items = _labels_by_id(sources.folder_items(where))
        prefix = "" if where == root else "PetImages/"
        assert items[f"{prefix}Cat/0.jpg"] == 0 and items[f"{prefix}Dog/0.jpg"] == 1
    report = spans.ingest("folder", root, tmp_path / "examples")
    assert report.counts == {"accepted": 2, "normalized": 0, "duplicate": 0, "quarantined": 0}
    assert report.passed_over == ["Dog/Thumbs.db"], "Explorer's thumbnails, as the PetImages download has them"


def test_cats_and_dogs_filtered_keeps_train_and_divides_validation_between_eval_and_test(tmp_path, demo_jpegs):
    root = tmp_path / "cats_and_dogs_filtered"
    for i in range(3):
        _write(root / "train" / "cats" / f"cat.{i}.jpg", demo_jpegs["cat"][i])
    for i in range(8):
        _write(root / "validation" / "dogs" / f"dog.{i}.jpg", synthetic.render_image("dog", i, seed=3))
    items = {i.id: (i.label, i.split) for i in sources.folder_items(root)}
    assert items["train/cats/cat.0.jpg"] == (0, "train")
    assert items["validation/dogs/dog.0.jpg"] == (1, "eval")
    report = spans.ingest("folder", root, tmp_path / "examples")
    per_split = report.examples_per_split
    assert per_split["train"] == 3  # no validation image is trained on, no train image judges
    assert per_split["eval"] + per_split["test"] == 8 and per_split["eval"] > 0 and per_split["test"] > 0
    again = spans.ingest("folder", root, tmp_path / "examples2")
    assert again.examples_per_split == per_split  # by content hash: the same division every time


def test_a_source_with_validation_and_test_folders_keeps_both(tmp_path, demo_jpegs):
    root = tmp_path / "pets"
    _write(root / "train" / "cat" / "a.jpg", demo_jpegs["cat"][0])
    for i in range(3):
        _write(root / "validation" / "cat" / f"{i}.jpg", synthetic.render_image("cat", i, seed=3))
        _write(root / "test" / "dog" / f"{i}.jpg", demo_jpegs["dog"][i])
    report = spans.ingest("folder", root, tmp_path / "examples")
    assert report.examples_per_split == {"train": 1, "eval": 3, "test": 3}


def test_kaggle_file_names(tmp_path, demo_jpegs):
    root = tmp_path / "dogs-vs-cats"
    _write(root / "train" / "cat.1.jpg", demo_jpegs["cat"][0])
    _write(root / "train" / "dog.7.jpg", demo_jpegs["dog"][0])
    _write(root / "test1" / "12.jpg", demo_jpegs["dog"][1])  # Kaggle's unlabelled test set
    items = {i.id: i for i in sources.folder_items(root)}
    assert (items["train/cat.1.jpg"].label, items["train/dog.7.jpg"].label) == (0, 1)
    assert items["train/cat.1.jpg"].split == "train"
    assert items["test1/12.jpg"].label is None and "unknown label" in items["test1/12.jpg"].problem


def test_hugging_face_parquet(tmp_path, demo_jpegs):
    png = io.BytesIO()
    Image.new("RGB", (30, 20), (5, 100, 200)).save(png, format="PNG")
    rows = [demo_jpegs["cat"][0], demo_jpegs["dog"][0], png.getvalue(), b"not an image", demo_jpegs["dog"][1]]
    table = pa.table({
        "image": [{"bytes": b, "path": f"{i}.jpg"} for i, b in enumerate(rows)],
        "labels": [0, 1, 1, 0, 3],
    })
    folder = tmp_path / "Cat_and_Dog" / "data"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "train-00000-of-00001.parquet")
    report = spans.ingest("parquet", tmp_path / "Cat_and_Dog", tmp_path / "examples")
    assert report.counts == {"accepted": 2, "normalized": 1, "duplicate": 0, "quarantined": 2}
    reasons = {q["file"]: q["reason"] for q in report.quarantined}
    assert "not an image" in reasons["data/train-00000-of-00001.parquet#3"]
    assert "unknown label 3" in reasons["data/train-00000-of-00001.parquet#4"]
    assert report.examples_per_split == {"train": 3, "eval": 0, "test": 0}  # "train" in the file name is its split


def test_parquet_without_the_expected_columns_names_them(tmp_path):
    pq.write_table(pa.table({"img": [b"x"], "label": [0]}), tmp_path / "x.parquet")
    with pytest.raises(sources.SourceError, match=r"no column\(s\) \['image', 'labels'\]"):
        sources.parquet_items(tmp_path / "x.parquet")


def _prepared_tfds(data_dir, images):
    """A prepared cats_vs_dogs written with TFDS's own serializer and metadata."""
    builder = tfds.builder(sources.TFDS_NAME, data_dir=str(data_dir))
    os.makedirs(builder.data_dir, exist_ok=True)
    shard = os.path.join(builder.data_dir, f"{sources.TFDS_NAME}-train.tfrecord-00000-of-00001")
    with tf.io.TFRecordWriter(shard) as writer:
        for name, (jpeg, label) in images.items():
            writer.write(builder.info.features.serialize_example(
                {"image": io.BytesIO(jpeg), "image/filename": name, "label": label}))
    template = tfds.core.ShardedFileTemplate(
        data_dir=builder.data_dir, template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
        dataset_name=sources.TFDS_NAME, split="train", filetype_suffix="tfrecord")
    builder.info.set_splits(tfds.core.SplitDict([tfds.core.SplitInfo(
        name="train", shard_lengths=[len(images)], num_bytes=os.path.getsize(shard), filename_template=template)]))
    builder.info.write_to_directory(builder.data_dir)


def test_tfds_cats_vs_dogs_from_a_local_data_dir(tmp_path, demo_jpegs):
    _prepared_tfds(tmp_path / "tfds", {"PetImages/Cat/1.jpg": (demo_jpegs["cat"][0], 0),
                                       "PetImages/Dog/2.jpg": (demo_jpegs["dog"][0], 1)})
    report = spans.ingest("tfds", tmp_path / "tfds", tmp_path / "examples")
    assert report.counts["accepted"] == 2 and report.examples_per_label == {"cat": 1, "dog": 1}


def test_tfds_not_prepared_says_how_to_provide_it(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(sources.SourceError, match="not prepared.*download_and_prepare"):
        spans.ingest("tfds", tmp_path / "empty", tmp_path / "examples")


def test_names_that_are_not_utf8_are_quarantined_in_folders_and_escaped_in_parquet_ids(tmp_path, demo_jpegs):
    root = tmp_path / "images"
    _write(root / "cat" / "ok.jpg", demo_jpegs["cat"][0])
    with open(os.fsencode(root / "cat") + b"/\xff.jpg", "wb") as f:
        f.write(demo_jpegs["cat"][1])
    items = {i.id: i for i in sources.folder_items(root)}
    assert items["cat/\\xff.jpg"].problem == sources.NOT_UTF8 and items["cat/ok.jpg"].problem is None
    table = pa.table({"image": [{"bytes": demo_jpegs["dog"][0], "path": "0.jpg"}], "labels": [1]})
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    pq.write_table(table, parquet / "d.parquet")
    os.rename(parquet / "d.parquet", os.fsencode(parquet) + b"/d\xe9.parquet")
    assert [(i.id, i.problem) for i in sources.parquet_items(parquet)] == [("d\\xe9.parquet#0", None)]


def test_a_folder_tree_deeper_than_pythons_recursion_limit_is_listed(tmp_path):
    with deep_tree(tmp_path, 1100) as deepest:
        (deepest / "cat.1.jpg").write_bytes(b"x")
        # with an output folder to leave out, as `run` lists: each folder's real path is checked against it
        (tmp_path / "out").mkdir()
        listed = listing.local_files(tmp_path, leave_out=tmp_path / "out")
    assert [relative.count("/") for relative, _ in listed.files] == [1100]
    assert listed.problems == [("out/", "the pipeline's output folder (--output-dir): its files are not data, "
                                        "not read")]


def test_a_link_to_a_folder_the_data_is_in_is_a_loop_not_a_walk_of_that_folder(tmp_path):
    """A link to `/` or to the home folder the data sits in was followed: the whole machine listed, each file of it
    quarantined, the data listed again below it."""
    data = tmp_path / "pets" / "data"
    (data / "cat").mkdir(parents=True)
    (data / "cat" / "a.jpg").write_bytes(b"x")
    (tmp_path / "pets" / "notes.txt").write_text("not a photo")
    (data / "cat" / "up").symlink_to(tmp_path / "pets", target_is_directory=True)
    (data / "cat" / "everything").symlink_to("/", target_is_directory=True)
    (data / "dog").symlink_to(tmp_path / "elsewhere", target_is_directory=True)  # a link to a sibling is followed
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "b.jpg").write_bytes(b"x")
    for root in (data, tmp_path / "link-to-data"):  # the data folder itself given through a link
        if root.name == "link-to-data":
            root.symlink_to(data, target_is_directory=True)
        listed = listing.local_files(root)
        assert [relative for relative, _ in listed.files] == ["cat/a.jpg", "dog/b.jpg"]
        assert sorted(relative for relative, _ in listed.problems) == ["cat/everything/", "cat/up/"]
        assert all(problem.startswith("symbolic link loop: leads back to a folder above it")
                   for _, problem in listed.problems)


def test_a_folder_two_paths_lead_to_is_listed_once_under_the_first(tmp_path):
    """Links between sibling folders listed one image 2^N times (each level's two links to the next)."""
    levels = 12
    for level in range(levels):
        (tmp_path / f"lv{level:02}").mkdir()
    (tmp_path / f"lv{levels - 1:02}" / "cat.1.jpg").write_bytes(b"x")
    for level in range(levels - 1):
        for name in ("a", "b"):
            (tmp_path / f"lv{level:02}" / name).symlink_to(f"../lv{level + 1:02}", target_is_directory=True)
    listed = listing.local_files(tmp_path)
    assert listed.files == [(f"lv{levels - 1:02}/cat.1.jpg", str(tmp_path / f"lv{levels - 1:02}" / "cat.1.jpg"))]
    assert len(listed.problems) == 2 * (levels - 1)
    assert dict(listed.problems)["lv00/a/"] == "the same folder as lv01/ (../lv01): its files are listed there, once"


def test_pipes_devices_and_links_to_them_are_reported_as_what_they_are_and_never_opened(tmp_path):
    (tmp_path / "cat").mkdir()
    os.mkfifo(tmp_path / "fifo")
    os.mkfifo(tmp_path / "cat" / "pipe.jpg")
    (tmp_path / "cat" / "f.jpg").symlink_to("../fifo")
    (tmp_path / "cat" / "z.jpg").symlink_to("/dev/zero")
    assert dict(listing.local_files(tmp_path / "cat").problems) == {
        "f.jpg": "not a regular file: a link to a named pipe (../fifo)",
        "pipe.jpg": "not a regular file: a named pipe",
        "z.jpg": "not a regular file: a link to a character device (/dev/zero)"}
    # A file replaced by a pipe after the listing is refused as it is read, not waited on
    with pytest.raises(sources.NotRegularFile, match="^not a regular file: a named pipe$"):
        sources.read_bytes(str(tmp_path / "fifo"), 1 << 20)
    with pytest.raises(sources.NotRegularFile, match="^not a regular file: a character device$"):
        sources.read_bytes("/dev/zero", 1 << 20)


def test_a_folder_moved_elsewhere_keeps_its_fingerprint_with_a_link_loop_inside(tmp_path):
    """A loop's reason named the absolute path it led to: a moved folder of the same files made a new span."""
    before = tmp_path / "before" / "pets"
    synthetic.write_demo_images(before, 2)
    (before / "cat" / "loop").symlink_to("..", target_is_directory=True)
    settings = spans.IngestSettings()
    fingerprint = spans._fingerprint("folder", str(before), settings, None)
    after = tmp_path / "after" / "elsewhere"
    after.parent.mkdir()
    before.rename(after)
    assert spans._fingerprint("folder", str(after), settings, None) == fingerprint


def test_a_folder_two_paths_give_other_labels_or_splits_is_listed_under_each(tmp_path):
    """Listed once under the first path, a shared folder's photos took that path's label (the conflict the
    duplicate check quarantines went unseen), and a convenience link to validation/cats lost the split."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "p.jpg").write_bytes(b"x")
    data = tmp_path / "data"
    for label, name in (("cat", "x"), ("dog", "y")):
        (data / label).mkdir(parents=True)
        (data / label / name).symlink_to("../../shared", target_is_directory=True)
    (data / "validation" / "cats").mkdir(parents=True)
    (data / "validation" / "cats" / "v.jpg").write_bytes(b"x")
    (data / "cats").symlink_to("validation/cats", target_is_directory=True)
    listed = listing.local_files(data)
    assert [relative for relative, _ in listed.files] == ["cat/x/p.jpg", "cats/v.jpg", "dog/y/p.jpg",
                                                          "validation/cats/v.jpg"]
    assert listed.problems == []
    items = {item.id: (item.label, item.split) for item in sources.folder_items(data, listed)}
    assert items == {"cat/x/p.jpg": (0, None), "dog/y/p.jpg": (1, None), "cats/v.jpg": (0, None),
                     "validation/cats/v.jpg": (0, "eval")}


def test_the_output_folder_and_a_folder_the_data_is_in_are_never_walked_however_a_link_reaches_them(tmp_path):
    home = tmp_path / "home"
    (home / "Documents").mkdir(parents=True)
    (home / "Documents" / "taxes.txt").write_text("not a photo")
    (tmp_path / "mnt" / "pets" / "cat").mkdir(parents=True)
    (tmp_path / "mnt" / "pets" / "cat" / "a.jpg").write_bytes(b"x")
    (home / "pets").symlink_to(tmp_path / "mnt" / "pets", target_is_directory=True)  # the data, reached by a link
    (tmp_path / "mnt" / "pets" / "home").symlink_to(home, target_is_directory=True)  # above it, as the path was given
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "examples").mkdir()
    (tmp_path / "mnt" / "pets" / "runs").symlink_to(tmp_path / "runs", target_is_directory=True)
    (tmp_path / "mnt" / "pets" / "cat" / "more").symlink_to(tmp_path / "runs" / "examples", target_is_directory=True)
    listed = listing.local_files(home / "pets", leave_out=tmp_path / "runs")
    assert [relative for relative, _ in listed.files] == ["cat/a.jpg"]
    output = "the pipeline's output folder (--output-dir): its files are not data, not read"
    assert dict(listed.problems) == {
        "home/": f"symbolic link loop: leads back to a folder above it ({home}): not followed",
        "runs/": output, "cat/more/": output}
    inside = tmp_path / "inside"  # an output folder inside the data (the command line refuses it; a caller may not)
    (inside / "out" / "sub").mkdir(parents=True)
    (inside / "out" / "sub" / "o.jpg").write_bytes(b"x")
    (inside / "cats").mkdir()
    (inside / "cats" / "lnk").symlink_to("../out/sub", target_is_directory=True)
    assert dict(listing.local_files(inside, leave_out=inside / "out").problems) == {"cats/lnk/": output, "out/": output}
    # a data folder given through a link below its own target: its real subfolders are data, not loops
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "cat.1.jpg").write_bytes(b"x")
    (tmp_path / "a" / "b" / "up").symlink_to("..", target_is_directory=True)
    listed = listing.local_files(tmp_path / "a" / "b" / "up")
    assert [relative for relative, _ in listed.files] == ["b/cat.1.jpg"] and list(dict(listed.problems)) == ["b/up/"]
    queue = tmp_path / "runs" / "labeling" / "queue-1"  # data inside the output folder: a labeling queue
    (queue / "dog").mkdir(parents=True)
    (queue / "dog" / "q.jpg").write_bytes(b"x")
    assert [relative for relative, _ in listing.local_files(queue, leave_out=tmp_path / "runs").files] == ["dog/q.jpg"]


def test_a_parquet_file_replaced_by_a_pipe_after_the_listing_is_fingerprinted_without_waiting(tmp_path):
    """Parquet and TFDS files were opened with a plain open(): a pipe put in place of one hung the ingest."""
    for name in ("a.parquet", "b.parquet"):
        (tmp_path / name).write_bytes(b"PAR1")
    listed = listing.local_files(tmp_path)
    before = spans._fingerprint("parquet", str(tmp_path), spans.IngestSettings(), listed)
    (tmp_path / "b.parquet").unlink()
    os.mkfifo(tmp_path / "b.parquet")
    assert spans._fingerprint("parquet", str(tmp_path), spans.IngestSettings(), listed) != before
    with pytest.raises(sources.NotRegularFile, match="a named pipe"):
        sources.open_local(str(tmp_path / "b.parquet"))
