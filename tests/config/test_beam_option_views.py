"""Views of Beam's pipeline options kept per options object (config.beam_policy.fast_option_views): the same values
and the same sharing as the views Beam makes, and none kept past what Beam's own view would read."""

import gc
import weakref

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    DirectOptions,
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    TypeOptions,
)

from config import beam_policy

ARGS = ["--direct_running_mode=in_memory", "--no_pipeline_type_check", "--project=cats", "--unknown_flag=7"]


def _view_as():
    """(Beam's own view_as, the one options use in this process), as importing ingest.spans leaves them."""
    import ingest.spans  # noqa: F401  (importing it is what gives Beam the views, in any process)

    kept = PipelineOptions.view_as
    return kept.beam_view_as, kept


def _values(view):
    return {name: getattr(view, name) for name in view._visible_option_list()}


def test_a_kept_view_reads_what_beams_own_view_reads():
    beam_view_as, _ = _view_as()
    options = PipelineOptions(ARGS, job_name="nightly")
    for cls in (TypeOptions, DirectOptions, GoogleCloudOptions, SetupOptions, StandardOptions):
        first, again = options.view_as(cls), options.view_as(cls)
        assert again is first and type(first) is cls
        assert _values(first) == _values(beam_view_as(options, cls))
    assert options.view_as(TypeOptions).pipeline_type_check is False
    assert options.view_as(GoogleCloudOptions).project == "cats"
    assert options.view_as(GoogleCloudOptions).job_name == "nightly"
    assert options.get_all_options(retain_unknown_options=True)["unknown_flag"] == "7"


def test_a_value_set_through_one_view_is_seen_through_every_other():
    _view_as()
    options = PipelineOptions(ARGS)
    options.view_as(StandardOptions).runner = "DataflowRunner"
    options.view_as(TypeOptions).pipeline_type_check = True
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    assert options.view_as(DirectOptions).view_as(StandardOptions).runner == "DataflowRunner"
    assert options.view_as(TypeOptions).pipeline_type_check is True
    assert options.get_all_options()["pipeline_type_check"] is True


def test_a_view_is_made_again_when_what_it_read_changed():
    _view_as()
    options = PipelineOptions(ARGS)
    kept, cloud = options.view_as(TypeOptions), options.view_as(GoogleCloudOptions)
    del options._all_options["pipeline_type_check"]  # an option of the class gone from the values: made again
    again = options.view_as(TypeOptions)
    assert again is not kept and again.pipeline_type_check is False
    options._all_options = dict(options._all_options, pipeline_type_check=True)  # the values replaced
    replaced = options.view_as(TypeOptions)
    assert replaced is not again and replaced.pipeline_type_check is True
    options._flags = ["--project=dogs", "--region=north"]  # the flags replaced: parsed again, as Beam would
    assert options.view_as(TypeOptions) is not replaced and options.view_as(GoogleCloudOptions) is not cloud
    assert options.view_as(GoogleCloudOptions).project == "cats", "a value already set stays, as in Beam's views"


def test_views_go_with_their_options():
    _view_as()
    options = PipelineOptions(ARGS)
    view = options.view_as(SetupOptions)
    gone = [weakref.ref(options), weakref.ref(view)]
    del options, view
    gc.collect()
    assert [ref() for ref in gone] == [None, None]


def _apply_str_step_to_ints(pipeline, name="Ints"):
    """None, or the type check's refusal, of a step typed for str applied to ints."""
    ints = pipeline | name >> beam.Create([1, 2]).with_output_types(int)
    try:
        ints | name + "AsText" >> beam.ParDo(lambda x: [x]).with_input_types(str)
    except beam.typehints.TypeCheckError as refused:
        return str(refused)
    return None


def test_a_pipeline_built_with_kept_views_checks_types_as_its_options_say():
    _view_as()
    checked = beam.Pipeline(options=PipelineOptions(["--direct_running_mode=in_memory"]))
    assert "Type hint violation" in _apply_str_step_to_ints(checked)
    unchecked = beam.Pipeline(options=PipelineOptions(["--no_pipeline_type_check"]))
    assert _apply_str_step_to_ints(unchecked) is None
    options = PipelineOptions([])
    later = beam.Pipeline(options=options)
    assert _apply_str_step_to_ints(later) is not None
    options.view_as(TypeOptions).pipeline_type_check = False  # set after the pipeline's first steps: seen at once
    assert _apply_str_step_to_ints(later, "More") is None


def test_given_once_and_only_on_the_release_it_was_checked_on(monkeypatch):
    import apache_beam

    beam_view_as, kept = _view_as()
    beam_policy.fast_option_views()
    assert PipelineOptions.view_as is kept, "given again, it is not wrapped twice"
    monkeypatch.setattr(PipelineOptions, "view_as", beam_view_as)
    monkeypatch.setattr(apache_beam, "__version__", "2.60.0")
    beam_policy.fast_option_views()
    assert PipelineOptions.view_as is beam_view_as
