"""The time each test file took, from the JSON lines TEST_CPU_LOG=FILE makes pytest write (tests/conftest.py):

    TEST_CPU_LOG=runs/test-cpu.jsonl make test
    .venv/bin/python -m tests.cpu_table runs/test-cpu.jsonl [--top 15]
"""

import argparse
import collections
import json
import math
import sys

from cli import output
from contract import errors
from contract.errors import printable

# More seconds (30 years) or tests than any run of the suite has: a row beyond it is no measurement, and the sums of
# rows within it stay finite.
MOST = 1e9


class LogError(Exception):
    """A log this cannot read, in one line naming the file (and the line where one is at fault)."""


def read_log(path: str) -> dict[str, list]:
    """{test file: [wall seconds, CPU seconds, tests]} summed over the log's rows (one per file and worker)."""
    files = collections.defaultdict(lambda: [0.0, 0.0, 0])
    try:
        with open(path) as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    file, wall, cpu, tests = _row(json.loads(line))
                except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as error:
                    raise LogError(f"{path}, line {number}: not a row of TEST_CPU_LOG's "
                                   f"({type(error).__name__}: {error})") from None
                spent = files[file]
                spent[0] += wall
                spent[1] += cpu
                spent[2] += tests
    except OSError as error:
        raise LogError(f"{path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise LogError(f"{path}: not a text file") from None
    if not files:
        raise LogError(f"{path}: no rows (pytest writes them as it finishes, with TEST_CPU_LOG set)")
    return files


def _row(row) -> tuple[str, float, float, int]:
    """(file, wall seconds, CPU seconds, tests) of a row as conftest.py writes it; ValueError or TypeError for
    anything else: a count or a time that is not a finite number of 0 or more, a file that is no name."""
    if not isinstance(row, dict) or not isinstance(row["file"], str) or not row["file"]:
        raise TypeError("a row is {\"file\": NAME, \"wall\": S, \"cpu\": S, \"tests\": N}")
    seconds = [row[key] for key in ("wall", "cpu")]
    if not all(type(value) in (int, float) and math.isfinite(value) and 0 <= value <= MOST for value in seconds):
        raise ValueError(f"seconds must be numbers from 0 to {MOST:.0e}: {seconds}")
    if type(row["tests"]) is not int or not 0 <= row["tests"] <= MOST:
        raise ValueError(f"tests must be a count: {row['tests']!r}")
    return row["file"], float(seconds[0]), float(seconds[1]), row["tests"]


def table(files: dict[str, list], top: int) -> list[str]:
    rows = sorted(files.items(), key=lambda item: -item[1][1])
    total_wall, total_cpu = sum(v[0] for v in files.values()), sum(v[1] for v in files.values())
    share = (lambda cpu: 100 * cpu / total_cpu) if total_cpu else (lambda cpu: 0.0)
    lines = [f"{'file':60} {'tests':>5} {'wall s':>8} {'CPU s':>8} {'CPU %':>6}"]
    for path, (wall, cpu, tests) in rows[:top]:
        lines.append(f"{printable(path):60} {tests:5d} {wall:8.0f} {cpu:8.0f} {share(cpu):6.1f}")
    rest = rows[top:]
    if rest:
        cpu = sum(v[1] for _, v in rest)
        others = "the other file" if len(rest) == 1 else f"the other {len(rest)} files"
        lines.append(f"{others:60} {sum(v[2] for _, v in rest):5d} "
                     f"{sum(v[0] for _, v in rest):8.0f} {cpu:8.0f} {share(cpu):6.1f}")
    lines.append(f"{'all':60} {sum(v[2] for v in files.values()):5d} {total_wall:8.0f} {total_cpu:8.0f}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log")
    parser.add_argument("--top", type=int, default=15, help="Rows shown, the most CPU first. Default: 15.")
    args = parser.parse_args(argv)
    if args.top < 0:
        parser.error(f"--top {args.top}: a count of rows, 0 or more")
    if not args.log:
        parser.error("LOG: an empty path")
    try:
        lines = table(read_log(args.log), args.top)
    except LogError as error:
        print(f"error: {printable(str(error))}", file=sys.stderr)
        return 1
    try:
        print("\n".join(lines))
    except OSError as error:  # a full disk under a redirection (a reader that left is cli.output's)
        return errors.end(errors.storage_fault(error))
    return 0


if __name__ == "__main__":
    output.guard()  # a reader that stops early (`| head`) takes what it wants; a full disk is one line
    raise SystemExit(output.finish(main()))
