"""The one Beam policy: how Beam's DirectRunner runs ingest and the TFX components.

In process, or in worker processes. Workers cost their start (each imports
TensorFlow) and moving every element between processes, so they pay off only
with enough work and cores: the thresholds below come from the measurements in
the README's Performance section. `--beam-workers N` overrules the policy:
1 runs in process, N > 1 in N worker processes. Other runners (Dataflow) are
Beam arguments of their own: `compile --beam-arg`.
"""

from __future__ import annotations

import collections
import copy
import operator
import os
import types
import weakref

from config import beam_pickles

IN_PROCESS = ("--direct_running_mode=in_memory",)
# Arguments that restate Beam's own defaults (the DirectRunner, in this process). Given any Beam argument at all,
# TFX's Beam components package TFX as a source distribution for remote workers, a copy of its tree and a
# `setup.py sdist`, in every Beam component of every run, for a file a DirectRunner never reads (its cost:
# docs/performance.md).
BEAM_DEFAULTS = frozenset({*IN_PROCESS, "--direct_num_workers=1"})

# Ingest decodes, checks and hashes every image and moves its bytes between workers for the duplicate check: on
# few cores that traffic costs more than the second worker gains (docs/performance.md, "Ingest on 2 cores").
INGEST_MIN_ITEMS = 3000
INGEST_MIN_CORES = 4
# The data components (ImportExampleGen, StatisticsGen) gain from workers from about this many examples; the
# Evaluator never does (its model already uses every core), and it gets the same arguments.
COMPONENTS_MIN_EXAMPLES = 50_000


MULTI_PROCESS = "--direct_running_mode=multi_processing"


# Imported by each Beam worker process as it starts, before its first bundle: faster_beam there too.
WORKER_PLUGIN = "--beam_plugin=config.beam_worker"


def _worker_processes(workers: int) -> list[str]:
    # 0: Beam counts the cores of the machine that runs the component, at run time.
    return [MULTI_PROCESS, f"--direct_num_workers={workers}", WORKER_PLUGIN]


def direct_runner_args(workers: int, work: int | None, min_work: int, min_cores: int = 1) -> list[str]:
    """DirectRunner arguments for `work` items (None: not known before the run, e.g. on Kubeflow).

    workers: 1 in process; N > 1 N worker processes; 0 decides: in process when
    the work is known and below `min_work` or the machine has fewer than
    `min_cores` cores, else one worker process per core.
    """
    if workers == 1:
        return list(IN_PROCESS)
    if workers > 1:
        return _worker_processes(workers)
    if work is not None and (work < min_work or (os.cpu_count() or 1) < min_cores):
        return list(IN_PROCESS)
    return _worker_processes(0)


def ingest_args(workers: int, items: int) -> list[str]:
    """For ingesting `items` files or records."""
    return direct_runner_args(workers, items, INGEST_MIN_ITEMS, INGEST_MIN_CORES)


def component_args(workers: int = 0, examples: int | None = None) -> list[str]:
    """For the TFX components of a run that reads `examples` examples."""
    return direct_runner_args(workers, examples, COMPONENTS_MIN_EXAMPLES)


def tfx_args(args: list[str]) -> list[str]:
    """The Beam arguments to hand TFX's components: `args` less those that only restate Beam's defaults."""
    return [arg for arg in args if arg not in BEAM_DEFAULTS]


def fast_tfrecord_checksums() -> None:
    """Beam's TFRecord sink and source checksum every record (CRC-32C) with python-snappy when it is installed, else
    with crcmod: 23 us for a 12 KB image, about 4% of an ingest. google-crc32c, which Google Cloud Storage's client
    brings along, computes the same checksum in 0.5 us. Given to Beam in each process that imports ingest.spans
    (Beam's workers import it to run ingest's steps) or runs the pipeline; a no-op where Beam already has a function
    or google-crc32c has no compiled code."""
    try:
        import google_crc32c
        from apache_beam.io import tfrecordio
    except ImportError:
        return
    if google_crc32c.implementation == "c" and not getattr(tfrecordio._default_crc32c_fn, "fn", None):
        tfrecordio._default_crc32c_fn.fn = google_crc32c.value


