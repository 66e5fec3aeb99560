"""Saved comparison runs: a folder with manifest.json and records-<run>.csv files, as `elis compare` writes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from elis.replay.compare import policy_of_run
from elis.replay.live import LiveRecord, read_live_records

RUN_ORDER = ("fcfs", "sjf", "ssjf", "isrtf", "mlfq", "srtf-oracle", "bound")


class RunDirError(ValueError):
    """A folder is not a saved comparison run; the message says what is missing."""


@dataclass
class SavedRun:
    """One saved comparison: its folder, manifest and records per run (policies, then `bound`)."""

    path: Path
    manifest: dict = field(default_factory=dict)
    runs: dict[str, list[LiveRecord]] = field(default_factory=dict)

    @property
    def rate(self) -> float | None:
        rate = self.manifest.get("options", {}).get("rate")
        return None if rate is None else float(rate)

    @property
    def label(self) -> str:
        return self.path.name


def _order(name: str) -> tuple[int, str]:
    # Rounds (`fcfs.r2`) sort with their policy; an unknown policy before the bound.
    policy = policy_of_run(name)
    return (RUN_ORDER.index(policy) if policy in RUN_ORDER else len(RUN_ORDER) - 1, name)


def load_run(path: Path) -> SavedRun:
    """Read a run folder (the manifest is optional: a folder of records CSVs reads too)."""
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path}: not a folder")
    files = sorted(path.glob("records-*.csv"), key=lambda p: _order(p.stem.removeprefix("records-")))
    if not files:
        raise RunDirError(f"{path}: no records-<run>.csv files (is it an `elis compare` output folder?)")
    manifest: dict = {}
    if (path / "manifest.json").exists():
        try:
            manifest = json.loads((path / "manifest.json").read_text())
        except json.JSONDecodeError as exc:
            raise RunDirError(f"{path / 'manifest.json'}: not valid JSON ({exc})") from None
    try:
        runs = {f.stem.removeprefix("records-"): read_live_records(f) for f in files}
    except ValueError as exc:
        raise RunDirError(str(exc)) from None
    return SavedRun(path, manifest, runs)
