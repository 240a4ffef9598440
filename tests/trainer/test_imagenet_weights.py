"""--weights imagenet: the file Keras' MobileNetV2 loads is fetched before a run's first component, so that a
machine without network is told so once the ingest is done, not at the Trainer after the statistics and Transform."""

import json
import pathlib
import time

import h5py
import pytest

from ingest import synthetic
from tests.helpers import cli_in_process
from trainer import weights_files

UNREACHABLE = "http://127.0.0.1:9/mobilenet_v2/"  # the discard port: nothing listens, the connection is refused


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setattr(weights_files, "IMAGENET_BASE_URL", UNREACHABLE)
    monkeypatch.setattr(weights_files, "KERAS_CACHE_DIR", str(tmp_path / "keras"))
    return tmp_path / "keras" / "models"


@pytest.mark.parametrize("alpha, size, side", [(1.0, 160, 160), (0.35, 96, 96), (0.5, 100, 224)])
def test_the_file_named_is_the_one_keras_loads_for_the_width_and_side(alpha, size, side):
    assert weights_files.imagenet_file_name(alpha, size) == (
        f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{side}_no_top.h5")


def test_a_file_already_in_kerass_cache_is_used_without_the_network_unless_it_is_cut_short(offline):
    offline.mkdir(parents=True)
    cached = offline / weights_files.imagenet_file_name(1.0, 160)
    with h5py.File(cached, "w") as weights:
        weights.attrs["layer_names"] = []
    assert weights_files.fetch_imagenet_file(1.0, 160) == str(cached)
    cached.write_bytes(cached.read_bytes()[:len(cached.read_bytes()) // 2])  # a download killed halfway stays
    with pytest.raises(OSError, match=f"Keras' cache holds {cached}, which is no whole HDF5 file .*: delete it"):
        weights_files.fetch_imagenet_file(1.0, 160)


@pytest.mark.parametrize("ingest", ["new", "reused", "no source", "reused, never trained"])
def test_only_a_run_on_a_new_span_stops_on_weights_it_cannot_have(offline, ingest, tmp_path):
    """A nightly run on unchanged data reuses its span, and its Trainer may be cached: it goes on, warned; so does a
    run given no source, on the spans there; but not in a root whose Trainer never wrote a model."""
    from config import PipelineConfig
    from contract.layout import RunLayout
    from orchestration.engines import local
    from orchestration.run.lifecycle import NO_SOURCE, BeforeTheDag

    where = RunLayout(tmp_path / "root")
    if ingest != "reused, never trained":
        (pathlib.Path(where.pipeline_root) / "Trainer" / "model" / "7").mkdir(parents=True)
    said = []
    report = {"span": 1, "reused": ingest.startswith("reused"), "files_seen": 8}
    report |= {NO_SOURCE: True} if ingest == "no source" else {}
    before = BeforeTheDag(ingest=report, table="")
    if ingest in ("new", "reused, never trained"):
        with pytest.raises(local.WeightsNotFetched, match="^--weights imagenet: MobileNetV2's ImageNet weights"):
            local._fetch_weights(PipelineConfig(), before, where, said.append)
        assert said == []
        return
    local._fetch_weights(PipelineConfig(), before, where, said.append)
    assert len(said) == 1 and said[0].startswith("warning: --weights imagenet: MobileNetV2's ImageNet weights")
    assert said[0].endswith("(this run goes on: it ingested no new data, so its Trainer may be cached)")


def test_a_file_that_cannot_be_downloaded_is_named_with_where_from(offline):
    started = time.monotonic()
    with pytest.raises(OSError) as error:
        weights_files.fetch_imagenet_file(1.0, 128)
    name = weights_files.imagenet_file_name(1.0, 128)
    assert str(error.value).startswith(f"MobileNetV2's ImageNet weights ({name}) could not be downloaded from "
                                       f"{UNREACHABLE}: ")
    assert "\n" not in str(error.value) and time.monotonic() - started < 30
    assert not (offline / name).exists()


def test_a_run_that_cannot_have_the_weights_fails_before_its_first_component_naming_them(offline, tmp_path):
    images, out = tmp_path / "images", tmp_path / "out"
    synthetic.write_demo_images(images, 4)
    done = cli_in_process("run", "--data-dir", images, "--output-dir", out, "--weights", "imagenet",
                          "--image-size", "96")
    summary = json.loads((out / "run_summary.json").read_text())
    assert done.returncode == 1 and "Traceback" not in done.stderr, done
    assert summary["error"].startswith("WeightsNotFetched: --weights imagenet: MobileNetV2's ImageNet weights "
                                       "(mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5) could not "
                                       f"be downloaded from {UNREACHABLE}: "), summary["error"]
    assert summary["error"].endswith("pass its path as --weights, or use --weights none"), summary["error"]
    assert summary["error"] in done.stdout + done.stderr
    assert summary["nodes"] == [], "no component ran: not the statistics, not Transform"
    assert (out / "examples" / "span-1" / "ingest_report.json").is_file(), "the ingest is kept for the next run"