# The Beam release each change below was checked against (tests/config/test_beam_policy.py compares the parameter
# cache's answers, the option views and the state cache's weights with Beam's own): on any other, Beam keeps its own
# code until the change is checked there.
BEAM_CHECKED_ON = "2.59.0"
_WRAPPED_DEPTH = 8  # functools.wraps chains followed; a deeper one is looked up by Beam every time
_UNWRAPPED = object()  # no `__wrapped__` at all (None is one, which inspect follows)


def _identity(function) -> tuple | None:
    """What `inspect.signature` reads of a plain function, and of each function it wraps (`__wrapped__`): its code,
    its defaults, a `__signature__`. None for anything else (a builtin, a partial, a callable object, a
    partialmethod's function, a `__wrapped__` that is no function): Beam's to look up every time."""
    parts = []  # flat: three per function, so that comparing two answers is one pass of operator.is_
    for _ in range(_WRAPPED_DEPTH):
        if not isinstance(function, types.FunctionType) or hasattr(function, "_partialmethod"):
            return None
        parts += (function.__code__, function.__defaults__, getattr(function, "__signature__", None))
        function = getattr(function, "__wrapped__", _UNWRAPPED)
        if function is _UNWRAPPED:
            return tuple(parts)
    return None


def _same(kept: tuple, now: tuple) -> bool:
    """Whether two `_identity` answers hold the same objects (by identity: a default's own == may be anything)."""
    return len(kept) == len(now) and all(map(operator.is_, kept, now))


def fast_dofn_introspection() -> None:
    """Beam asks for the parameters of every method of every DoFn each time it checks whether a DoFn keeps state or
    timers (`apache_beam.transforms.userstate.get_dofn_specs`: building the pipeline, translating it, and again for
    each bundle's processor), one `inspect.signature` at a time: thousands of lookups for a pipeline of a few
    stages, about a tenth of a small run's CPU (docs/performance.md). A function's parameters are what its code and
    defaults say, so Beam's answer is kept per function (weakly: a pipeline's lambdas go with it), the same for its
    bound methods, and given again only while the function's code, defaults and wrapped functions are the same
    objects. Anything else is Beam's own lookup. Given in each process that imports ingest.spans, as the
    checksums are; on a Beam release other than BEAM_CHECKED_ON, nothing changes."""
    import apache_beam
    from apache_beam.transforms import core

    lookup = core.get_function_args_defaults
    if apache_beam.__version__ != BEAM_CHECKED_ON or getattr(lookup, "beam_lookup", None):
        return
    kept = {False: weakref.WeakKeyDictionary(), True: weakref.WeakKeyDictionary()}  # by whether bound

    def cached(f):
        bound = isinstance(f, types.MethodType)
        function = f.__func__ if bound else f
        identity = _identity(function)
        if identity is None:
            return lookup(f)
        known = kept[bound].get(function)
        if known is not None and _same(known[0], identity):
            names, defaults = known[1]
            return list(names), list(defaults)  # Beam's callers get lists of their own, as from the lookup itself
        names, defaults = lookup(f)
        # A state or timer parameter's spec holds its callback (a timer's own method): kept here, such a function's
        # answer would keep it, and its class, alive. Stateful DoFns are few; Beam looks theirs up every time.
        if not any(isinstance(d, (core._StateDoFnParam, core._TimerDoFnParam)) for d in defaults):
            kept[bound][function] = (identity, (names, defaults))
        return list(names), list(defaults)

    cached.beam_lookup = lookup
    core.get_function_args_defaults = cached


def _parsed_options(cls, flags: tuple, parsers: tuple, parse):
    """The flags as `cls`'s parser reads them: kept per class, flags and option definitions (a few hundred at most)."""
    key = (cls, flags, parsers)
    parsed = _PARSED.get(key)
    if parsed is None:
        if len(_PARSED) >= _PARSED_KEPT:
            _PARSED.clear()
        parsed = _PARSED[key] = parse()
    return parsed


_PARSED: dict = {}
_PARSED_KEPT = 512
_IMMUTABLE = (str, int, float, bool, type(None), frozenset, tuple)


