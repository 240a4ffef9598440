"""What `submit --local` shows while kfp.local runs a package: a line per task, a failed task's own error lines;
everything kfp.local and the tasks print goes to the run's log (tests/e2e/test_kubeflow_local.py runs it)."""

import io

from orchestration.engines import kfp_runs


def test_each_task_is_one_line_with_its_status_and_a_failed_tasks_errors_follow_it():
    log, said = io.StringIO(), []
    lines = kfp_runs._TaskLines(log, said.append)
    output = ("11:30:30.185 - INFO - Executing task \x1b[96m'ingest'\x1b[0m\n"
              "    ingest: 16 images\n    error: not this one\n"
              "11:30:38.216 - INFO - Task \x1b[96m'ingest'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m\n"
              "11:30:38.218 - INFO - Executing task \x1b[96m'anomaliesgate'\x1b[0m\n"
              + "".join(f"    error: reason {n}\n" for n in range(5))
              + "    Traceback (most recent call last):\n"
              "11:30:46.079 - ERROR - Task \x1b[96m'anomaliesgate'\x1b[0m finished with status "
              "\x1b[91mFAILURE\x1b[0m\n")
    for start in range(0, len(output), 7):  # kfp writes what it has: a line may come in pieces
        lines.write(output[start:start + 7])
    assert log.getvalue() == output
    assert [line.split(" (")[0] for line in said] == ["  ingest: success", "  anomaliesgate: failure",
                                                      "    error: reason 2", "    error: reason 3",
                                                      "    error: reason 4"]
    assert all(line.endswith(" s)") for line in said[:2])
