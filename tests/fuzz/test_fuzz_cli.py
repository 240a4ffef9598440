"""The command line's flag parsing, over random argument lists built from its own flags and hostile values:
every list is parsed (and its settings validated) or refused in one line, by argparse (exit 2) or by the
settings' own checks (ConfigError, SettingsError); nothing else escapes. Parsing only: no command runs."""

import contextlib
import io
from unittest import mock

from hypothesis import event, given, settings
from hypothesis import strategies as st

import pipeline_runner
from cli import flags, local_run
from config import ConfigError
from contract.errors import CommandError
from tests.fuzz.conftest import examples
from trainer import weights_files

PARSER = pipeline_runner.build_parser()
SUBPARSERS = next(a for a in PARSER._actions if a.dest == "command").choices
# {command: [(flag, whether it takes a value)]}
FLAGS = {name: sorted((flag, action.nargs != 0) for action in sub._actions for flag in action.option_strings
                      if flag.startswith("--") and flag != "--help")
         for name, sub in SUBPARSERS.items()}
# What each command needs to parse at all, so that the random flags after it reach the settings' own checks.
REQUIRED = {"run": ["--demo"], "ingest": ["--demo"], "rollback": ["--to", "1"], "predict": ["photo.jpg"],
            "compile": ["--image", "registry.example/c:1", "--root", "/mnt/pipeline/cats"],
            "submit": ["--local", "--package", "p.yaml"], "schedule": ["--local", "--cron", "0 3 * * *"],
            "base-weights": ["--out", "w.h5"], "traffic-sink": ["--root", "/tmp/root", "--port", "8080"]}
VALUES = st.one_of(
    st.integers(-10, 10**6).map(str), st.floats(allow_nan=True).map(str),
    st.sampled_from(["0", "-1", "1", "3", "1e9", "nan", "inf", "-0", "0.5", "1" * 40, "", " ", "none", "imagenet",
                     "0 3 * * *", "* * * * * *", "gs://bucket/x", "/nonexistent/w.h5", "a\nb", "../..", "--", "-",
                     "\x00", "grpc://", "sqlite:///", "x.txt", "☃", "%s%n", "$(touch /tmp/x)"]),
    st.text(max_size=12))


@st.composite
def argument_lists(draw):
    command = draw(st.sampled_from(sorted(SUBPARSERS)))
    argv = [command, *(REQUIRED.get(command, []) if draw(st.integers(0, 4)) else [])]
    for _ in range(draw(st.integers(0, 6))):
        flag, takes_value = draw(st.sampled_from(FLAGS[command]))
        argv.append(flag)
        if takes_value == bool(draw(st.integers(0, 9))):  # one time in ten, a value missing or one too many
            argv.append(draw(VALUES))
    return argv


@settings(max_examples=examples(600))
@given(argument_lists())
def test_any_argument_list_is_parsed_or_refused_in_one_line(argv):
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        try:
            args = PARSER.parse_args(argv)
        except SystemExit as refused:
            assert refused.code == 2, refused.code
            event(f"argparse exit {refused.code}")
            return
    assert "Traceback" not in errors.getvalue()
    try:
        if args.command == "traffic-sink":
            from traffic.settings import SinkSettings

            flags.settings(args, SinkSettings)
        if args.command in ("run", "ingest", "compile"):
            config, _ = flags.config_from_args(args)
            if args.command == "run":
                with mock.patch.object(weights_files, "fetch_imagenet_file"):  # parsing only: never a download
                    local_run.check_local_files(config)
        if args.command == "compile" and getattr(args, "target", "kubeflow") == "kubeflow":
            _deployment(args)  # the package's own settings: --lease-timeout-minutes of 400 digits was a traceback
    except (ConfigError, CommandError) as refused:
        assert "\n" not in str(refused).strip(), str(refused)
        event(f"refused by {type(refused).__name__}")
        return
    event("parsed")