def fast_option_views() -> None:
    """Beam asks for a view of the pipeline's options (`PipelineOptions.view_as`) twice for every transform it applies,
    to read whether to check types, and each view builds an argument parser and parses the flags again: about 0.7 ms
    a view on a 2-core machine, some thousands a run of StatisticsGen and the Evaluator, about 5% of a small run's
    CPU (docs/performance.md). What the parser makes of the flags depends only on the view's class, its options'
    definitions and the flags, so that is kept; each view is still a new object, made as Beam makes it (its flags,
    its parsed options, the values every view of the options shares). Only for classes that take Beam's own
    constructor and flags given as strings (None means sys.argv, read each time); anything else is Beam's view.
    Given where the parameter cache is; on a Beam release other than BEAM_CHECKED_ON, nothing changes."""
    import argparse
    import logging

    import apache_beam
    from apache_beam.options import pipeline_options

    options_class = pipeline_options.PipelineOptions
    make_view = options_class.view_as
    if apache_beam.__version__ != BEAM_CHECKED_ON or getattr(make_view, "beam_view_as", None):
        return

    def view_as(self, cls):
        flags = self.__dict__.get("_flags")
        values = self.__dict__.get("_all_options")
        if (not isinstance(flags, (list, tuple)) or not all(isinstance(flag, str) for flag in flags)
                or not isinstance(values, dict) or not isinstance(cls, type) or not issubclass(cls, options_class)
                or cls.__init__ is not options_class.__init__ or cls.__new__ is not object.__new__):
            return make_view(self, cls)
        # the option definitions as they are now: a class whose _add_argparse_args changes is parsed again
        parsers = tuple(getattr(definition, "__func__", definition) for definition in
                        (klass.__dict__.get("_add_argparse_args") for klass in cls.__mro__[:-1]) if definition)
        parsed = _parsed_options(cls, tuple(flags), parsers, lambda: cls(list(flags))._visible_options)
        logging.basicConfig()  # as Beam's constructor does for each view
        view = object.__new__(cls)
        view._flags = flags
        # Each view's own lists and dicts, as from a parser of its own: Beam appends to them (experiments)
        view._visible_options = argparse.Namespace(**{name: value if isinstance(value, _IMMUTABLE) else
                                                      copy.deepcopy(value) for name, value in vars(parsed).items()})
        view._all_options = values
        for name in view._visible_option_list():
            if name not in values:
                values[name] = getattr(view._visible_options, name)
        return view

    view_as.beam_view_as = make_view
    options_class.view_as = view_as


# The dill release whose `_trace` the function below replaces (the one Beam 2.59.0 pins; checked by
# tests/config/test_beam_policy.py).
DILL_TRACE_CHECKED_ON = "0.3.1.1"


def fast_pickler_trace() -> None:
    """Beam turns dill's tracing off after every pickling of a function or a coder (`dill._dill._trace(False)`,
    thousands a run), and dill does it by setting its logger's level each time, which makes Python clear the cached
    levels of every logger in the process (some hundreds with TensorFlow and TFX): about 30 us a call, 2-4% of a small
    run's CPU (docs/performance.md). The level is set only when it changes; where it does not, nothing is cleared
    and nothing else differs. Given where the parameter cache is; on a dill release other than
    DILL_TRACE_CHECKED_ON, nothing changes."""
    import logging

    try:
        import dill
        from dill import _dill
    except ImportError:
        return
    trace = _dill._trace
    if dill.__version__ != DILL_TRACE_CHECKED_ON or getattr(trace, "dill_trace", None):
        return
    log = _dill.log

    def level_set_once(boolean):
        level = logging.INFO if boolean else logging.WARN
        if log.level != level:
            log.setLevel(level)

    level_set_once.dill_trace = trace
    _dill._trace = level_set_once


# The objsize release whose traversal the function below gives Beam's state cache (the one Beam 2.59.0 installs with;
# tests/config/test_beam_policy.py compares its weights with Beam's own).
OBJSIZE_CHECKED_ON = "0.7.1"


