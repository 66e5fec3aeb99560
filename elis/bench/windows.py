"""Offline engine measurements, run in their own process (one vLLM engine at a time on a small machine).

1. One `LLM.generate` call on the benchmark prompts: the throughput the service is compared against.
2. An engine cost profile for the simulator: decode step time by batch size, prefill time per token.

Usage: python -m elis.bench.windows --model DIR --prompts FILE --out results.json [--profile-out p.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def _prompt_ids(tokenizer, path: Path, num: int) -> list[list[int]]:
    from elis.prompts import read_prompts

    items = read_prompts(path)
    items = [items[i % len(items)] for i in range(num)]
    out = []
    for item in items:
        text = tokenizer.apply_chat_template(list(item.messages), add_generation_prompt=True, tokenize=False)
        out.append(list(tokenizer.encode(text, add_special_tokens=False)))
    return out


def offline_throughput(llm, prompt_ids: list[list[int]], max_tokens: int) -> dict:
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    started = time.perf_counter()
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False)
    elapsed = time.perf_counter() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    return {"num_prompts": len(prompt_ids), "output_tokens": tokens, "seconds": elapsed, "tokens_per_s": tokens / elapsed}


def decode_step_times(llm, batches: list[int], num_steps: int = 32) -> dict[str, float]:
    """Seconds per decode step at each batch size (short prompts, EOS ignored, prefill subtracted)."""
    from vllm import SamplingParams

    out = {}
    for batch in batches:
        prompts = [{"prompt_token_ids": [1, 2, 3, 4 + i]} for i in range(batch)]
        timings = []
        for steps in (1, num_steps + 1):
            params = SamplingParams(temperature=0.0, max_tokens=steps, min_tokens=steps, ignore_eos=True)
            started = time.perf_counter()
            llm.generate(prompts, params, use_tqdm=False)
            timings.append(time.perf_counter() - started)
        out[str(batch)] = max((timings[1] - timings[0]) / num_steps, 1e-5)
    return out


def prefill_seconds_per_token(llm, length: int = 1024) -> float:
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=1)
    timings = []
    for tokens in (16, length):
        # distinct ids each time so the prefix cache cannot help
        prompt = [{"prompt_token_ids": [(7 * i + tokens) % 30000 + 100 for i in range(tokens)]}]
        llm.generate(prompt, params, use_tqdm=False)  # warm-up
        prompt = [{"prompt_token_ids": [(11 * i + tokens) % 30000 + 100 for i in range(tokens)]}]
        started = time.perf_counter()
        llm.generate(prompt, params, use_tqdm=False)
        timings.append(time.perf_counter() - started)
    return max((timings[1] - timings[0]) / (length - 16), 1e-7)


def kv_cache_tokens(llm) -> int:
    """Tokens the engine's KV cache holds: what its prefix cache can keep of yielded jobs."""
    cache = llm.llm_engine.vllm_config.cache_config
    return int((cache.num_gpu_blocks or 0) * cache.block_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompts", required=True, type=Path)
    parser.add_argument("--num-prompts", type=int, default=32)
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--block-size", type=int, default=None)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--profile-out", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    from vllm import LLM

    llm = LLM(model=args.model, dtype=args.dtype, max_num_seqs=args.slots, enforce_eager=True, seed=0,
              max_model_len=2048, block_size=args.block_size)
    prompt_ids = _prompt_ids(llm.get_tokenizer(), args.prompts, args.num_prompts)
    offline_throughput(llm, prompt_ids[:4], 8)  # warm-up
    result = {"offline": offline_throughput(llm, prompt_ids, args.max_tokens)}
    if args.profile_out:
        batches = [b for b in (1, 2, 4, 8, 16, 32, 64) if b <= max(args.slots, 1)]
        profile = {
            "source": f"measured by `elis bench service` on this machine: vLLM {args.dtype}, {Path(args.model).name}, "
                      f"{time.strftime('%Y-%m-%d')}",
            "decode_step_s": decode_step_times(llm, batches),
            "prefill_s_per_token": prefill_seconds_per_token(llm),
            "prefix_cache_tokens": kv_cache_tokens(llm),
        }
        result["profile"] = profile
        args.profile_out.parent.mkdir(parents=True, exist_ok=True)
        args.profile_out.write_text(json.dumps(profile, indent=2))
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
