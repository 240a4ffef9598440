import hashlib
import io
import json
import os
import re

import pytest
import tensorflow as tf
from PIL import Image

from config import beam_policy
from contract import features
from ingest import foreign_spans, sources, span_pipeline, span_report, spans, synthetic
from ingest.images import RejectedImage, check_image


def _png_bytes(mode="RGBA"):
    buffer = io.BytesIO()
    Image.new(mode, (50, 40), (10, 200, 30, 128) if mode == "RGBA" else 90).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def messy_folder(tmp_path, demo_jpegs):
    root = tmp_path / "images"
    (root / "Cats").mkdir(parents=True)
    (root / "dog").mkdir()
    (root / "horse").mkdir()
    for i, jpeg in enumerate(demo_jpegs["cat"]):
        (root / "Cats" / f"c{i}.jpg").write_bytes(jpeg)
    for i, jpeg in enumerate(demo_jpegs["dog"]):
        (root / "dog" / f"d{i}.JPG").write_bytes(jpeg)
    (root / "dog" / "copy_of_d0.jpg").write_bytes(demo_jpegs["dog"][0])  # duplicate
    (root / "Cats" / "empty.jpg").write_bytes(b"")
    (root / "Cats" / "truncated.jpg").write_bytes(demo_jpegs["cat"][0][:600])
    (root / "Cats" / "scan.bin").write_bytes(b"\x00" * 64)
    # an operating system's own files, passed over: never photos
    (root / "Cats" / "Thumbs.db").write_bytes(b"\x00" * 64)
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "dog" / "._d0.JPG").write_bytes(b"\x00\x05\x16\x07")
    (root / "dog" / "@eaDir" / "d0.JPG").mkdir(parents=True)  # a NAS's thumbnails: the same photos again
    (root / "dog" / "@eaDir" / "d0.JPG" / "SYNOFILE_THUMB_M.jpg").write_bytes(demo_jpegs["dog"][0])
    (root / "Cats" / ".Trashes").mkdir()  # empty: listed by neither a local folder nor its URI
    (root / "dog" / "page.jpg").write_bytes(b"<html><body>404</body></html>")
    (root / "dog" / "transparent.png").write_bytes(_png_bytes("RGBA"))
    (root / "horse" / "h.jpg").write_bytes(demo_jpegs["dog"][1])
    (root / "notes.txt").write_text("hello")
    return root


def _records(examples_root, span):
    records = []
    for path in sorted((examples_root / f"span-{span}").glob("*/*.tfrecord")):
        split = path.parent.name
        records += [(split, r.numpy()) for r in tf.data.TFRecordDataset(str(path))]
    return records


def test_every_file_gets_exactly_one_outcome_with_a_reason(messy_folder, tmp_path):
    report = spans.ingest("folder", messy_folder, tmp_path / "examples")
    assert report.files_seen == 14
    assert sum(report.counts.values()) == report.files_seen
    assert report.counts == {"accepted": 6, "normalized": 1, "duplicate": 1, "quarantined": 6}
    reasons = {q["file"]: q["reason"] for q in report.quarantined}
    assert reasons["Cats/empty.jpg"] == "empty file"
    assert "truncated or corrupt" in reasons["Cats/truncated.jpg"]
    assert "not an image" in reasons["Cats/scan.bin"] and "not an image" in reasons["dog/page.jpg"]
    assert "unknown label" in reasons["horse/h.jpg"] and "'horse'" in reasons["horse/h.jpg"]
    assert "not inside a class folder" in reasons["notes.txt"]
    assert report.duplicates == [{"file": "dog/d0.JPG", "duplicate_of": "dog/copy_of_d0.jpg"}]
    assert sum(report.examples_per_split.values()) == report.examples_written
    assert report.normalized[0]["file"] == "dog/transparent.png"
    assert report.examples_per_label == {"cat": 3, "dog": 4}
    assert report.passed_over == [".DS_Store", "Cats/Thumbs.db", "dog/._d0.JPG", "dog/@eaDir/"]
    assert "  passed over 3 file(s) and 1 folder(s) the operating system keeps (.DS_Store, ._*, @eaDir/, Thumbs.db): " \
        "not photos, not read" in report.table().splitlines()


