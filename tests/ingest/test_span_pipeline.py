"""What ingest's Beam pipeline holds while it works: a batch's files a few at a time when they are large, no pixels
kept between a check and its decode, and no second copy on disk of a source whose items carry their bytes."""

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from contract import storage
from ingest import images, span_pipeline, spans


def _png(side: int, seed: int) -> bytes:
    out = io.BytesIO()
    Image.effect_noise((side, side), 40 + seed).convert("RGB").save(out, format="PNG")
    return out.getvalue()


def test_a_batch_of_large_files_is_checked_a_few_at_a_time(tmp_path, monkeypatch):
    """The files a check holds come to the bound, plus at most the one file that crossed it."""
    for label in ("cat", "dog"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(6):
            (tmp_path / "data" / label / f"{i}.png").write_bytes(_png(120, i + 10 * (label == "dog")))
    largest = max(p.stat().st_size for p in (tmp_path / "data").rglob("*.png"))
    monkeypatch.setattr(span_pipeline, "_CHECK_BYTES", 2 * largest)
    held = []
    real = span_pipeline.check_images

    def recording(batch, max_pixels):
        held.append(sum(map(len, batch)))
        return real(batch, max_pixels)

    monkeypatch.setattr(span_pipeline, "check_images", recording)
    report = spans.ingest("folder", tmp_path / "data", tmp_path / "examples")
    assert report.counts["normalized"] == 12
    assert len(held) >= 4 and max(held) <= 3 * largest, held


def test_a_converted_image_is_kept_as_its_jpeg_bytes_and_size_alone():
    """A batch holds what each image will be written as, not Pillow's decoded pixels (a 4000x4000 PNG is 48 MB of
    them); a JPEG stored as it came keeps Pillow's opened, undecoded image for a reason, should TensorFlow refuse
    it."""
    converted = images._prepare(_png(64, 1), 1_000_000)
    assert converted.opened is None and (converted.width, converted.height) == (64, 64)
    out = io.BytesIO()
    Image.effect_noise((64, 48), 40).convert("RGB").save(out, format="JPEG")
    as_is = images._prepare(out.getvalue(), 1_000_000)
    assert as_is.jpeg == out.getvalue() and as_is.opened is not None and as_is.opened.tile  # not decoded yet


def _written(monkeypatch):
    paths = []
    real = storage.backend.write

    def recording(path, data):
        paths.append((path, len(data)))
        return real(path, data)

    monkeypatch.setattr(storage.backend, "write", recording)
    return paths


def test_items_that_carry_their_bytes_are_not_copied_to_the_root_and_a_folder_s_list_is_gone_once_published(
        tmp_path, monkeypatch, demo_jpegs):
    rows = [*demo_jpegs["cat"], *demo_jpegs["dog"]]
    table = pa.table({"image": [{"bytes": b, "path": f"{i}.jpg"} for i, b in enumerate(rows)],
                      "labels": [0, 0, 0, 1, 1, 1]})
    pq.write_table(table, tmp_path / "pets.parquet")
    root_bytes = []  # all that lies under the root while the images are checked
    check = span_pipeline._CheckItems.process

    def measuring(self, batch):
        root_bytes.append(sum(p.stat().st_size for p in (tmp_path / "from-parquet").rglob("*") if p.is_file()))
        yield from check(self, batch)

    monkeypatch.setattr(span_pipeline._CheckItems, "process", measuring)
    spans.ingest("parquet", tmp_path / "pets.parquet", tmp_path / "from-parquet")
    assert root_bytes and max(root_bytes) < sum(map(len, rows)) / 2, root_bytes
    monkeypatch.undo()

    for label, jpegs in demo_jpegs.items():
        (tmp_path / "data" / label).mkdir(parents=True)
        for i, jpeg in enumerate(jpegs):
            (tmp_path / "data" / label / f"{i}.jpg").write_bytes(jpeg)
    written = _written(monkeypatch)
    spans.ingest("folder", tmp_path / "data", tmp_path / "from-folder")
    [(_, size)] = [(path, size) for path, size in written if path.rsplit("/", 1)[-1].startswith("items")]
    assert size < sum(map(len, rows))  # the list of files, not their bytes
    span = tmp_path / "from-folder" / "span-1"
    assert sorted(p.name for p in span.iterdir() if p.is_file()) == ["ingest_report.json"]


def test_an_image_pillow_cannot_write_as_jpeg_is_quarantined_with_libjpeg_s_reason_and_the_rest_ingested(
        tmp_path, demo_jpegs, capfd):
    """libjpeg takes at most 65,500 pixels a side: such a PNG cannot be converted. It once ended the whole ingest
    as "a storage fault"; libjpeg's own line went to stderr."""
    for label, jpegs in demo_jpegs.items():
        (tmp_path / "data" / label).mkdir(parents=True)
        for i, jpeg in enumerate(jpegs):
            (tmp_path / "data" / label / f"{i}.jpg").write_bytes(jpeg)
    Image.new("RGB", (65_600, 8), (10, 20, 30)).save(tmp_path / "data" / "dog" / "wide.png")
    capfd.readouterr()
    report = spans.ingest("folder", tmp_path / "data", tmp_path / "examples")
    assert report.quarantined == [{"file": "dog/wide.png",
                                   "reason": "cannot be converted to JPEG (Maximum supported image dimension is "
                                             "65500 pixels)"}]
    assert report.counts["accepted"] == 6
    assert "65500" not in capfd.readouterr().err


def test_one_decoding_call_takes_at_most_its_bytes_and_the_verdicts_stay_each_image_s(monkeypatch):
    """A converted image's JPEG can be far larger than its file: the calls that decode a group are cut by the
    JPEG bytes they copy into a tensor, not by the files read."""
    jpegs = []
    for seed in range(7):
        out = io.BytesIO()
        Image.effect_noise((80, 60 + seed), 50 + seed).convert("RGB").save(out, format="JPEG")
        jpegs.append(out.getvalue())
    damaged = [*jpegs[:3], jpegs[3][:len(jpegs[3]) // 2], *jpegs[4:]]
    expected = images.check_images(damaged)
    monkeypatch.setattr(images, "_DECODE_BYTES", 2 * max(map(len, jpegs)))
    calls = []
    real = images._all_decode

    def recording(batch):
        calls.append(sum(map(len, batch)))
        return real(batch)

    monkeypatch.setattr(images, "_all_decode", recording)
    got = images.check_images(damaged)
    assert [v.reason if isinstance(v, images.RejectedImage) else v for v in got] == \
        [v.reason if isinstance(v, images.RejectedImage) else v for v in expected]
    assert len(calls) >= 2 and max(calls) <= 3 * max(map(len, jpegs)), calls


def test_an_example_of_a_split_the_span_has_no_writer_for_stops_the_ingest_not_lost(tmp_path, monkeypatch):
    """Beam drops an output no step takes without a word: a split outside SPLITS (none reaches it today) must fail
    the span, not leave a report that counts examples its shards lack."""
    from ingest import synthetic

    synthetic.write_demo_images(tmp_path / "data", 2)
    monkeypatch.setattr(span_pipeline, "split_of", lambda *args: "validation")
    with pytest.raises(Exception, match="split 'validation' is none of the span's train, eval, test"):
        spans.ingest("folder", tmp_path / "data", tmp_path / "examples")
    assert not list((tmp_path / "examples").glob("span-*"))
