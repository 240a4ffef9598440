import sys
import time

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


def _lookups():
    """(Beam's own parameter lookup, the one Beam uses in this process), as importing ingest.spans leaves them."""
    from apache_beam.transforms import core

    import ingest.spans  # noqa: F401  (importing it is what gives Beam the cache, in any process)

    cached = core.get_function_args_defaults
    return cached.beam_lookup, cached


class _Counting(beam.DoFn):
    """Counts each key's elements in Beam's user state: (key, count so far) for each element."""

    COUNT = beam.transforms.userstate.CombiningValueStateSpec("count", sum)

    def process(self, element, count=beam.DoFn.StateParam(COUNT), timestamp=beam.DoFn.TimestampParam):
        count.add(1)
        yield element[0], count.read()

    @classmethod
    def named(cls, name, suffix="!"):
        return name + suffix


class _Stamping(beam.DoFn):
    def process(self, element, timestamp=beam.DoFn.TimestampParam):
        yield element, timestamp


def _plain(a, b=1, *rest, c=3, **more):
    return a


def test_the_cached_lookup_answers_as_beams_own_for_every_kind_of_callable():
    import functools

    beam_lookup, cached = _lookups()
    assert cached is not beam_lookup, "the cache is given on this Beam release"

    @functools.wraps(_plain)
    def wrapper(*args, **kwargs):
        return _plain(*args, **kwargs)

    class Partly:
        part = functools.partialmethod(_Counting.named, suffix="?")

    callables = [_plain, wrapper, lambda x, y=[]: x, _Counting().process, _Counting.named, _Counting.process,
                 _Stamping().process, functools.partial(_plain, 1), len, str.strip, beam.Map(len).fn.process,
                 Partly.part, Partly().part]
    for f in callables:
        for _ in range(2):  # the second answer comes from the cache, where one is kept
            assert cached(f) == beam_lookup(f), f
    names, defaults = cached(_plain)
    names.append("x"), defaults.clear()
    assert cached(_plain) == (["a", "b"], [1]), "each caller gets lists of its own"


def test_a_function_whose_defaults_change_is_looked_up_again_and_so_is_what_wraps_it():
    import functools

    _, cached = _lookups()

    def counted(element, start=0):
        return element

    @functools.wraps(counted)
    def wrapper(*args, **kwargs):
        return counted(*args, **kwargs)

    assert cached(counted) == cached(wrapper) == (["element", "start"], [0])
    counted.__defaults__ = (10,)
    assert cached(counted) == cached(wrapper) == (["element", "start"], [10])
    counted.__code__ = (lambda element, first, start=0: element).__code__
    assert cached(counted)[0] == ["element", "first", "start"]


def test_what_inspect_reads_besides_code_and_defaults_is_looked_up_again_when_it_changes():
    import functools

    _, cached = _lookups()

    def counted(element, start=0):
        return element

    assert cached(counted) == (["element", "start"], [0])
    counted.__wrapped__ = None  # inspect follows it, finds no signature there and Beam falls back to one argument
    assert cached(counted) == (["_"], [])
    del counted.__wrapped__
    assert cached(counted) == (["element", "start"], [0])
    counted._partialmethod = functools.partialmethod(_plain, 1)  # inspect reads a partialmethod before the code
    assert cached(counted) == cached.beam_lookup(counted) != (["element", "start"], [0])


def test_the_cache_keeps_no_function_alive():
    import gc
    import weakref

    _, cached = _lookups()
    function = eval("lambda element, side=None: element")  # noqa: S307  (a function only this test refers to)
    cached(function), cached(function)
    gone = weakref.ref(function)
    del function
    gc.collect()
    assert gone() is None


