"""Reading prompt corpora: Alpaca, seed tasks, plain prompts and chat messages."""

from __future__ import annotations

import json

import pytest

from elis.prompts import PromptFileError, read_prompts, sample


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_alpaca_records_join_instruction_and_input(tmp_path):
    path = write(tmp_path, "a.json", json.dumps([{"instruction": "Translate.", "input": "Hola", "output": "x"},
                                                  {"instruction": "Say hi.", "input": ""}]))
    items = read_prompts(path, "alpaca")
    assert [i.text for i in items] == ["Translate.\n\nHola", "Say hi."]
    assert items[0].id == "alpaca-0"


def test_jsonl_accepts_prompts_chat_messages_and_seed_tasks(tmp_path):
    lines = [{"prompt": "p1"}, {"messages": [{"role": "user", "content": "m1"}]},
             {"id": "seed_task_1", "instruction": "Do it.", "instances": [{"input": "now", "output": ""}]}]
    items = read_prompts(write(tmp_path, "b.jsonl", "\n".join(json.dumps(x) for x in lines)))
    assert [i.text for i in items] == ["p1", "m1", "Do it.\n\nnow"]
    assert items[2].id == "seed_task_1"


def test_a_bad_record_names_its_position(tmp_path):
    with pytest.raises(PromptFileError, match="record 1"):
        read_prompts(write(tmp_path, "c.jsonl", '{"prompt": "ok"}\n{"nothing": 1}\n'))
    with pytest.raises(PromptFileError, match="not valid JSON"):
        read_prompts(write(tmp_path, "d.jsonl", "{oops"))
    with pytest.raises(PromptFileError, match="no such"):
        read_prompts(tmp_path / "missing.json")


def test_sampling_is_deterministic_and_keeps_all_when_asked_for_more(tmp_path):
    items = read_prompts(write(tmp_path, "e.jsonl", "\n".join(json.dumps({"prompt": f"p{i}"}) for i in range(20))))
    assert sample(items, 5, seed=1) == sample(items, 5, seed=1)
    assert sample(items, 50) == items
