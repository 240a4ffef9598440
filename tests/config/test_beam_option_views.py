"""Views of Beam's pipeline options made from the flags as parsed once (config.beam_policy.fast_option_views): the
same values and the same sharing as the views Beam makes, a new object each time, and nothing kept that Beam's own
view would read differently."""

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


def test_a_view_reads_what_beams_own_view_reads_and_is_a_new_object_each_time():
    beam_view_as, _ = _view_as()
    options = PipelineOptions(ARGS, job_name="nightly")
    for cls in (TypeOptions, DirectOptions, GoogleCloudOptions, SetupOptions, StandardOptions):
        first, again = options.view_as(cls), options.view_as(cls)
        assert again is not first and type(first) is cls and first._visible_options is not again._visible_options
        assert _values(first) == _values(again) == _values(beam_view_as(options, cls))
        assert str(first) == str(beam_view_as(options, cls))
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


def test_what_a_view_reads_is_read_again_when_it_changed():
    import functools

    beam_view_as, _ = _view_as()

    class Late(PipelineOptions):
        @classmethod
        def _add_argparse_args(cls, parser):
            parser.add_argument("--one", default=1)

    class Cached(PipelineOptions):
        @classmethod
        def _add_argparse_args(cls, parser):
            parser.add_argument("--exps", default="x,y")

        @functools.cached_property
        def exp_list(self):
            return self.exps.split(",")

    options = PipelineOptions(["--two=5", "--exps=a,b"])
    assert options.view_as(Late).one == 1
    first = Late._add_argparse_args.__func__
    Late._add_argparse_args = classmethod(lambda cls, parser: (first(cls, parser), parser.add_argument("--two")))
    assert options.view_as(Late).two == "5", "an option the class defines later is parsed"
    assert options.view_as(Cached).exp_list == ["a", "b"]
    options.view_as(Cached).exps = "z"
    assert options.view_as(Cached).exp_list == ["z"], "nothing a view stores on itself outlives it"
    view = options.view_as(SetupOptions)
    view._flags = ["--project=dogs"]  # one view's flags re-pointed: its own views read them, the options' do not
    assert view.view_as(GoogleCloudOptions).project == "dogs"
    assert options.view_as(GoogleCloudOptions).project == "dogs", "the value it set is shared, as with Beam's views"
    fresh = PipelineOptions(["--project=cats"])
    assert fresh.view_as(GoogleCloudOptions).project == "cats"
    fresh._flags = ["--region=north", "--direct_num_workers=3"]  # the flags replaced: parsed again, as Beam would
    assert fresh.view_as(DirectOptions).direct_num_workers == 3
    assert _values(fresh.view_as(GoogleCloudOptions)) == _values(beam_view_as(fresh, GoogleCloudOptions))


def test_options_that_compare_by_value_or_hold_themselves_are_viewed_and_freed():
    _view_as()

    class ByValue(PipelineOptions):
        @classmethod
        def _add_argparse_args(cls, parser):
            parser.add_argument("--eqopt", default="a")

        def __eq__(self, other):
            return self.get_all_options() == other.get_all_options()

    by_value = ByValue(["--eqopt=b"])
    assert by_value.view_as(TypeOptions).pipeline_type_check is True and by_value.view_as(ByValue).eqopt == "b"
    beam.Pipeline(options=by_value)
    holding = PipelineOptions(ARGS)
    holding._all_options["holder"] = [holding]
    holding.view_as(SetupOptions)
    gone = weakref.ref(holding)
    del holding
    gc.collect()
    assert gone() is None


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


def test_options_made_from_the_same_flags_share_no_list_or_dict():
    """Beam appends to an options object's lists (`--experiments`, in Pipeline and the runners): another options
    object made from the same flags, later in the process, must not see it."""
    from apache_beam.options.pipeline_options import DebugOptions

    _view_as()
    first = PipelineOptions(["--experiments=a"])
    first.view_as(DebugOptions).add_experiment("only_the_first")
    first.view_as(StandardOptions).resource_hints.append("min_ram=1GB")
    first.view_as(DirectOptions).direct_test_splits["step"] = 1
    second = PipelineOptions(["--experiments=a"])
    assert second.view_as(DebugOptions).experiments == ["a"]
    assert first.view_as(DebugOptions).experiments == ["a", "only_the_first"]
    assert second.view_as(StandardOptions).resource_hints == []
    assert second.view_as(DirectOptions).direct_test_splits == {}
    third = PipelineOptions(["--experiments=a"])
    view = third.view_as(DebugOptions)
    assert view._visible_options.experiments is third._all_options["experiments"], "as in Beam's own first view"


def test_a_class_whose_options_are_defined_by_a_plain_function_is_parsed_again_when_it_changes():
    beam_view_as, _ = _view_as()

    class Plain(PipelineOptions):
        pass

    Plain._add_argparse_args = lambda parser: parser.add_argument("--p")  # no classmethod: Beam calls it anyway
    options = PipelineOptions(["--p=5", "--q=7"])
    assert options.view_as(Plain).p == "5"
    Plain._add_argparse_args = lambda parser: (parser.add_argument("--p"), parser.add_argument("--q"))
    assert _values(options.view_as(Plain)) == _values(beam_view_as(options, Plain)) == {"p": "5", "q": "7"}
