"""Every command the README shows is one the project takes as written: each `pipeline_runner.py` line (its
continuations joined, a trailing comment dropped) parses with the command line's own parser, and each `make`
target named is in the Makefile. The e2e tests run these commands on generated data; this keeps the page's copy of
them from drifting away from the flags."""

import pathlib
import re
import shlex
import subprocess

import pytest

import pipeline_runner

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _shell_blocks(text: str) -> list[str]:
    """The fenced blocks marked sh or bash (a run's output is fenced unmarked)."""
    blocks, inside, shell = [], False, False
    for line in text.splitlines():
        if line.startswith("```"):
            if not inside:
                shell = line[3:].strip() in ("sh", "bash")
                blocks += [[]] if shell else []
            inside = not inside
        elif inside and shell:
            blocks[-1].append(line)
    return ["\n".join(block) + "\n" for block in blocks]


def _commands(block: str) -> list[str]:
    """The block's commands, a backslash-continued line joined to the next."""
    return [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def _runner_commands(page: pathlib.Path) -> list[list[str]]:
    found = []
    for block in _shell_blocks(page.read_text()):
        for command in _commands(block):
            words = shlex.split(command, comments=True)
            # "..." stands for flags shown before (the docs' elided examples); $, | and <> for a shell's work
            if "pipeline_runner.py" in words and "..." not in words and not any(char in command for char in "$|<>"):
                found.append(words[words.index("pipeline_runner.py") + 1:])
    return found


def test_the_readme_shows_commands_from_every_step_of_a_first_week():
    names = {words[0] for words in _runner_commands(ROOT / "README.md")}
    assert names >= {"run", "predict", "ingest", "schedule", "monitor", "models", "rollback", "base-weights",
                     "compile", "submit"}, names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_each_command_a_page_shows_parses_as_written(page, capsys):
    commands = _runner_commands(page)
    for words in commands:
        try:
            pipeline_runner.build_parser().parse_args(words)
        except SystemExit as stop:
            raise AssertionError(f"{page.name}: `pipeline_runner.py {shlex.join(words)}` is refused: "
                                 f"{capsys.readouterr().err.strip()}") from stop


def test_each_make_target_the_readme_names_is_in_the_makefile():
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", (ROOT / "Makefile").read_text(), flags=re.M))
    named = {match for block in _shell_blocks((ROOT / "README.md").read_text())
             for command in _commands(block) for match in re.findall(r"^make ([a-z0-9-]+)", command)}
    assert named and named <= targets, named - targets


def test_what_the_readmes_commands_write_into_the_checkout_is_ignored_by_git():
    """The packages and KServe manifests compile writes where the README names them, and the base base-weights
    writes: a checkout used as printed stays clean (`git status`)."""
    written = set()
    for words in _runner_commands(ROOT / "README.md"):
        for flag in ("--package", "--monitor-package", "--out"):
            if flag in words and "/" not in words[words.index(flag) + 1]:
                name = words[words.index(flag) + 1]
                written |= {name, name.removesuffix(".yaml") + ".inferenceservice.yaml"} if name.endswith(".yaml") \
                    else {name}
    assert {"cats_vs_dogs.yaml", "cats_vs_dogs_vertex.yaml", "pets_no_top.h5"} <= written, written
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *sorted(written)], cwd=ROOT, capture_output=True,
                             text=True).stdout.split()
    assert sorted(ignored) == sorted(written)
