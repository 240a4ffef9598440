"""The ingest benchmark's rounds and ratios, and the arguments it refuses before a run of minutes (nothing is timed
or run here: the figures are the benchmark's business)."""

import pytest

from benchmarks import ingest_throughput


def test_the_measurements_take_turns_round_by_round_none_always_first():
    calls = []
    seconds = ingest_throughput.rounds({"loop": lambda: calls.append("loop"), "ingest": lambda: calls.append("ingest")},
                                       repeats=3)
    assert calls == ["loop", "ingest", "ingest", "loop", "loop", "ingest"]
    assert [len(times) for times in seconds.values()] == [3, 3] and all(t >= 0 for t in sum(seconds.values(), []))


def test_each_round_s_ingest_is_compared_per_core_with_that_round_s_reference():
    seconds = {"loop": [2.0, 4.0, 3.0], "one": [1.0, 4.0, 6.0], "two": [4.0, 2.0, 3.0]}
    # the loop's 2 s against ingest's 1 s on 2 cores: twice the loop's rate, once per core
    assert ingest_throughput.per_core_by_round(seconds, "loop", cores=2) == {"one": [1.0, 0.5, 0.25],
                                                                              "two": [0.25, 1.0, 0.5]}


@pytest.mark.parametrize("argv, said", [
    (["--repeats", "0"], "--repeats: must be an integer >= 1, got 0"),
    (["--images", "1"], "--images: must be an integer >= 2, got 1"),
    (["--json", "{file}/figures.json"], "--json: {file}/figures.json cannot be written: its folder cannot be made"),
    (["--json", "{folder}"], "--json: {folder} cannot be written: it is a folder"),
    (["--sides", "500", "200"], "--sides: MIN 500 and MAX 200 must be 1 <= MIN <= MAX"),
])
def test_arguments_that_cannot_give_figures_are_refused_before_any_work(argv, said, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    paths = {"file": tmp_path / "a-file", "folder": tmp_path}
    with pytest.raises(SystemExit) as exit_:
        ingest_throughput.main([argument.format(**paths) for argument in argv])
    assert exit_.value.code == 2 and said.format(**paths) in capsys.readouterr().err
