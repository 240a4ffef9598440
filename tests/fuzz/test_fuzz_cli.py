"""The command line's flag parsing, over random argument lists built from its own flags and hostile values:
every list is parsed (and its settings validated) or refused in one line, by argparse (exit 2) or by the
settings' own checks (ConfigError, SettingsError); nothing else escapes. Parsing only: no command runs."""

import contextlib
import io

from hypothesis import event, given, settings
from hypothesis import strategies as st

import pipeline_runner
from cli import flags, local_run
from config import ConfigError
from contract.errors import CommandError
from tests.fuzz.conftest import examples

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
            from inference.sink_settings import SinkSettings

            flags.settings(args, SinkSettings)
        if args.command in ("run", "ingest", "compile"):
            config, _ = flags.config_from_args(args)
            if args.command == "run":
                local_run.check_local_files(config)
    except (ConfigError, CommandError) as refused:
        assert "\n" not in str(refused).strip(), str(refused)
        event(f"refused by {type(refused).__name__}")
        return
    event("parsed")


def test_every_commands_help_is_shown():
    """Found by the fuzzing above: a literal % in a setting's help text made `run --help` raise."""
    for command in SUBPARSERS:
        with contextlib.redirect_stdout(io.StringIO()) as shown, contextlib.suppress(SystemExit):
            PARSER.parse_args([command, "--help"])
        assert f"usage: pipeline_runner.py {command}" in shown.getvalue()