def test_a_dofn_with_a_timer_goes_with_its_class():
    """A timer's spec holds its callback, whose own timer parameter holds the spec: kept by the cache, that
    method, and the class its `super()` names, would stay for the process."""
    import gc
    import weakref

    from apache_beam.transforms import userstate
    from apache_beam.transforms.timeutil import TimeDomain

    _lookups()

    def looping_class():
        class Looping(beam.DoFn):
            TIMER = userstate.TimerSpec("again", TimeDomain.WATERMARK)
            LARGE = bytearray(1 << 20)

            def process(self, element, timer=beam.DoFn.TimerParam(TIMER)):
                timer.set(0)

            @userstate.on_timer(TIMER)
            def again(self, timer=beam.DoFn.TimerParam(TIMER)):
                super().setup()
                timer.set(0)

        return Looping

    kind = looping_class()
    assert userstate.is_stateful_dofn(kind()) and userstate.is_stateful_dofn(kind())
    gone = [weakref.ref(kind), weakref.ref(kind.__dict__["again"])]
    del kind
    gc.collect()
    assert [ref() for ref in gone] == [None, None]


def test_a_stateful_dofn_is_still_known_as_one_and_its_state_kept_per_key():
    from apache_beam.testing.util import assert_that, equal_to
    from apache_beam.transforms import userstate

    _lookups()
    assert userstate.is_stateful_dofn(_Counting()) and not userstate.is_stateful_dofn(beam.Map(len).fn)
    elements = [("cat", "a"), ("dog", "a"), ("cat", "b"), ("cat", "c"), ("dog", "b")]
    with beam.Pipeline() as pipeline:
        counts = pipeline | beam.Create(elements, reshuffle=False) | beam.ParDo(_Counting())
        assert_that(counts, equal_to([("cat", 1), ("cat", 2), ("cat", 3), ("dog", 1), ("dog", 2)]))


def test_beam_looks_a_function_up_once_and_only_on_the_release_the_cache_was_checked_on(monkeypatch):
    import apache_beam
    from apache_beam.transforms import core

    beam_lookup, cached = _lookups()
    beam_policy.fast_dofn_introspection()
    assert core.get_function_args_defaults is cached, "given again, it is not wrapped twice"
    asked = []

    def counting(f):
        asked.append(getattr(f, "__name__", f))
        return beam_lookup(f)

    monkeypatch.setattr(core, "get_function_args_defaults", counting)
    beam_policy.fast_dofn_introspection()
    given = core.get_function_args_defaults
    for f in (_plain, _plain, _Stamping().process, _Stamping().process, _Counting().process, _Counting().process, len,
              len):
        assert given(f) == beam_lookup(f)
    # a builtin, and a method with a state or timer parameter, are Beam's to look up every time
    assert asked == ["_plain", "process", "process", "process", "len", "len"]
    monkeypatch.setattr(core, "get_function_args_defaults", beam_lookup)
    monkeypatch.setattr(apache_beam, "__version__", "2.60.0")
    beam_policy.fast_dofn_introspection()
    assert core.get_function_args_defaults is beam_lookup


def test_dills_trace_sets_its_level_as_before_and_clears_no_logger_cache_when_the_level_stays():
    import logging

    from dill import _dill

    import ingest.spans  # noqa: F401  (importing it is what gives dill the quieter trace, in any process)

    trace = _dill._trace
    assert trace.dill_trace is not trace
    other = logging.getLogger("cats_vs_dogs.trace_probe")
    trace(False)
    for boolean, level, changed in ((True, logging.INFO, True), (True, logging.INFO, False),
                                    (False, logging.WARN, True), (False, logging.WARN, False)):
        other.isEnabledFor(logging.DEBUG)  # fills the logger's cache, which any setLevel in the process clears
        trace(boolean)
        assert _dill.log.level == level
        assert bool(other._cache) is not changed, "cleared exactly when the level changed"
    other.isEnabledFor(logging.DEBUG)
    trace.dill_trace(False)
    assert not other._cache, "dill's own clears every logger's cache each time"


def test_dills_trace_is_replaced_once_and_only_on_the_release_it_was_checked_on(monkeypatch):
    import dill
    from dill import _dill

    import ingest.spans  # noqa: F401

    quiet = _dill._trace
    beam_policy.fast_pickler_trace()
    assert _dill._trace is quiet, "given again, it is not wrapped twice"
    monkeypatch.setattr(_dill, "_trace", quiet.dill_trace)
    monkeypatch.setattr(dill, "__version__", "0.3.9")
    beam_policy.fast_pickler_trace()
    assert _dill._trace is quiet.dill_trace


