"""Workload readers on real rows (tests/data, see its README) and on malformed input; seeded arrivals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from elis.cli import app
from elis.replay.readers import (
    FILLER_OVERHEAD,
    WorkloadError,
    detect_kind,
    filler_messages,
    read_jsonl_trace,
    read_length_csv,
    read_mooncake_trace,
    read_openai_batch,
    read_requests,
)
from elis.replay.sources import arrival_offsets, build_workload, request_body
from elis.simulator.engine_profile import EngineProfile

DATA = Path(__file__).resolve().parent.parent / "data"
runner = CliRunner()


# -- arrivals -----------------------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_arrivals_and_another_seed_others():
    for kind, rate in (("gamma", None), ("gamma", 2.0), ("poisson", 2.0)):
        first = arrival_offsets(50, kind, rate, seed=3)
        assert first == arrival_offsets(50, kind, rate, seed=3)
        assert first != arrival_offsets(50, kind, rate, seed=4)
        assert first[0] == 0.0 and first == sorted(first)
    assert arrival_offsets(4, "batch") == [0.0] * 4


@pytest.mark.parametrize(("rate", "cv"), [(None, None), (0.5, 2.0), (3.0, 0.5)])
def test_gamma_gaps_match_their_mean_and_cv(rate, cv):
    gaps = np.diff(arrival_offsets(4001, "gamma", rate, cv, seed=11))
    mean = 0.73 * 10.41 if rate is None else 1 / rate
    expected_cv = 1 / np.sqrt(0.73) if cv is None else cv
    assert gaps.mean() == pytest.approx(mean, rel=0.08)
    assert gaps.std() / gaps.mean() == pytest.approx(expected_cv, rel=0.08)


def test_poisson_gaps_have_mean_one_over_rate_and_cv_one():
    gaps = np.diff(arrival_offsets(4001, "poisson", 4.0, seed=5))
    assert gaps.mean() == pytest.approx(0.25, rel=0.06)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.06)


# -- readers on real rows ----------------------------------------------------------------------------------


def test_azure_rows_become_filler_prompts_with_forced_lengths():
    requests = read_length_csv(DATA / "azure_llm_2023_conv_40.csv")
    assert len(requests) == 40
    assert requests[0].offset_s == 0.0 and requests[0].prompt_tokens == 374 and requests[0].output_tokens == 44
    assert requests[1].offset_s == pytest.approx(50.9951690 - 46.6805900)
    assert requests[1].output_tokens == 109
    assert all(r.max_tokens is None for r in requests)
    words = requests[0].messages[0]["content"].split(": ", 1)[1].split()
    assert len(words) == 374 - FILLER_OVERHEAD


def test_burstgpt_layout_reads_the_same_lengths_and_skips_failed_requests():
    burst = read_length_csv(DATA / "burstgpt_layout_from_azure_40.csv")
    azure = read_length_csv(DATA / "azure_llm_2023_conv_40.csv")
    assert len(burst) == 39  # row 7 has 0 response tokens
    kept = azure[:5] + azure[6:]
    assert [r.output_tokens for r in burst] == [r.output_tokens for r in kept]
    assert [r.prompt_tokens for r in burst] == [r.prompt_tokens for r in kept]
    assert [r.offset_s for r in burst] == pytest.approx([r.offset_s for r in kept], abs=1e-3)


def test_a_mooncake_trace_reads_the_same_lengths_with_its_milliseconds_as_seconds(tmp_path):
    mooncake = read_mooncake_trace(DATA / "mooncake_layout_from_azure_40.jsonl")
    azure = read_length_csv(DATA / "azure_llm_2023_conv_40.csv")
    assert [r.output_tokens for r in mooncake] == [r.output_tokens for r in azure]
    assert [r.prompt_tokens for r in mooncake] == [r.prompt_tokens for r in azure]
    assert [r.offset_s for r in mooncake] == pytest.approx([r.offset_s for r in azure], abs=1e-3)
    assert mooncake[0].messages == azure[0].messages  # the same filler prompt
    assert read_requests(DATA / "mooncake_layout_from_azure_40.jsonl")[0] == "lengths"
    timed = build_workload(DATA / "mooncake_layout_from_azure_40.jsonl", max_tokens=64)
    csv_timed = build_workload(DATA / "azure_llm_2023_conv_40.csv", max_tokens=64)
    assert timed.info["time_scale"] == csv_timed.info["time_scale"]  # scaled to this machine as the CSV is
    assert [i.offset_s for i in timed.items] == pytest.approx([i.offset_s for i in csv_timed.items], abs=0.01)
    # input_text is the prompt; no timestamps at all: the arrival process decides; output 0 is a failed request
    path = tmp_path / "m.jsonl"
    path.write_text('{"input_text": "Why is the sky blue?", "output_length": 30}\n'
                    '{"input_length": 90, "output_length": 0}\n{"input_length": 120, "output_length": 12}\n')
    requests = read_mooncake_trace(path)
    assert [r.output_tokens for r in requests] == [30, 12] and {r.offset_s for r in requests} == {None}
    assert requests[0].messages == ({"role": "user", "content": "Why is the sky blue?"},)
    work = build_workload(path, num=4, arrivals="poisson", rate=2.0, seed=1, max_tokens=64)
    assert len({item.offset_s for item in work.items}) == 4 and not work.info["timed"]  # not all at 0
    assert {item.body["target_output_tokens"] for item in work.items} == {30, 12}
    # AIPerf's text key, a null input_length beside a text, and a text that wins over a recorded length
    aiperf = tmp_path / "aiperf.jsonl"
    text = "Summarize the history of the printing press. " * 20
    aiperf.write_text(json.dumps({"timestamp": 0, "text_input": text, "input_length": 500, "output_length": 9})
                      + "\n" + json.dumps({"timestamp": 1500, "input_text": "Hi", "input_length": None,
                                            "output_length": 4}) + "\n")
    assert detect_kind(aiperf) == "lengths"
    rows = read_mooncake_trace(aiperf)
    assert [r.messages[0]["content"] for r in rows] == [text, "Hi"] and [r.offset_s for r in rows] == [0.0, 1.5]
    # the time scale counts a text's length (about 4 characters a token), not 1 token
    scaled = build_workload(aiperf, max_tokens=64).info["time_scale"]
    one_token = build_workload(_rows(tmp_path, [(0, 1, 9), (1500, 1, 4)]), max_tokens=64).info["time_scale"]
    assert scaled != one_token


def _rows(tmp_path, rows) -> Path:
    path = tmp_path / "lengths_only.jsonl"
    path.write_text("".join(json.dumps({"timestamp": t, "input_length": p, "output_length": o}) + "\n"
                            for t, p, o in rows))
    return path


def test_format_lengths_reads_a_csv_whatever_its_file_is_called(tmp_path):
    renamed = tmp_path / "azure.txt"
    renamed.write_text((DATA / "azure_llm_2023_conv_40.csv").read_text())
    kind, requests = read_requests(renamed, "lengths")
    assert kind == "lengths" and len(requests) == 40 and requests[0].prompt_tokens == 374


def test_a_jsonl_trace_keeps_offsets_max_tokens_and_forced_lengths():
    requests = read_jsonl_trace(DATA / "trace_azure_times_code_alpaca_20.jsonl")
    assert len(requests) == 20
    assert requests[0].max_tokens == 128 and requests[0].output_tokens is None
    assert requests[1].output_tokens == 109 and requests[1].max_tokens is None
    assert requests[1].offset_s == pytest.approx(4.315)
    assert requests[0].messages[0]["content"].startswith("What are the distinct values from the given list?")


def test_an_openai_batch_file_reads_chat_and_text_completions():
    requests = read_openai_batch(DATA / "openai_batch_code_alpaca_16.jsonl")
    assert len(requests) == 16
    assert requests[0].max_tokens == 64 and requests[11].max_tokens == 75
    assert requests[12].max_tokens == 48  # max_completion_tokens
    assert all(r.offset_s is None for r in requests)
    assert requests[12].messages == ({"role": "user", "content": requests[12].messages[0]["content"]},)


@pytest.mark.parametrize(("name", "kind", "count"), [
    ("code_alpaca_30.json", "prompts", 30),
    ("alpaca_seed_tasks_20.jsonl", "prompts", 20),
    ("openai_batch_code_alpaca_16.jsonl", "openai-batch", 16),
    ("trace_azure_times_code_alpaca_20.jsonl", "trace", 20),
    ("azure_llm_2023_conv_40.csv", "lengths", 40),
    ("mooncake_layout_from_azure_40.jsonl", "lengths", 40),
])
def test_the_format_is_detected(name, kind, count):
    assert detect_kind(DATA / name) == kind
    assert read_requests(DATA / name)[0] == kind and len(read_requests(DATA / name)[1]) == count


def test_a_length_trace_is_time_scaled_and_capped_to_this_machine():
    work = build_workload(DATA / "azure_llm_2023_conv_40.csv", num=10, max_tokens=64, max_prompt_tokens=200,
                          load=0.5, slots=4)
    bodies = [item.body for item in work.items]
    assert all("max_tokens" not in b and 1 <= b["target_output_tokens"] <= 64 for b in bodies)
    assert bodies[0]["target_output_tokens"] == 44
    # The first 10 rows: prompts 374 396 879 91 91 381 1313 388 242 209, outputs 44 109 55 16 16 84 142 84 14 152.
    assert work.info["clamped_prompts"] == 8 and work.info["clamped_outputs"] == 5
    assert [b["target_output_tokens"] for b in bodies] == [44, 64, 55, 16, 16, 64, 64, 64, 14, 64]
    assert len(bodies[0]["messages"][0]["content"].split()) == 200 - FILLER_OVERHEAD + 3  # "Repeat these words:"
    offsets = [item.offset_s for item in work.items]
    rate = work.info["rate"]
    assert (len(offsets) - 1) / offsets[-1] == pytest.approx(rate)  # mean rate after scaling
    twice = build_workload(DATA / "azure_llm_2023_conv_40.csv", num=10, max_tokens=64, max_prompt_tokens=200,
                           load=1.0, slots=4)
    assert twice.info["rate"] == pytest.approx(2 * rate)
    assert work.info["capacity_from"] == EngineProfile.load().source  # no measurement given: the bundled profile
    bundled = EngineProfile.load()
    slower = bundled.at_measured_speed(slots=4, decode_step_s=4 * bundled.decode_step(4),
                                       prefill_s_per_token=4 * bundled.prefill_s_per_token, source="worker w1")
    measured = build_workload(DATA / "azure_llm_2023_conv_40.csv", num=10, max_tokens=64, max_prompt_tokens=200,
                              load=0.5, slots=4, profile=slower)
    assert measured.info["capacity_from"] == "worker w1"
    assert measured.info["rate"] < rate / 2  # an engine 4x slower at the same load: arrivals spread out


def test_a_trace_shorter_than_num_repeats_later_in_time():
    work = build_workload(DATA / "trace_azure_times_code_alpaca_20.jsonl", num=30)
    offsets = [item.offset_s for item in work.items]
    assert offsets == sorted(offsets) and len(set(offsets)) == 30
    assert work.items[20].body["messages"] == work.items[0].body["messages"]


def test_filler_prompt_length():
    assert len(filler_messages(134)[0]["content"].split()) == 100 + 3
    assert len(filler_messages(5)[0]["content"].split()) == 1 + 3
    assert len(filler_messages(134, key=7)[0]["content"].split()) == 100 + 3


def test_each_requests_filler_prompt_has_its_own_words_so_no_prefix_cache_holds_it():
    # One shared filler would make every shorter prompt a prefix of a longer one: the engine's prefix cache
    # would serve their prefills, which real prompts pay in full.
    requests = read_length_csv(DATA / "azure_llm_2023_conv_40.csv")
    starts = {" ".join(r.messages[0]["content"].split(": ", 1)[1].split()[:32]) for r in requests}
    assert len(starts) == len(requests)
    assert filler_messages(200, key=3) == filler_messages(200, key=3)  # the same request: the same prompt
    capped, _, _ = request_body(requests[0], 64, 0.0, 100)  # capped to 100 tokens: still the request's own words
    other, _, _ = request_body(requests[1], 64, 0.0, 100)
    assert capped["messages"] != other["messages"]


# -- malformed input: file, line, what is wrong ------------------------------------------------------------


@pytest.mark.parametrize(("reader", "text", "message"), [
    (read_jsonl_trace, '{"arrival": 0, "prompt": "a"}\n{"arrival": 1, "prompt": "b"\n', "line 2: not valid JSON"),
    (read_jsonl_trace, '{"arrival": 0, "prompt": "a"}\n\n{"prompt": "b"}\n', "line 3: needs an arrival time"),
    (read_jsonl_trace, '{"arrival": "soon", "prompt": "a"}\n', "line 1: 'arrival' must be a number"),
    (read_jsonl_trace, '{"arrival": 0, "prompt": "a", "max_tokens": -3}\n', "line 1: max_tokens must be positive"),
    (read_jsonl_trace, '{"arrival": 0, "prompt": "a", "output_tokens": 2.5}\n', "line 1: output_tokens must be a whole"),
    (read_jsonl_trace, '{"arrival": 0, "text2": "a"}\n', "line 1: needs 'prompt', 'text'"),
    (read_jsonl_trace, '[1, 2]\n', "line 1: expected a JSON object"),
    (read_openai_batch, '{"custom_id": "a", "method": "POST", "body": {}}\n', "line 1: 'url' must be one of"),
    (read_openai_batch, '{"custom_id": "a", "method": "GET", "url": "/v1/chat/completions", "body": {}}\n',
     "line 1: 'method' must be POST"),
    (read_openai_batch, '{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {}}\n',
     "line 1: 'url' must be one of"),
    (read_openai_batch, '{"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {"prompt": ""}}\n',
     "line 1: the prompt is empty"),
    (read_openai_batch, ('{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": '
                        '{"messages": [{"role": "user"}]}}\n'), "line 1: a message's 'content' must be a string"),
    (read_length_csv, "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374,44\n2023-11-16 18:15:47,x,3\n",
     "line 3: ContextTokens must be a whole number"),
    (read_length_csv, "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,374,44\n", "line 2: bad timestamp"),
    (read_length_csv, "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374\n", "line 2: 2 fields"),
    (read_length_csv, ("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                      "0.5,ChatGPT,10,-4,6,Conversation log\n"), "line 2: Response tokens must be at least 0"),
    (read_length_csv, "time,prompt,output\n1,2,3\n", "line 1: unknown CSV header"),
    (read_mooncake_trace, '{"timestamp": 0, "output_length": 5}\n', "needs 'input_length'"),
    (read_mooncake_trace, '{"timestamp": 0, "input_length": 5}\n', "needs 'output_length'"),
    (read_mooncake_trace, '{"timestamp": "soon", "input_length": 5, "output_length": 5}\n',
     "line 1: 'timestamp' must be milliseconds"),
    (read_mooncake_trace, '{"timestamp": 0, "input_length": 5, "output_length": 5}\n{"input_length": 5, '
                          '"output_length": 2.5}\n', "line 2: output_length must be a whole number"),
    (read_mooncake_trace, '{"timestamp": 0, "input_length": 5, "output_length": 5}\n{"input_length": 5, '
                          '"output_length": 2}\n', "line 2: no 'timestamp', while other rows have one"),
])
def test_a_malformed_line_is_reported_with_file_and_line(tmp_path, reader, text, message):
    path = tmp_path / ("bad.csv" if reader is read_length_csv else "bad.jsonl")
    path.write_text(text)
    with pytest.raises(WorkloadError, match=message) as info:
        reader(path)
    assert str(path) in str(info.value)


def test_a_bad_prompt_line_names_its_line(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "fine"}) + "\n" + json.dumps({"prompt": "  "}) + "\n")
    with pytest.raises(WorkloadError, match=r"prompts.jsonl, line 2: needs 'prompt'"):
        read_requests(path)


def test_the_cli_reports_a_malformed_line_in_red_with_exit_code_2(tmp_path):
    path = tmp_path / "trace.jsonl"
    path.write_text('{"arrival": 0, "prompt": "a"}\n{"arrival": 1}\n')
    result = runner.invoke(app, ["compare", "--workload", str(path), "--out-dir", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert f"error: {path}, line 2: needs 'prompt', 'text'" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["compare", "--workload", str(tmp_path / "missing.csv")])
    assert result.exit_code == 2 and "no such file" in result.output


def test_gzip_compressed_prompt_files_and_length_traces_read_like_plain_ones(tmp_path):
    """Public sets ship compressed: `.jsonl.gz`, `.json.gz` and `.csv.gz` read as their plain forms."""
    import gzip

    plain = tmp_path / "p.jsonl"
    plain.write_text('{"prompt": "a"}\n{"question": "b"}\n')
    packed = tmp_path / "p.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert read_requests(packed) == read_requests(plain)
    listed = tmp_path / "l.json.gz"
    listed.write_bytes(gzip.compress(b'[{"instruction": "x", "input": ""}]'))
    assert read_requests(listed)[1][0].messages == ({"role": "user", "content": "x"},)
    csv_plain = tmp_path / "t.csv"
    csv_plain.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n")
    csv_packed = tmp_path / "t.csv.gz"
    csv_packed.write_bytes(gzip.compress(csv_plain.read_bytes()))
    assert read_requests(csv_packed) == read_requests(csv_plain)
    assert read_requests(csv_packed)[0] == "lengths"


def test_a_chat_export_with_a_timestamp_is_prompts_not_a_trace(tmp_path):
    """WildChat records carry when they were recorded; only `arrival` or `offset` make a chat file a trace. A
    first line longer than any read-ahead is still detected."""
    chat = tmp_path / "wildchat.jsonl"
    chat.write_text(json.dumps({"timestamp": 1680000000000, "conversation": [{"role": "user", "content": "Hi"}]})
                    + "\n")
    assert detect_kind(chat) == "prompts"
    timed = tmp_path / "timed.jsonl"
    timed.write_text(json.dumps({"offset": 1.5, "conversation": [{"role": "user", "content": "Hi " * 40000}]})
                     + "\n")
    assert detect_kind(timed) == "trace"
    assert read_requests(timed)[1][0].offset_s == 0.0


def test_an_unreadable_workload_is_a_workload_error(tmp_path):
    bad = tmp_path / "t.csv.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(WorkloadError, match="t.csv.gz: cannot read it"):
        read_requests(bad)