def test_an_operating_systems_files_come_and_go_without_a_new_span(tmp_path):
    """A file browser that opens the folder writes its .DS_Store or Thumbs.db: the data is the same."""
    data, examples = tmp_path / "data", tmp_path / "examples"
    synthetic.write_demo_images(data, 2)
    first = spans.ingest("folder", data, examples)
    assert first.passed_over == []
    (data / "cat" / ".DS_Store").write_bytes(b"Bud1" * 10)
    (data / "dog" / "._0.jpg").write_bytes(b"\x00\x05\x16\x07")
    (data / "Thumbs.db").write_bytes(b"\x00" * 8)
    (data / "__MACOSX" / "cat").mkdir(parents=True)  # unzipped from a Mac's zip
    (data / "__MACOSX" / "cat" / "._0.jpg").write_bytes(b"\x00\x05\x16\x07")
    (data / "cat" / "Desktop.INI").write_text("[.ShellClassInfo]")  # a copy may carry any case
    (data / "dog" / ".directory").write_text("[Dolphin]")
    os.symlink("nowhere", data / "dog" / "desktop.ini")  # a broken link is one too, not a quarantined file
    os.symlink("nowhere", data / "cat" / ".AppleDouble")
    (data / "cat" / ".Trashes").mkdir()  # empty: nothing, as an object store would list it
    with open(os.path.join(os.fsencode(data / "dog"), b"._\xff.jpg"), "wb") as f:  # a name that is not UTF-8
        f.write(b"\x00\x05\x16\x07")
    again = spans.ingest("folder", data, examples)
    assert (again.span, again.reused) == (1, True), "no new span for files no photo is in"
    now = ["Thumbs.db", "__MACOSX/", "cat/.AppleDouble", "cat/.DS_Store", "cat/Desktop.INI", "dog/._0.jpg",
           "dog/._\\xff.jpg", "dog/.directory", "dog/desktop.ini"]
    assert again.passed_over == now, "the table of a reused span says what the folder holds now"
    assert "each listed in" not in again.table(written_to="span-1/ingest_report.json"), \
        "the reused span's report lists what was passed over when it was written"
    (data / "cat" / "extra.jpg").write_bytes((data / "dog" / sorted(os.listdir(data / "dog"))[1]).read_bytes())
    grown = spans.ingest("folder", data, examples)
    assert (grown.span, grown.passed_over) == (2, now)
    saved = span_report.load_report(examples, 2)
    assert saved.passed_over == grown.passed_over and saved.counts == grown.counts
    assert grown.files_seen == 5, "passed over, not seen: the counts add up to the files read"


@pytest.mark.parametrize("field, value, problem", [
    ("passed_over", [1, None], "an entry of its passed_over is not a string"),
    ("quarantined", ["x"], "an entry of its quarantined is not an object with a string for file and reason"),
    ("quarantined", [{"file": "a"}], "an entry of its quarantined is not an object with a string for file and reason"),
    ("duplicates", [{"file": "a", "duplicate_of": 5}], "an entry of its duplicates is not an object"),
])
def test_a_report_whose_lists_hold_what_no_reader_can_use_is_damaged(tmp_path, field, value, problem):
    data, examples = tmp_path / "data", tmp_path / "examples"
    synthetic.write_demo_images(data, 2)
    spans.ingest("folder", data, examples)
    path = examples / "span-1" / span_report.REPORT_FILE
    path.write_text(json.dumps(json.loads(path.read_text()) | {field: value}))
    with pytest.raises(span_report.DamagedReportError, match=re.escape(problem)):
        span_report.load_report(examples, 1)


def test_span_holds_decodable_rgb_jpeg_examples(messy_folder, tmp_path):
    report = spans.ingest("folder", messy_folder, tmp_path / "examples")
    records = _records(tmp_path / "examples", report.span)
    assert len(records) == report.examples_written == 7
    assert {split: sum(1 for s, _ in records if s == split) for split in spans.SPLITS} == report.examples_per_split
    for split, record in records:
        example = tf.train.Example.FromString(record)
        feature = example.features.feature
        jpeg = feature[features.IMAGE_KEY].bytes_list.value[0]
        image = tf.io.decode_jpeg(jpeg)
        assert image.shape[-1] == 3
        assert (feature[features.HEIGHT_KEY].int64_list.value[0], feature[features.WIDTH_KEY].int64_list.value[0]) \
            == tuple(image.shape[:2])
        assert feature[features.LABEL_KEY].int64_list.value[0] in (0, 1)
    saved = json.loads((tmp_path / "examples" / f"span-{report.span}" / span_report.REPORT_FILE).read_text())
    assert saved["counts"] == report.counts