class _Namespaced:
    """Something other than a module that a library put in sys.modules: objsize leaves its namespace out too."""

    def __init__(self, payload):
        self.payload = payload


def test_the_state_cache_weighs_each_value_as_beams_own_weighing_does(monkeypatch):
    import collections
    import json
    import types

    from apache_beam.runners.worker import statecache

    import ingest.spans  # noqa: F401  (importing it is what gives Beam the faster weighing, in any process)

    weigh = statecache.get_deep_size
    beams = weigh.beam_get_deep_size
    assert beams is not weigh
    record = collections.namedtuple("record", "sha256 image label")
    stranger = _Namespaced(b"s" * 5000)
    monkeypatch.setitem(sys.modules, "cats_vs_dogs_probe_stranger", stranger)
    monkeypatch.setitem(sys.modules, "cats_vs_dogs_probe_blocked", None)  # how an import is blocked
    values = [[b"x" * 12_000 for _ in range(6)], [record("ab" * 32, b"y" * 900, 1), ("k", {"a": [1, 2.5, None]})],
              [vars(json), b"z" * 100], [stranger, vars(stranger)], [], "text", 7]
    for value in values:
        assert weigh(value) == beams(value), value
    stranger.__dict__ = {"payload": b"t" * 9000}  # a namespace replaced: left out as it is now
    assert weigh([vars(stranger)]) == beams([vars(stranger)])
    # A module that arrives after the first weighing is left out of it, and measured once it is gone from sys.modules
    arrived = types.ModuleType("cats_vs_dogs_probe_arrived")
    arrived.payload = b"m" * 50_000
    monkeypatch.setitem(sys.modules, arrived.__name__, arrived)
    left_out = weigh([vars(arrived)])
    assert left_out == beams([vars(arrived)])
    del sys.modules[arrived.__name__]
    measured = weigh([vars(arrived)])
    assert measured == beams([vars(arrived)]) and measured > left_out + 50_000


def test_the_state_cache_weighing_is_replaced_once_and_only_on_the_releases_it_was_checked_on(monkeypatch):
    import apache_beam
    import objsize
    from apache_beam.runners.worker import statecache

    import ingest.spans  # noqa: F401

    faster = statecache.get_deep_size
    beam_policy.fast_state_cache_weights()
    assert statecache.get_deep_size is faster, "given again, it is not wrapped twice"
    for module, release in ((objsize, "0.8.0"), (apache_beam, "2.60.0")):
        with monkeypatch.context() as patch:
            patch.setattr(statecache, "get_deep_size", faster.beam_get_deep_size)
            patch.setattr(module, "__version__", release)
            beam_policy.fast_state_cache_weights()
            assert statecache.get_deep_size is faster.beam_get_deep_size
    assert statecache.get_deep_size is faster


def _module(name, size):
    import types

    module = types.ModuleType(name)
    module.payload = b"m" * size
    return module


def test_the_state_cache_weighs_as_beam_does_when_a_module_is_replaced_or_changes_class(monkeypatch):
    import types

    from apache_beam.runners.worker import statecache

    import ingest.spans  # noqa: F401

    weigh = statecache.get_deep_size
    beams = weigh.beam_get_deep_size
    first, second = _module("cats_vs_dogs_probe_key", 20_000), _module("cats_vs_dogs_probe_key", 30_000)
    monkeypatch.setitem(sys.modules, first.__name__, first)
    assert weigh([vars(first)]) == beams([vars(first)])
    sys.modules[first.__name__] = second  # the same key, the same count of modules: another object
    for value in ([vars(first)], [vars(second)]):
        assert weigh(value) == beams(value)
    assert weigh([vars(first)]) > 20_000, "no longer in sys.modules: measured"

    class Shadowed(types.ModuleType):
        """A module class of its own answering `__dict__` itself, given to a module already weighed as plain."""

        shadow = {"shadow": b"s" * 7_000}

        @property
        def __dict__(self):
            return Shadowed.shadow

    namespace = vars(second)
    second.__class__ = Shadowed
    for value in ([namespace], [Shadowed.shadow]):
        assert weigh(value) == beams(value)
    assert weigh([namespace]) > 30_000, "vars() of it is another dict now: its own is measured"
    Shadowed.shadow = {"other": b"o" * 3_000}
    assert weigh([Shadowed.shadow]) == beams([Shadowed.shadow])