def _deployment(args):
    """The Kubeflow deployment settings `compile` builds from its flags (cli/targets/kubeflow.py)."""
    from orchestration.engines import kubeflow
    from orchestration.serving import kserve

    serving = kserve.Serving(**flags.settings_from(args, kserve.Serving, prefix="serving_"))
    given = flags.given_store(args)  # compile's dispatcher refuses a store of the wrong kind before this
    return kubeflow.Deployment(
        image=args.image, root=args.root, data_dir=args.data_dir, source_kind=args.source_kind,
        metadata_store=given[1] if given else kubeflow.DEFAULT_METADATA_STORE, beam_args=tuple(args.beam_args or ()),
        kfp_pipeline_root=args.pipeline_root, serving=serving if args.serving_rollout else None,
        **flags.settings_from(args, kubeflow.Deployment))


# monitor's time and count flags with values of every size and shape: durations of any length and unit, times of
# any year, offset and precision, and the words around them.
DURATIONS = st.builds(lambda n, unit, pad: f"{pad}{n}{unit}{pad}", st.integers(0, 10 ** 30),
                      st.sampled_from(["s", "m", "h", "d", "", "w", "D", "ms"]), st.sampled_from(["", " ", "\t"]))
TIMES = st.builds(lambda year, rest, zone: f"{year:04d}{rest}{zone}", st.integers(0, 99999),
                  st.sampled_from(["-01-01T00:00:00", "-11-24T08:00:00.123456", "-02-30T00:00:00", "-12-31",
                                   "-13-01T00:00:00", "-11-24 08:00", ""]),
                  st.sampled_from(["Z", "+01:00", "-23:59", "+24:00", "", "+00:00:00.5", "UTC"]))
COUNTS = st.one_of(st.integers(-5, 10 ** 25).map(str), st.sampled_from(["nan", "inf", "1e3", "", "0x10", "٣"]))


# each of the other flags left out, given a value it takes, or given any value: --since is reached often
OPTIONAL = {"--window": COUNTS, "--min-window": COUNTS, "--sample": COUNTS,
            "--false-alarm-rate": st.one_of(st.floats(allow_nan=True).map(str), VALUES)}
TAKEN = {"--window": st.integers(1, 10 ** 6).map(str), "--min-window": st.integers(2, 10 ** 6).map(str),
         "--sample": st.integers(200, 10 ** 6).map(str),
         "--false-alarm-rate": st.floats(0.0061, 0.999).map(str)}


@st.composite
def monitor_flags(draw):
    argv = []
    for flag, values in OPTIONAL.items():
        choice = draw(st.integers(0, 5))
        if choice:
            argv += [flag, draw(TAKEN[flag] if choice < 5 else values)]
    return argv


@settings(max_examples=examples(300))
@given(since=st.one_of(DURATIONS, TIMES, VALUES), others=monitor_flags())
def test_monitors_flags_of_any_value_are_taken_within_range_or_refused_in_one_line(since, others):
    from cli import monitor
    from contract.traffic import EARLIEST_TIME_MS, time_text

    argv = ["monitor", "--output-dir", "/tmp/root", "--since", since, *others]
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        try:
            args = PARSER.parse_args(argv)
        except SystemExit as refused:
            assert refused.code == 2 and "Traceback" not in errors.getvalue(), errors.getvalue()
            said = [line for line in errors.getvalue().splitlines() if line.startswith("pipeline_runner.py")]
            assert len(said) == 1, errors.getvalue()
            event("refused by argparse")
            return
    assert args.since >= EARLIEST_TIME_MS and time_text(args.since)  # a time the report can show
    assert args.window >= 1 and args.min_window >= 2 and 0.006 < args.false_alarm_rate < 1
    assert monitor.since_ms(since) >= EARLIEST_TIME_MS
    event("parsed")


def test_every_commands_help_is_shown():
    """Found by the fuzzing above: a literal % in a setting's help text made `run --help` raise."""
    for command in SUBPARSERS:
        with contextlib.redirect_stdout(io.StringIO()) as shown, contextlib.suppress(SystemExit):
            PARSER.parse_args([command, "--help"])
        assert f"usage: pipeline_runner.py {command}" in shown.getvalue()