def fast_state_cache_weights() -> None:
    """Beam's in-process worker caches state (a GroupByKey's values as a DoFn reads them) and weighs each value it
    caches with objsize, which first collects the namespace of every entry of sys.modules, to leave them out of the
    measure: 2-6 ms a value once TensorFlow and TFX are loaded (5,500-8,400 modules), 24 values in an ingest and
    99 in a tiny run (docs/performance.md). Here the namespaces of plain modules are
    collected again only when sys.modules holds other objects or one of another class (a plain module's namespace
    is its own for its life; the modules are held, so an id stays theirs), and those of anything else every time,
    as objsize does: the same objects left out and the same measured, so the same weight. Given where the
    parameter cache is; on a Beam or objsize release other than the ones checked, nothing changes."""
    import sys

    import apache_beam

    try:
        import objsize
        from apache_beam.runners.worker import statecache
    except ImportError:
        return
    weigh = statecache.get_deep_size
    if (apache_beam.__version__ != BEAM_CHECKED_ON or objsize.__version__ != OBJSIZE_CHECKED_ON
            or getattr(weigh, "beam_get_deep_size", None)):
        return
    # (the entries, their classes, ids of the plain modules' namespaces, the other entries): one tuple, replaced
    # whole, so that a thread reads one state of it. Holding the entries keeps their ids theirs. A module's class can
    # change (`module.__class__ = ...`, how a module gets properties), and a class of its own may answer `__dict__`.
    known = [((), (), frozenset(), ())]

    def namespaces() -> tuple[frozenset, list]:
        entries = list(sys.modules.values())
        state = known[0]
        if not (len(entries) == len(state[0]) and all(map(operator.is_, entries, state[0]))
                and all(map(operator.is_, map(type, entries), state[1]))):
            plain = [entry for entry in entries if type(entry) is types.ModuleType]
            state = known[0] = (entries, list(map(type, entries)), frozenset(id(vars(module)) for module in plain),
                                [entry for entry in entries if type(entry) is not types.ModuleType])
        others = []
        for entry in state[3]:  # an object's __dict__ can be replaced: read each time
            try:
                others.append(id(vars(entry)))
            except TypeError:  # no namespace (None, which blocks an import): objsize skips it too
                pass
        return state[2], others

    def get_deep_size(*objs):
        # What objsize.get_deep_size makes of Beam's arguments and its default settings, both read at each call as
        # they are there; the exclusions in objsize's order: None, the namespaces, then what the settings exclude.
        # The plain modules' namespaces are left out by the filter, which objsize asks after its excluded set: the
        # same objects neither measured nor followed, without copying thousands of ids into that set each time.
        defaults, beams_filter = objsize.default_settings, statecache._filter_func
        filter_func = beams_filter
        context_excludes: list = []
        if defaults.exclude_modules_globals:
            plain, context_excludes = namespaces()

            def filter_func(obj):
                return id(obj) not in plain and beams_filter(obj)

        settings = objsize.traverse.ObjSizeSettings(statecache._get_referents_func, filter_func,
                                                    statecache._size_func, None, False)
        context = settings.new_context()
        context.exclude_set.update(context_excludes)
        if defaults.exclude is not None:
            collections.deque(context.traverse_bfs(*defaults.exclude, exclude=True), maxlen=0)
        return context.get_deep_size(*objs)

    get_deep_size.beam_get_deep_size = weigh
    statecache.get_deep_size = get_deep_size


# The longest a bundle's end waits for Beam's state sampler (below).
SAMPLER_PERIOD_MS = 10


def short_bundle_ends() -> None:
    """Beam's state sampler, a thread per bundle that samples which step is running, sleeps its period between samples
    (ramping up to 200 ms), and each bundle's end joins it: a bundle that ran a second or more waits 100 ms on average
    with nothing to do. A period of SAMPLER_PERIOD_MS bounds that wait; the thread then wakes 100 times a second,
    taking a lock and the time, without the GIL. On a Beam release other than BEAM_CHECKED_ON, nothing changes."""
    import apache_beam
    from apache_beam.runners.worker import statesampler

    init = statesampler.StateSampler.__init__
    if (apache_beam.__version__ == BEAM_CHECKED_ON
            and init.__defaults__ == (statesampler.DEFAULT_SAMPLING_PERIOD_MS,)):
        init.__defaults__ = (SAMPLER_PERIOD_MS,)


def faster_beam() -> None:
    """Each of the above, in a process that runs Beam pipelines (given wherever ingest.spans is imported: `run`,
    `ingest`, the Kubeflow tasks, the tests' workers; and in Beam's worker processes as they start, WORKER_PLUGIN, since
    a worker builds a stage's state sampler before it unpickles the stage's code); each changes nothing where the
    release it was checked on is not installed, and nothing given twice. With them, config.beam_pickles'
    compression."""
    fast_tfrecord_checksums()
    fast_dofn_introspection()
    fast_option_views()
    fast_pickler_trace()
    fast_state_cache_weights()
    short_bundle_ends()
    beam_pickles.compress_once(BEAM_CHECKED_ON)
