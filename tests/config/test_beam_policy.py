import apache_beam as beam

from config import beam_policy


def _options(args):
    return beam.options.pipeline_options.PipelineOptions(args).view_as(beam.options.pipeline_options.DirectOptions)


def _mode(args):
    return _options(args).direct_running_mode


def test_small_known_data_runs_in_process():
    assert _mode(beam_policy.component_args(0, examples=600)) == "in_memory"
    assert _mode(beam_policy.component_args(0, examples=beam_policy.COMPONENTS_MIN_EXAMPLES - 1)) == "in_memory"
    assert _mode(beam_policy.ingest_args(0, items=beam_policy.INGEST_MIN_ITEMS - 1)) == "in_memory"


def test_large_or_unknown_data_gets_a_process_per_core():
    for examples in (beam_policy.COMPONENTS_MIN_EXAMPLES, None):
        args = beam_policy.component_args(0, examples=examples)
        assert _mode(args) == "multi_processing"
        assert _options(args).direct_num_workers == 0  # Beam: one per core


def test_ingest_needs_enough_cores_as_well_as_items(monkeypatch):
    monkeypatch.setattr(beam_policy.os, "cpu_count", lambda: beam_policy.INGEST_MIN_CORES - 1)
    assert _mode(beam_policy.ingest_args(0, items=10**6)) == "in_memory"
    monkeypatch.setattr(beam_policy.os, "cpu_count", lambda: beam_policy.INGEST_MIN_CORES)
    assert _mode(beam_policy.ingest_args(0, items=beam_policy.INGEST_MIN_ITEMS)) == "multi_processing"


def test_explicit_worker_count_wins_over_the_size():
    assert _mode(beam_policy.component_args(1, examples=10**6)) == "in_memory"
    assert _mode(beam_policy.ingest_args(1, items=10**6)) == "in_memory"
    for args in (beam_policy.component_args(3, examples=10), beam_policy.ingest_args(3, items=10)):
        assert _mode(args) == "multi_processing"
        assert _options(args).direct_num_workers == 3


def test_tfx_is_handed_only_what_differs_from_beams_defaults():
    # An empty list is what keeps TFX from packaging itself for remote workers in every Beam component.
    assert beam_policy.tfx_args(beam_policy.component_args(1)) == []
    assert beam_policy.tfx_args(["--direct_num_workers=1"]) == []
    assert _options([]).direct_running_mode == "in_memory" and _options([]).direct_num_workers == 1
    for args in (beam_policy.component_args(3), ["--runner=DataflowRunner", "--project=p"]):
        assert beam_policy.tfx_args(args) == args


def test_beam_checksums_tfrecords_with_google_crc32c_and_tensorflow_reads_them_back(tmp_path):
    """The faster function computes the same CRC-32C as Beam's own (crcmod): records Beam writes with it are ones
    TensorFlow's reader, which checks every record's checksum, reads back whole."""
    import random

    import apache_beam as beam
    import crcmod.predefined
    import google_crc32c
    import tensorflow as tf
    from apache_beam.io import tfrecordio

    import ingest.spans  # noqa: F401  (importing it is what gives Beam the function, in any process)

    assert tfrecordio._default_crc32c_fn.fn is google_crc32c.value
    crcmod_crc = crcmod.predefined.mkPredefinedCrcFun("crc-32c")
    generator = random.Random(0)
    records = [generator.randbytes(generator.randrange(0, 40_000)) for _ in range(50)]
    assert [google_crc32c.value(r) for r in records] == [crcmod_crc(r) for r in records]
    with beam.Pipeline() as pipeline:
        _ = (pipeline | beam.Create(records, reshuffle=False)
             | beam.io.WriteToTFRecord(str(tmp_path / "records"), file_name_suffix=".tfrecord", num_shards=1))
    [written] = tmp_path.glob("records*.tfrecord")
    assert sorted(r.numpy() for r in tf.data.TFRecordDataset(str(written))) == sorted(records)
