import base64
import bz2
import os

import ingest.spans  # noqa: F401  (importing it gives Beam's speed-ups, as in any process that runs pipelines)
from config import beam_pickles, beam_policy


class _Counting:
    """bz2's two functions, counted."""

    def __init__(self):
        self.calls = []

    def compress(self, data, compresslevel=9):
        self.calls.append("compress")
        return bz2.compress(data, compresslevel)

    def decompress(self, data):
        self.calls.append("decompress")
        return bz2.decompress(data)


def test_a_pickle_is_compressed_once_into_bz2s_own_bytes_and_read_back_without_decompressing():
    counted = _Counting()
    memo = beam_pickles._RepeatedCompression(counted)
    pickle, other = os.urandom(3000) * 3, b"another pickle" * 100
    first = memo.compress(pickle)
    assert first == bz2.compress(pickle, 9) and memo.compress(pickle) is first
    assert memo.compress(pickle, compresslevel=1) == bz2.compress(pickle, 1), "each level its own answer"
    assert memo.decompress(first) == pickle and memo.decompress(bytes(first)) == pickle
    assert counted.calls == ["compress", "compress"], "made here: never decompressed"
    read = bz2.compress(other)  # as another process wrote it
    assert memo.decompress(read) == other and memo.decompress(read) == other
    assert counted.calls == ["compress", "compress", "decompress"]
    assert memo.compress(other) == read and counted.calls[-1] == "compress", "a level read back is not known"
    # what is not plain bytes (a subclass may hash and compare as it likes) is bz2's every time
    assert memo.compress(bytearray(pickle)) == first and memo.decompress(memoryview(first)) == pickle
    assert counted.calls[-2:] == ["compress", "decompress"]
    assert beam_pickles._RepeatedCompression(bz2).BZ2Compressor is bz2.BZ2Compressor, "the rest is the module's"


def test_the_memo_starts_again_past_its_size_holds_no_large_pickle_and_answers_the_same(monkeypatch):
    monkeypatch.setattr(beam_pickles, "KEPT_BYTES", 40_000)
    counted = _Counting()
    memo = beam_pickles._RepeatedCompression(counted)
    pickles = [os.urandom(3000) for _ in range(8)]  # about 6.4 KB an entry, compressed form and overhead counted
    for _ in range(2):
        assert [memo.decompress(memo.compress(p)) for p in pickles] == pickles
        assert memo._kept <= 40_000
    assert counted.calls.count("compress") > len(pickles), "forgotten, so compressed again"
    assert counted.calls.count("decompress") == 0
    large = os.urandom(12_000)  # with its compressed form, over a quarter of what the memo keeps
    kept = memo._kept
    assert memo.decompress(memo.compress(large)) == large and memo._kept == kept, "answered, never held"
    assert counted.calls[-2:] == ["compress", "decompress"]


def test_a_compression_run_inside_another_on_the_same_thread_does_not_wait_for_itself():
    """A signal handler or a finalizer that runs while the memo keeps an entry, and pickles through Beam."""
    import copy
    import threading

    memo = beam_pickles._RepeatedCompression(bz2)
    answers = []

    def nested():
        with memo._lock:  # as `_keep` holds it when the handler runs
            answers.append(memo.compress(b"inner"))

    runner = threading.Thread(target=nested, daemon=True)
    runner.start()
    runner.join(timeout=10)
    assert not runner.is_alive() and answers == [bz2.compress(b"inner")]
    copied = copy.copy(beam_pickles._RepeatedCompression(bz2))  # was a RecursionError: its own names asked of bz2
    assert copied.compress(b"copied") == bz2.compress(b"copied")


def test_beams_picklers_write_and_read_what_they_did_before():
    from apache_beam.internal import cloudpickle_pickler, dill_pickler, pickler

    assert isinstance(dill_pickler.bz2, beam_pickles._RepeatedCompression)
    assert isinstance(cloudpickle_pickler.bz2, beam_pickles._RepeatedCompression)
    value = {"fn": lambda number: number % 2 == 0, "numbers": list(range(100))}
    encoded = pickler.dumps(value)
    assert bz2.decompress(base64.b64decode(encoded)) == dill_pickler.dill.dumps(
        value, byref=dill_pickler.settings["dill_byref"]), "Beam's format: bz2 of dill's pickle, in base64"
    assert pickler.dumps(value) == encoded
    again = pickler.loads(encoded)
    assert again["numbers"] == value["numbers"] and again["fn"](4) and not again["fn"](3) and again is not value
    zlibbed = pickler.loads(pickler.dumps(value, use_zlib=True), use_zlib=True)
    assert zlibbed["numbers"] == value["numbers"] and zlibbed["fn"](2)


def test_the_compression_is_given_once_and_only_on_the_release_it_was_checked_on(monkeypatch):
    import apache_beam
    from apache_beam.internal import cloudpickle_pickler, dill_pickler

    given = dill_pickler.bz2
    beam_pickles.compress_once(beam_policy.BEAM_CHECKED_ON)
    assert dill_pickler.bz2 is given and cloudpickle_pickler.bz2 is given, "given again, nothing wraps it twice"
    for module in (dill_pickler, cloudpickle_pickler):
        monkeypatch.setattr(module, "bz2", bz2)
    monkeypatch.setattr(apache_beam, "__version__", "2.60.0")
    beam_pickles.compress_once(beam_policy.BEAM_CHECKED_ON)
    assert dill_pickler.bz2 is bz2 and cloudpickle_pickler.bz2 is bz2
