"""Beam's pickles compressed once: the same bytes for the same pickle, without compressing it again.

Given in the processes that run Beam pipelines (config.beam_policy.faster_beam), and only on the Beam release it
was checked on (config.beam_policy.BEAM_CHECKED_ON, which tests/config/test_beam_pickles.py checks it against);
elsewhere Beam keeps its own code.
"""

from __future__ import annotations

import threading

# How many bytes of pickles and their compressed forms are kept before the memo starts again: a small run pickles
# about 2.5 MB, a large one the same code with more elements.
KEPT_BYTES = 64 << 20
_ENTRY_OVERHEAD = 256  # bytes Python spends on an entry beyond its two byte strings: objects, key tuple, dict slots


class _RepeatedCompression:
    """bz2 as Beam's picklers call it (`compress(data, compresslevel=9)`, `decompress(data)`), each answer computed
    once for the same bytes.

    Beam pickles the same function several times while it builds, translates and runs a pipeline (each ParDo when it
    is made, again for the pipeline's description, again with its windowing for the bundle that runs it) and
    compresses each pickle with bz2 at level 9, 0.1-0.3 ms a pickle: a small run made about 2,700 pickles, under 600
    of them different (docs/performance.md, "Beam's pickles compressed once"). bz2's output is a function of its
    input and level, so a pickle seen before gets the bytes it got then, and a compressed pickle made or read in this
    process is read back without decompressing it again. The answers are immutable bytes, shared by every caller as
    any equal bytes object would be."""

    def __init__(self, module):
        self._module = module
        self._lock = threading.RLock()
        self._compressed: dict = {}
        self._decompressed: dict = {}
        self._kept = 0

    def _keep(self, data: bytes, compressed: bytes, level: int | None) -> None:
        """`compressed` decompresses to `data`, and is what `level` makes of it where that is known. A pair larger
        than a quarter of KEPT_BYTES is not kept: the memo never holds more than KEPT_BYTES (each entry counted with
        what Python spends on it), and never holds on to a large pickle Beam has let go of."""
        size = len(data) + len(compressed) + _ENTRY_OVERHEAD
        if size > KEPT_BYTES // 4:
            return
        with self._lock:  # reentrant: a signal handler or a finalizer run in here may pickle through Beam too
            if self._kept + size > KEPT_BYTES:
                self._compressed, self._decompressed, self._kept = {}, {}, 0
            if level is not None:
                self._compressed[(level, data)] = compressed
            self._decompressed[compressed] = data
            self._kept += size

    def compress(self, data, compresslevel=9):
        # plain bytes only: a subclass, a bytearray or a view may hash, compare or change as it likes
        if type(data) is not bytes or type(compresslevel) is not int:  # noqa: E721
            return self._module.compress(data, compresslevel)
        result = self._compressed.get((compresslevel, data))
        if result is None:
            result = self._module.compress(data, compresslevel)
            self._keep(data, result, compresslevel)
        return result

    def decompress(self, data):
        if type(data) is not bytes:  # noqa: E721
            return self._module.decompress(data)
        result = self._decompressed.get(data)
        if result is None:
            result = self._module.decompress(data)
            self._keep(result, data, None)
        return result

    def __getattr__(self, name):  # anything else the module has, as the module has it
        if name.startswith("_"):  # this object's own, not yet set (a copy being made): not the module's
            raise AttributeError(name)
        return getattr(self._module, name)


def compress_once(checked_on: str) -> None:
    """Beam's picklers (dill's and cloudpickle's) compress through one `_RepeatedCompression`, on Beam release
    `checked_on` only."""
    import bz2

    import apache_beam
    from apache_beam.internal import cloudpickle_pickler, dill_pickler

    if apache_beam.__version__ != checked_on or isinstance(dill_pickler.bz2, _RepeatedCompression):
        return
    shared = _RepeatedCompression(bz2)
    for module in (dill_pickler, cloudpickle_pickler):
        if module.bz2 is bz2:
            module.bz2 = shared
