"""The periodic online update (ELIS_PREDICTOR_UPDATE_EVERY_S): rounds, outcomes, the per-host lock."""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path

from elis.config import Settings
from elis.predictor.periodic import NICE, PeriodicUpdate, update_command


def _child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_exit_codes_map_to_outcomes_and_the_child_runs_at_a_lower_priority(tmp_path: Path):
    seen = tmp_path / "nice.txt"
    accepted = PeriodicUpdate(60, _child(f"import os; open({str(seen)!r}, 'w').write(str(os.nice(0)))"),
                              tmp_path / "update.lock")
    assert accepted.run_once() == "accepted"
    assert int(seen.read_text()) == min(os.nice(0) + NICE, 19)  # 19 is the lowest priority there is
    assert PeriodicUpdate(60, _child("import sys; sys.exit(1)"), tmp_path / "update.lock").run_once() == "refused"
    assert PeriodicUpdate(60, _child("import sys; sys.exit(2)"), tmp_path / "update.lock").run_once() == "failed"
    slow = PeriodicUpdate(60, _child("import time; time.sleep(5)"), tmp_path / "update.lock", timeout_s=0.3)
    assert slow.run_once() == "failed"


def test_a_round_is_skipped_while_another_process_holds_the_lock(tmp_path: Path):
    marker = tmp_path / "ran"
    update = PeriodicUpdate(60, _child(f"open({str(marker)!r}, 'w')"), tmp_path / "update.lock")
    with open(tmp_path / "update.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert update.run_once() == "skipped"
    assert not marker.exists()
    assert update.run_once() == "accepted" and marker.exists()


def test_the_thread_runs_rounds_until_stopped(tmp_path: Path):
    update = PeriodicUpdate(0.1, _child("pass"), tmp_path / "update.lock")
    update.start()
    deadline = time.monotonic() + 20
    while len(update.outcomes) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    update.stopped.set()
    update.join(timeout=10)
    assert not update.is_alive()
    assert update.outcomes[:2] == ["accepted", "accepted"]


def test_off_by_default_and_the_command_is_the_update_cli(tmp_path: Path):
    assert Settings().predictor_update_every_s == 0
    settings = Settings(cache_dir=tmp_path, predictor_update_every_s=600, predictor_update_jobs=120)
    update = PeriodicUpdate.from_settings(settings)
    assert update.every_s == 600 and update.lock_path == tmp_path / "predictor" / "update.lock"
    assert update_command(settings)[-4:] == ["predictor", "update", "--jobs", "120"]
