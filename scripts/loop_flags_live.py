"""What the loop rule's detector flags in a live run's outputs: per window boundary, the jobs still running, how many
it flags as looping, and how many of those ran to max_tokens (precision and recall, as `elis predictor loops` on
the corpus).

    python scripts/loop_flags_live.py DATABASE_URL WORKLOAD_LABEL [--window-tokens 50] [--max-step 10]

WORKLOAD_LABEL is a replay run's label (`jobs.workload`, e.g. compare-1205034707-isrtf; `--list` shows them). The
outputs are read back from the database and cut at each window boundary with the served model's tokenizer, so
the detector sees what the worker saw after each window.
"""

from __future__ import annotations

import argparse
import sys

from sqlalchemy import create_engine, text

from elis.config import get_settings
from elis.models_prepare import resolve_model
from elis.predictor.loops import first_flag_step, loop_counts


def window_records(rows, tokenizer, window_tokens: int) -> list[dict]:
    """Records in the corpus layout (output_text, window_char_offsets, finish_reason) from finished jobs: one
    offset per window boundary the job was still running at (0, window_tokens, ... below its length), as the
    corpus has them. The end of the output is not a boundary: the worker re-predicts only unfinished jobs."""
    records = []
    for generated_ids, max_tokens in rows:
        ids = list(generated_ids or [])
        text_at = [tokenizer.decode(ids[:end], skip_special_tokens=True) for end in range(0, len(ids), window_tokens)]
        records.append({"output_text": tokenizer.decode(ids, skip_special_tokens=True),
                        "window_char_offsets": [len(t) for t in text_at],
                        "finish_reason": "length" if len(ids) >= max_tokens else "stop", "tokens": len(ids)})
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("database_url")
    parser.add_argument("workload", nargs="?", help="the run's label (jobs.workload)")
    parser.add_argument("--window-tokens", type=int, default=50)
    parser.add_argument("--max-step", type=int, default=10)
    parser.add_argument("--list", action="store_true", help="list the labels in the database and stop")
    args = parser.parse_args(argv)
    engine = create_engine(args.database_url)
    with engine.connect() as db:
        if args.list or not args.workload:
            for label, forced, n in db.execute(text("SELECT workload, force_length, count(*) FROM jobs "
                                                    "GROUP BY 1, 2 ORDER BY 1")):
                print(f"{label}\t{'forced' if forced else 'natural'}\t{n}")
            return 0
        rows = db.execute(text("SELECT generated_ids, max_tokens FROM jobs WHERE workload = :w AND status = 'done'"),
                          {"w": args.workload}).all()
    if not rows:
        print(f"no finished job with workload {args.workload!r} (--list shows the labels)", file=sys.stderr)
        return 2
    from transformers import AutoTokenizer

    settings = get_settings()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(settings.model, settings.models_dir))
    records = window_records(rows, tokenizer, args.window_tokens)
    capped = [r for r in records if r["finish_reason"] == "length"]
    first_flags = []
    for r in records:
        first = first_flag_step(r)
        if first is not None:
            first_flags.append((first * args.window_tokens, r["finish_reason"] == "length"))
    print(f"{len(records)} finished jobs of {args.workload}; {len(capped)} ran to max_tokens")
    print(f"flagged at some window and ran to max_tokens: {sum(c for _, c in first_flags)} "
          f"(first flag at {sorted(f for f, c in first_flags if c)} tokens); flagged and stopped earlier: "
          f"{sum(not c for _, c in first_flags)}")
    print("\n| tokens generated | running | ran to max_tokens | flagged | of those, ran to max_tokens "
          "| precision | recall |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for c in loop_counts(records, args.max_step):
        print(f"| {c.step * args.window_tokens} | {c.running} | {c.capped} | {c.flagged} | {c.flagged_capped} "
              f"| {c.precision:.2f} | {c.recall:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