def test_unchanged_data_reuses_the_span_and_new_data_writes_the_next(tmp_path):
    data = tmp_path / "data"
    synthetic.write_demo_images(data, 2)
    first = spans.ingest("folder", data, tmp_path / "examples")
    span_dir = tmp_path / "examples" / "span-1"
    mtimes = {p: p.stat().st_mtime_ns for p in span_dir.rglob("*")}
    again = spans.ingest("folder", data, tmp_path / "examples")
    assert (first.span, again.span, again.reused) == (1, 1, True)
    assert again.seconds == first.seconds > 0, "a reused span reports the ingest that wrote it"
    assert {p: p.stat().st_mtime_ns for p in span_dir.rglob("*")} == mtimes, "a reused span must not be rewritten"
    synthetic.write_demo_images(data, 3)
    grown = spans.ingest("folder", data, tmp_path / "examples")
    assert (grown.span, grown.reused, grown.examples_written) == (2, False, 6)
    assert span_report.existing_spans(tmp_path / "examples") == [1, 2]


def test_same_bytes_under_both_labels_are_quarantined(tmp_path, demo_jpegs):
    for name in ("cat", "dog"):
        (tmp_path / "d" / name).mkdir(parents=True)
        (tmp_path / "d" / name / "same.jpg").write_bytes(demo_jpegs["cat"][0])
    (tmp_path / "d" / "dog" / "ok.jpg").write_bytes(demo_jpegs["dog"][0])
    report = spans.ingest("folder", tmp_path / "d", tmp_path / "examples")
    assert report.counts["quarantined"] == 2 and report.counts["accepted"] == 1
    assert all("another label" in q["reason"] for q in report.quarantined)


def test_folder_without_usable_images_is_an_error_naming_it(tmp_path):
    (tmp_path / "d" / "cat").mkdir(parents=True)
    (tmp_path / "d" / "cat" / "x.jpg").write_bytes(b"")
    with pytest.raises(spans.NoUsableImagesError, match="no usable images"):
        spans.ingest("folder", tmp_path / "d", tmp_path / "examples")
    assert span_report.existing_spans(tmp_path / "examples") == []


def test_missing_data_dir_is_a_clear_error(tmp_path):
    with pytest.raises(sources.SourceError, match="does not exist"):
        spans.ingest("folder", tmp_path / "nowhere", tmp_path / "examples")


def test_pixel_limit_rejects_decompression_bombs():
    buffer = io.BytesIO()
    Image.new("RGB", (400, 300)).save(buffer, format="JPEG")
    with pytest.raises(RejectedImage, match="exceeds the limit"):
        check_image(buffer.getvalue(), max_pixels=100_000)
    assert check_image(buffer.getvalue(), max_pixels=120_000).width == 400


def _two_spans(tmp_path, first_per_class, second_per_class):
    """Span 1 from a generated folder, span 2 after the folder grew; returns the examples root."""
    data, examples = tmp_path / "data", tmp_path / "examples"
    for per_class in (first_per_class, second_per_class):
        synthetic.write_demo_images(data, per_class)
        spans.ingest("folder", data, examples)
    return examples


def test_without_a_split_of_their_own_images_divide_80_10_10_by_content_hash():
    settings = spans.IngestSettings()
    splits = [span_pipeline.hash_split(hashlib.sha256(str(i).encode()).hexdigest(), settings) for i in range(3000)]
    shares = {split: splits.count(split) / len(splits) for split in spans.SPLITS}
    assert abs(shares["train"] - 0.8) < 0.03 and abs(shares["eval"] - 0.1) < 0.02 and abs(shares["test"] - 0.1) < 0.02
    held_out = [span_pipeline.hash_split(hashlib.sha256(str(i).encode()).hexdigest(), settings, held_out_only=True)
                for i in range(1000)]
    assert set(held_out) == {"eval", "test"} and abs(held_out.count("test") / 1000 - 0.5) < 0.06
    divides = span_pipeline.divides_held_out
    assert divides(["train", "eval", None]) and divides(["train", "test"])
    assert not divides(["train", "eval", "test"]) and not divides(["train", None])


def test_an_image_lands_in_the_same_split_in_every_span(tmp_path):
    _two_spans(tmp_path, 6, 12)

    def split_by_source(span):
        return {tf.train.Example.FromString(r).features.feature["source"].bytes_list.value[0]: s
                for s, r in _records(tmp_path / "examples", span)}

    first, second = split_by_source(1), split_by_source(2)
    assert first.items() <= second.items()


