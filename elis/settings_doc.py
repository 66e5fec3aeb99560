"""The README's settings table, generated from `elis.config.Settings` so it lists every field.

    python -m elis.settings_doc           # print the table
    python -m elis.settings_doc --write   # replace the table in README.md

A field's meaning is the comment above (or beside) it in elis/config.py, else the short text below.
"""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

from elis import config

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"

# Meanings of fields that carry no comment in config.py.
MEANINGS = {
    "tenant_max_tokens_in_flight": "per-tenant limit: tokens still to generate over its queued and running jobs (429)",
    "dtype": "`bfloat16` for serving; `float32` makes windowed generation bit-exact",
    "max_model_len": "context length the engine and admission allow (prompt + max_tokens)",
    "engine_seed": "vLLM's sampling seed",
    "broker_url": "RabbitMQ",
    "queue_name": "the priority queue (a new level count needs a new queue name)",
    "num_priority_levels": "RabbitMQ priority levels (x-max-priority, fixed at first declaration)",
    "policy": "`fcfs`, `sjf` (alias `ssjf`), `isrtf`, `srtf-oracle`, `mlfq`",
    "window_tokens": "iteration window W (tokens per window)",
    "reconcile_interval_s": "how often each worker's reconciler re-publishes lost jobs, promotes aged ones",
    "max_tokens_limit": "the largest max_tokens a job may ask for",
    "default_max_tokens": "max_tokens of a job that gives none",
    "max_wait_s": "aging bound in seconds when > 0 (else derived from service times and FCFS's JCT, see `ELIS_AGING`)",
    "aging_factor": "aging bound >= this x the mean service time of recently finished jobs",
    "aging_floor_s": "the derived aging bound is never below this",
    "yield_uncertainty": "yield margin: the predictor's relative error, times the running job's score",
    "yield_margin_per_step": "take the relative error per step from the level file",
    "guard_threshold": "below this Kendall tau, length-aware order falls back to FCFS (or, opt-in, prefill first)",
    "guard_hysteresis": "the guard returns to the policy at threshold + this",
    "guard_min_jobs": "finished jobs needed before the guard judges",
    "guard_window_jobs": "the guard judges the last this many finished jobs",
    "guard_start_in_fallback": "start in the fallback order until the guard has judged the predictor",
    "repredict_sample_every": "window ends where no prediction could make the job yield re-predict one time in "
                              "this many anyway, so the guard keeps judging re-predictions (0: never; every window "
                              "does until the guard has judged pre-emption)",
    "guard_refresh_s": "how often API and workers refresh the guard and the aging bound",
    "predictor_update_jobs": "the periodic predictor update learns from the last this many finished jobs",
    "api_host": "`elis serve` bind address",
    "api_port": "`elis serve` port",
}


def field_comments() -> dict[str, str]:
    """The comment lines above each Settings field, and its trailing comment, joined."""
    source = inspect.getsource(config)
    lines = source.splitlines()
    tree = ast.parse(source)
    settings = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    comments = {}
    for node in settings.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, row = [], node.lineno - 2
        while row >= 0 and lines[row].strip().startswith("#"):
            above.insert(0, lines[row].strip().lstrip("#").strip())
            row -= 1
        _, _, beside = lines[node.end_lineno - 1].partition("  # ")
        comments[node.target.id] = " ".join(above + ([beside.strip()] if beside else []))
    return comments


def _default(value) -> str:
    if isinstance(value, Path):
        return f"`{str(value).replace(str(Path.home()), '~')}`"
    return "(empty)" if value == "" else f"`{value}`"


def settings_rows() -> list[tuple[str, str, str]]:
    comments = field_comments()
    rows = []
    for name, field in config.Settings.model_fields.items():
        meaning = comments.get(name) or MEANINGS.get(name, "")
        rows.append((f"`ELIS_{name.upper()}`", _default(field.default), meaning.replace("|", "\\|")))
    return rows


def settings_table() -> str:
    lines = ["| setting | default | meaning |", "| --- | --- | --- |"]
    lines += [f"| {name} | {default} | {meaning} |" for name, default, meaning in settings_rows()]
    return "\n".join(lines)


def readme_table(text: str) -> str:
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def write_readme(path: Path = README) -> None:
    text = path.read_text()
    head, rest = text.split(BEGIN, 1)
    path.write_text(f"{head}{BEGIN}\n{settings_table()}\n{END}{rest.split(END, 1)[1]}")


if __name__ == "__main__":
    if "--write" in sys.argv:
        write_readme()
    else:
        print(settings_table())
