import apache_beam as beam

from pipeline import pipeline as pipeline_lib


def _mode(args):
    return beam.options.pipeline_options.PipelineOptions(args).view_as(
        beam.options.pipeline_options.DirectOptions).direct_running_mode


def test_small_known_data_runs_in_process():
    assert _mode(pipeline_lib.local_beam_args(0, examples=600)) == "in_memory"
    assert _mode(pipeline_lib.local_beam_args(0, examples=pipeline_lib.LOCAL_MULTIPROCESS_MIN_EXAMPLES - 1)) \
        == "in_memory"


def test_large_or_unknown_data_gets_a_process_per_core():
    for examples in (pipeline_lib.LOCAL_MULTIPROCESS_MIN_EXAMPLES, None):
        args = pipeline_lib.local_beam_args(0, examples=examples)
        assert _mode(args) == "multi_processing"
        assert beam.options.pipeline_options.PipelineOptions(args).view_as(
            beam.options.pipeline_options.DirectOptions).direct_num_workers == 0  # Beam: one per core


def test_explicit_worker_count_wins_over_the_size():
    assert _mode(pipeline_lib.local_beam_args(1, examples=10**6)) == "in_memory"
    args = pipeline_lib.local_beam_args(3, examples=10)
    assert _mode(args) == "multi_processing"
    assert "--direct_num_workers=3" in args
