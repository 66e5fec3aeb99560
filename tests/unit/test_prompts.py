"""Reading prompt corpora: Alpaca, seed tasks, plain prompts and chat messages."""

from __future__ import annotations

import json
import re

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


def _one(tmp_path, record: dict):
    path = tmp_path / "set.jsonl"
    path.write_text(json.dumps(record) + "\n")
    return read_prompts(path)[0].messages


def test_sharegpt_and_lmsys_conversations_replay_their_first_user_turn(tmp_path):
    """The replies in a recorded conversation came from another model: only the first user turn (with a
    system turn before it) is sent, in OpenAI's roles."""
    sharegpt = {"id": "s1", "conversations": [{"from": "system", "value": "Be brief."},
                                              {"from": "human", "value": "Name a prime."},
                                              {"from": "gpt", "value": "7"}, {"from": "human", "value": "Another?"}]}
    assert _one(tmp_path, sharegpt) == ({"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "Name a prime."})
    lmsys = {"conversation_id": "c1", "conversation": [{"role": "system", "content": ""},
                                                       {"role": "user", "content": "Hi"},
                                                       {"role": "assistant", "content": "Hello"}]}
    assert _one(tmp_path, lmsys) == ({"role": "user", "content": "Hi"},)


def test_messages_keep_the_turns_up_to_the_last_user_turn(tmp_path):
    """A recorded reply at the end of `messages` (UltraChat) is the answer, not part of the request."""
    record = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                           {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}
    assert [m["content"] for m in _one(tmp_path, record)] == ["a", "b", "c"]


@pytest.mark.parametrize("record, text", [
    ({"problem": "Solve x+1=2."}, "Solve x+1=2."),                       # MATH
    ({"query": "What is 2+2?"}, "What is 2+2?"),                          # MetaMathQA
    ({"instruction": "Summarize.", "context": "A long text."}, "Summarize.\n\nA long text."),  # Dolly
])
def test_text_fields_of_common_sets(tmp_path, record, text):
    assert _one(tmp_path, record) == ({"role": "user", "content": text},)


@pytest.mark.parametrize("record, message", [
    ({"conversations": [{"from": "gpt", "value": "hi"}]}, "has no user turn"),
    ({"conversation": [{"role": "user"}]}, "'conversation' turn 0: content must be text"),
    ({"messages": "hello"}, "'messages' must be a non-empty list of {role, content}"),
    ({"answer": "42"}, "needs 'prompt', 'text', 'question', 'problem'"),
])
def test_records_without_a_prompt_say_what_is_missing(tmp_path, record, message):
    with pytest.raises(PromptFileError, match=re.escape(message)):
        _one(tmp_path, record)


def test_only_the_turns_sent_are_checked_and_nulls_count_as_absent(tmp_path):
    """A malformed recorded reply after the turn sent does not reject the record; null columns of a mixed
    export are absent; OpenAI's list-of-parts content is joined; a record's id may be WildChat's hash."""
    record = {"conversation_hash": "h1", "messages": None, "conversation": [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image_url", "image_url": {}}]},
        {"role": "assistant", "content": None}, {"role": "tool", "content": 3}]}
    path = tmp_path / "w.jsonl"
    path.write_text(json.dumps(record) + "\n")
    item = read_prompts(path)[0]
    assert item.id == "h1" and item.messages == ({"role": "user", "content": "Hi"},)


@pytest.mark.parametrize("record, message", [
    ({"messages": [{"role": "tool", "content": "x"}, {"role": "user", "content": "y"}]},
     "'messages' turn 0: role 'tool' is not user, assistant or system"),
    ({"messages": [{"role": "user", "content": 5}]}, "'messages' turn 0: content must be text"),
    ({"instruction": 5, "instances": [{"input": ""}]}, "'instruction' must be non-empty text"),
    ({"instruction": "x", "instances": "abc"}, "a seed task needs 'instruction' text and 'instances'"),
])
def test_malformed_turns_and_seed_tasks_name_what_is_wrong(tmp_path, record, message):
    with pytest.raises(PromptFileError, match=re.escape(message)):
        _one(tmp_path, record)


def test_files_that_are_not_utf8_gzip_or_whole_are_reported_not_raised(tmp_path):
    """A byte-order mark is dropped; gzip is told by its bytes (any name, any case); a broken or non-UTF-8
    file is a PromptFileError naming the file."""
    import gzip

    bom = tmp_path / "bom.jsonl"
    bom.write_bytes("\ufeff".encode() + b'{"prompt": "a"}\n')
    assert read_prompts(bom)[0].text == "a"
    upper = tmp_path / "x.JSONL.GZ"
    upper.write_bytes(gzip.compress(b'{"prompt": "b"}\n'))
    assert read_prompts(upper)[0].text == "b"
    truncated = tmp_path / "t.jsonl.gz"
    truncated.write_bytes(gzip.compress(b'{"prompt": "c"}\n' * 100)[:30])
    with pytest.raises(PromptFileError, match="t.jsonl.gz: cannot read it"):
        read_prompts(truncated)
    latin = tmp_path / "l.jsonl"
    latin.write_bytes('{"prompt": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(PromptFileError, match="not UTF-8 text"):
        read_prompts(latin)
