"""The time each test file took, from the JSON lines TEST_CPU_LOG=FILE makes pytest write (tests/conftest.py):

    TEST_CPU_LOG=runs/test-cpu.jsonl make test
    .venv/bin/python -m tests.cpu_table runs/test-cpu.jsonl [--top 15]
"""

import argparse
import collections
import json


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log")
    parser.add_argument("--top", type=int, default=15, help="Rows shown, the most CPU first. Default: 15.")
    args = parser.parse_args(argv)
    files = collections.defaultdict(lambda: [0.0, 0.0, 0])
    with open(args.log) as lines:
        for line in lines:
            row = json.loads(line)
            spent = files[row["file"]]
            spent[0] += row["wall"]
            spent[1] += row["cpu"]
            spent[2] += row["tests"]
    rows = sorted(files.items(), key=lambda item: -item[1][1])
    total_wall, total_cpu = sum(v[0] for v in files.values()), sum(v[1] for v in files.values())
    print(f"{'file':60} {'tests':>5} {'wall s':>8} {'CPU s':>8} {'CPU %':>6}")
    for path, (wall, cpu, tests) in rows[:args.top]:
        print(f"{path:60} {tests:5d} {wall:8.0f} {cpu:8.0f} {100 * cpu / total_cpu:6.1f}")
    rest = rows[args.top:]
    if rest:
        print(f"{f'the other {len(rest)} files':60} {sum(v[2] for _, v in rest):5d} {sum(v[0] for _, v in rest):8.0f} "
              f"{sum(v[1] for _, v in rest):8.0f} {100 * sum(v[1] for _, v in rest) / total_cpu:6.1f}")
    print(f"{'all':60} {sum(v[2] for v in files.values()):5d} {total_wall:8.0f} {total_cpu:8.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
