
import pytest

from orchestration import local_schedule, run_lock
from tests.helpers import ROOT


def test_second_run_on_the_same_root_is_refused_at_once(tmp_path):
    with run_lock.exclusive_run(tmp_path):
        with pytest.raises(run_lock.PipelineBusyError, match=f"pid [0-9]+ on .*lock file {tmp_path}"):
            with run_lock.exclusive_run(tmp_path):
                pass
    with run_lock.exclusive_run(tmp_path):  # released after the first run
        pass


def test_cron_line_runs_the_pipeline_and_logs_in_the_output_dir(tmp_path):
    line = local_schedule.cron_line("0 3 * * *", ROOT, tmp_path / "images", tmp_path / "out", python="/py")
    assert line.startswith(f"0 3 * * * mkdir -p {tmp_path / 'out'} && cd {ROOT} && ")
    assert f"/py pipeline_runner.py run --data-dir {tmp_path / 'images'} --output-dir {tmp_path / 'out'}" in line
    assert f">> {tmp_path / 'out' / 'scheduled_runs.log'} 2>&1" in line


def test_cron_schedule_needs_five_fields(tmp_path):
    with pytest.raises(ValueError, match="5 fields"):
        local_schedule.cron_line("0 0 3 * * *", ROOT, tmp_path, tmp_path)