def test_the_state_cache_weighs_with_objsizes_and_beams_settings_as_they_are_at_each_call(monkeypatch):
    import objsize
    from apache_beam.runners.worker import statecache

    import ingest.spans  # noqa: F401

    weigh = statecache.get_deep_size
    beams = weigh.beam_get_deep_size
    module = _module("cats_vs_dogs_probe_settings", 10_000)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    shared = [b"e" * 4_000]
    value = [vars(module), shared, b"v" * 2_000]
    assert weigh(value) == beams(value) < 10_000
    defaults = objsize.default_settings
    for changed in (defaults.replace(exclude_modules_globals=False), defaults.replace(exclude=[shared]),
                    defaults.replace(exclude=[module])):
        monkeypatch.setattr(objsize, "default_settings", changed)
        assert weigh(value) == beams(value)
    monkeypatch.setattr(objsize, "default_settings", defaults)
    monkeypatch.setattr(statecache, "_get_referents_func", lambda *objs: [])
    assert weigh(value) == beams(value)


class _Slow(beam.DoFn):
    def process(self, element):
        time.sleep(0.3)
        yield element


def test_a_bundle_ends_without_waiting_out_beams_sampling_period(monkeypatch):
    """Beam's state sampler sleeps up to 200 ms between samples and a bundle's end waits for it to wake; a bundle of
    1.2 s, its period ramped up to the full one by then, waited 0-200 ms before the change."""
    from apache_beam.runners.worker import statesampler

    import ingest.spans  # noqa: F401  (gives faster_beam)

    waits = []
    stop = statesampler.StateSampler.stop

    def timed_stop(self):
        started = time.perf_counter()
        stop(self)
        waits.append(time.perf_counter() - started)

    monkeypatch.setattr(statesampler.StateSampler, "stop", timed_stop)
    with beam.Pipeline(options=beam.options.pipeline_options.PipelineOptions(list(beam_policy.IN_PROCESS))) as p:
        _ = p | beam.Create([1, 2, 3, 4], reshuffle=False) | beam.ParDo(_Slow()) | beam.Map(lambda x: x)
    assert waits and max(waits) < 0.05, waits
    assert statesampler.StateSampler("check", None).sampling_period_ms == beam_policy.SAMPLER_PERIOD_MS


def test_the_sampling_period_is_changed_once_and_only_on_the_release_it_was_checked_on(monkeypatch):
    from apache_beam.runners.worker import statesampler

    init = statesampler.StateSampler.__init__
    beam_policy.short_bundle_ends()
    assert init.__defaults__ == (beam_policy.SAMPLER_PERIOD_MS,), "given again, nothing changes"
    monkeypatch.setattr(init, "__defaults__", (statesampler.DEFAULT_SAMPLING_PERIOD_MS,))
    monkeypatch.setattr(beam, "__version__", "2.60.0")
    beam_policy.short_bundle_ends()
    assert init.__defaults__ == (statesampler.DEFAULT_SAMPLING_PERIOD_MS,)


class _SamplingPeriod(beam.DoFn):
    def process(self, element):
        from apache_beam.runners.worker import statesampler

        yield statesampler.get_current_tracker().sampling_period_ms


def test_a_worker_process_samples_at_the_short_period_from_its_first_bundle(tmp_path):
    """A worker builds a stage's sampler before it unpickles the stage's code, so only the plugin it imports as it
    starts can change the period there (this module, which the DoFn brings, does not)."""
    args = beam_policy.direct_runner_args(2, None, 0)
    assert beam_policy.WORKER_PLUGIN in args
    with beam.Pipeline(options=beam.options.pipeline_options.PipelineOptions(args)) as p:
        _ = (p | beam.Create(range(8)) | beam.ParDo(_SamplingPeriod())
             | beam.io.WriteToText(str(tmp_path / "periods")))
    periods = {int(line) for path in tmp_path.glob("periods*") for line in path.read_text().split()}
    assert periods == {beam_policy.SAMPLER_PERIOD_MS}