def test_span_files_mix_the_classes_in_a_fixed_order(tmp_path):
    """Sources list class by class; a span must not hold all cats and then all dogs."""
    data = tmp_path / "data"
    synthetic.write_demo_images(data, 20)
    spans.ingest("folder", data, tmp_path / "one")
    spans.ingest("folder", data, tmp_path / "two")
    train = [r for s, r in _records(tmp_path / "one", 1) if s == "train"]
    labels = [tf.train.Example.FromString(r).features.feature["label"].int64_list.value[0] for r in train]
    assert set(labels) == {0, 1}
    assert set(labels[:len(labels) // 4]) == {0, 1}
    assert sum(a != b for a, b in zip(labels, labels[1:])) >= len(labels) // 4
    assert _records(tmp_path / "one", 1) == _records(tmp_path / "two", 1)


def test_multi_process_run_gives_the_same_span(tmp_path):
    data = tmp_path / "data"
    synthetic.write_demo_images(data, 4)
    one = spans.ingest("folder", data, tmp_path / "one", beam_args=lambda items: beam_policy.ingest_args(1, items))
    two = spans.ingest("folder", data, tmp_path / "two", beam_args=lambda items: beam_policy.ingest_args(2, items))
    assert (one.counts, one.examples_per_split) == (two.counts, two.examples_per_split)
    assert sorted(r for _, r in _records(tmp_path / "one", 1)) == sorted(r for _, r in _records(tmp_path / "two", 1))


def _encoded(image, fmt, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _rotated_photo():
    """A 60x40 JPEG whose EXIF says 'rotate 90°': upright it is 40x60."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encoded(Image.new("RGB", (60, 40), (200, 30, 30)), "JPEG", exif=exif)


@pytest.mark.parametrize("name, data, change, size", [
    ("gray.jpg", _encoded(Image.new("L", (40, 30), 128), "JPEG"), "L to RGB", (30, 40)),
    ("cmyk.jpg", _encoded(Image.new("CMYK", (40, 30), (0, 120, 200, 10)), "JPEG"), "CMYK to RGB", (30, 40)),
    ("palette.gif", _encoded(Image.new("P", (40, 30), 3), "GIF"), "GIF to JPEG", (30, 40)),
    ("bitmap.bmp", _encoded(Image.new("RGB", (40, 30), (1, 2, 3)), "BMP"), "BMP to JPEG", (30, 40)),
    ("webp_named.jpg", _encoded(Image.new("RGB", (40, 30), (9, 99, 9)), "WEBP"), "WEBP to JPEG", (30, 40)),
    ("rotated.jpg", _rotated_photo(), "EXIF orientation 6 applied", (60, 40)),
])
def test_each_kind_of_image_is_normalized_to_an_upright_rgb_jpeg(name, data, change, size):
    image = check_image(data)
    assert change in image.normalized
    decoded = tf.io.decode_jpeg(image.jpeg)
    assert decoded.shape[-1] == 3 and tuple(decoded.shape[:2]) == size == (image.height, image.width)


def test_plain_rgb_jpeg_is_kept_byte_for_byte(demo_jpegs):
    image = check_image(demo_jpegs["cat"][0])
    assert image.normalized is None and image.jpeg == demo_jpegs["cat"][0]


def test_oversized_image_in_a_folder_is_quarantined_with_its_size(tmp_path, demo_jpegs):
    (tmp_path / "d" / "cat").mkdir(parents=True)
    (tmp_path / "d" / "cat" / "huge.jpg").write_bytes(_encoded(Image.new("RGB", (500, 400)), "JPEG"))
    (tmp_path / "d" / "cat" / "ok.jpg").write_bytes(demo_jpegs["cat"][0])
    report = spans.ingest("folder", tmp_path / "d", tmp_path / "examples",
                          spans.IngestSettings(max_pixels=150_000))
    assert report.quarantined == [{"file": "cat/huge.jpg", "reason": "500x400 pixels exceeds the limit of 150000"}]


def test_examples_in_the_window_are_counted_from_reports_and_a_foreign_spans_records(tmp_path):
    _two_spans(tmp_path, 2, 3)
    examples = tmp_path / "examples"
    assert foreign_spans.examples_in_window(examples, 1, up_to=1000) == 6
    assert foreign_spans.examples_in_window(examples, 2, up_to=1000) == 4 + 6
    (examples / "span-3" / "train").mkdir(parents=True)
    (examples / "span-3" / "train" / "part-0").write_bytes(b"")  # a span another tool wrote: no report
    assert foreign_spans.examples_in_window(examples, 1, up_to=1000) == 0
    (examples / "span-3" / "eval").mkdir()
    with tf.io.TFRecordWriter(str(examples / "span-3" / "eval" / "part-0.gz"), "GZIP") as writer:
        for i in range(7):
            writer.write(b"record %d" % i)
    assert foreign_spans.examples_in_window(examples, 1, up_to=1000) == 7
    assert foreign_spans.examples_in_window(examples, 3, up_to=1000) == 4 + 6 + 7
    # counting stops once the count that decides is reached
    assert foreign_spans.examples_in_window(examples, 3, up_to=12) == 12
    (examples / "span-3" / "eval" / "part-0.gz").write_bytes(b"\x1f\x8b not gzip at all")
    assert foreign_spans.examples_in_window(examples, 1, up_to=1000) is None
    assert foreign_spans.examples_in_window(tmp_path / "empty", 1, up_to=1000) is None


def test_a_foreign_span_of_many_shards_is_counted_and_one_with_a_fifo_or_a_folder_is_not(tmp_path):
    span = tmp_path / "examples" / "span-1"
    (span / "train").mkdir(parents=True)
    for shard in range(300):  # counted in one pass, not a dataset per file
        with tf.io.TFRecordWriter(str(span / "train" / f"part-{shard}.gz"), "GZIP") as writer:
            writer.write(b"record")
    (span / "train" / "plain").write_bytes(b"")
    assert foreign_spans.examples_in_window(tmp_path / "examples", 1, up_to=1000) == 300
    assert foreign_spans.examples_in_window(tmp_path / "examples", 1, up_to=120) == 120
    os.mkfifo(span / "train" / "pipe")  # opening it would wait for a writer forever
    assert foreign_spans.examples_in_window(tmp_path / "examples", 1, up_to=1000) is None
    os.remove(span / "train" / "pipe")
    (span / "train" / "folder").mkdir()
    assert foreign_spans.examples_in_window(tmp_path / "examples", 1, up_to=1000) is None


def test_uri_source_and_root_give_the_same_span_as_local_paths(messy_folder, tmp_path):
    """gs:// data folders and roots go through tf.io.gfile; file:// URIs take the same code path here."""
    local = spans.ingest("folder", messy_folder, tmp_path / "local")
    remote_root = f"file://{tmp_path}/remote"
    remote = spans.ingest("folder", f"file://{messy_folder}", remote_root)
    assert (remote.counts, remote.quarantined, remote.duplicates, remote.examples_per_split, remote.passed_over) == \
        (local.counts, local.quarantined, local.duplicates, local.examples_per_split, local.passed_over)
    assert remote.source_fingerprint == local.source_fingerprint, "same files, same fingerprint"
    assert sorted(_records(tmp_path / "remote", 1)) == sorted(_records(tmp_path / "local", 1))
    assert span_report.existing_spans(remote_root) == [1]
    assert span_report.load_report(remote_root, 1).counts == local.counts
    again = spans.ingest("folder", f"file://{messy_folder}", remote_root)
    assert (again.span, again.reused) == (1, True)
    assert not [p for p in (tmp_path / "remote").iterdir() if p.name.startswith(".")], "no staging left behind"


def test_span_without_its_report_is_superseded_not_reused(tmp_path):
    """An upload to a URI root that died before its report: the next ingest writes a new span."""
    data = tmp_path / "data"
    synthetic.write_demo_images(data, 2)
    root = f"file://{tmp_path}/examples"
    spans.ingest("folder", data, root)
    (tmp_path / "examples" / "span-1" / span_report.REPORT_FILE).unlink()
    assert span_report.load_report(root, 1) is None
    assert spans.ingest("folder", data, root).span == 2


def test_the_size_cap_changes_the_fingerprint_only_through_the_files_above_it(tmp_path):
    data, examples = tmp_path / "data", tmp_path / "examples"
    synthetic.write_demo_images(data, 3)
    Image.effect_noise((200, 200), 90).convert("RGB").save(data / "cat" / "big.png")  # about 120 KB
    assert spans.ingest("folder", data, examples).span == 1
    assert spans.ingest("folder", data, examples, spans.IngestSettings(max_file_bytes=1 << 20)).reused
    size = (data / "cat" / "big.png").stat().st_size
    capped = spans.ingest("folder", data, examples, spans.IngestSettings(max_file_bytes=50_000))
    assert (capped.span, capped.reused) == (2, False)
    assert capped.quarantined == [{"file": "cat/big.png", "reason": f"{size} bytes, above the file size limit of "
                                                                    "50000 bytes (--max-file-mb): not read"}]
