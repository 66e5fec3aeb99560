"""The periodic online update: a worker's background thread runs `elis predictor update` every
`ELIS_PREDICTOR_UPDATE_EVERY_S` seconds (0, the default: never).

Each round is a child process at a lower CPU priority, not a call in the worker: the update loads its own
encoder and trains a head for a while, which must neither hold the worker's memory afterwards nor take the
engine's cores at equal priority. The child reads the same ELIS_* settings, so it learns from the worker's
database and writes where serving watches (`serving.update_target_path`); APIs and workers then hot-reload
the new version. Workers on one host share the checkpoint file: a file lock lets one of them update at a time,
the others skip that round.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from elis.config import Settings

log = logging.getLogger(__name__)

# The update's exit codes: 0 a new version written, 1 refused (nothing better, or too few finished jobs).
ACCEPTED, REFUSED = 0, 1
NICE = 10  # below the engine, which runs at the worker's own priority


def update_command(settings: Settings) -> list[str]:
    """`elis predictor update` once, from the last `predictor_update_jobs` finished jobs."""
    return [sys.executable, "-c", "from elis.cli import app; app()", "predictor", "update",
            "--jobs", str(settings.predictor_update_jobs)]


class PeriodicUpdate(threading.Thread):
    """Runs the update command every `every_s` seconds until `stopped` is set; logs each outcome."""

    def __init__(self, every_s: float, command: Sequence[str], lock_path: Path, timeout_s: float | None = None) -> None:
        super().__init__(name="elis-predictor-update", daemon=True)
        self.every_s = every_s
        self.command = list(command)
        self.lock_path = Path(lock_path)
        self.timeout_s = timeout_s if timeout_s is not None else max(every_s, 60.0)
        self.stopped = threading.Event()
        self.outcomes: list[str] = []  # "accepted", "refused", "failed" or "skipped", one per round

    @classmethod
    def from_settings(cls, settings: Settings) -> PeriodicUpdate:
        return cls(settings.predictor_update_every_s, update_command(settings),
                   Path(settings.cache_dir) / "predictor" / "update.lock")

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            try:
                self.run_once()
            except Exception:  # an update's error is logged, never raised into the worker
                log.exception("periodic predictor update failed")
                self.outcomes.append("failed")

    def run_once(self) -> str:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                outcome = "skipped"  # another worker on this host is updating the same file
                log.info("predictor update skipped: another process holds %s", self.lock_path)
            else:
                outcome = self._run_child()
        self.outcomes.append(outcome)
        return outcome

    def _run_child(self) -> str:
        try:
            # check=False: the exit code is the child's answer (accepted, refused or failed), read below
            done = subprocess.run(self.command, capture_output=True, text=True, timeout=self.timeout_s,
                                  check=False, preexec_fn=lambda: os.nice(NICE))
        except subprocess.TimeoutExpired:
            log.warning("predictor update took more than %.0f s and was stopped", self.timeout_s)
            return "failed"
        last = (done.stdout.strip().splitlines() or [""])[-1]
        if done.returncode == ACCEPTED:
            log.info("predictor update: %s", last)
            return "accepted"
        if done.returncode == REFUSED:
            log.info("predictor update: %s", last)
            return "refused"
        log.warning("predictor update exited %d: %s", done.returncode, done.stderr.strip()[-2000:])
        return "failed"
