"""Reading OpenAI batch input files: what runs, what fails one request, what fails the file."""

from __future__ import annotations

import json

import pytest

from elis.replay.openai_batch import BatchFileError, parse_batch, parse_request


def line(custom_id="r1", url="/v1/chat/completions", **body) -> str:
    body = body or {"model": "any", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def test_a_chat_line_becomes_a_jobs_body_with_its_sampling_settings():
    requests, errors = parse_batch(
        line(
            messages=[
                {"role": "developer", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "Name "}, {"type": "text", "text": "a river"}],
                },
            ],
            max_completion_tokens=16,
            temperature=0.0,
            stop="\n",
            model="gpt-4o-mini",
        )
    )
    assert errors == []
    assert requests[0].custom_id == "r1" and requests[0].is_chat
    assert requests[0].job_body() == {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a river"}],
        "max_tokens": 16,
        "temperature": 0.0,
        "stop": "\n",
    }


def test_a_completions_line_keeps_its_raw_prompt():
    requests, _ = parse_batch(
        line(url="/v1/completions", prompt=["Once upon a time"], max_tokens=5), endpoint="/v1/completions"
    )
    assert requests[0].prompt == "Once upon a time" and requests[0].messages is None
    assert requests[0].job_body() == {"prompt": "Once upon a time", "max_tokens": 5}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"method": "POST", "url": "/v1/chat/completions", "body": {}},
            "'custom_id' must be a non-empty string",
        ),
        ({"custom_id": "a", "url": "/v1/embeddings", "body": {}}, "'url' must be one of"),
        ({"custom_id": "a", "url": "/v1/chat/completions", "body": {"messages": []}}, "non-empty 'messages'"),
        (
            {
                "custom_id": "a",
                "url": "/v1/chat/completions",
                "body": {"messages": [{"role": "user", "content": "x"}], "n": 3},
            },
            "only n = 1",
        ),
        (
            {
                "custom_id": "a",
                "url": "/v1/chat/completions",
                "body": {"messages": [{"role": "user", "content": "x"}], "tools": []},
            },
            "unsupported body fields: tools",
        ),
        ({"custom_id": "a", "url": "/v1/completions", "body": {"prompt": 42}}, "'prompt' as one string"),
        ({"custom_id": "a", "url": "/v1/chat/completions", "method": "GET", "body": {}}, "must be POST"),
    ],
)
def test_a_malformed_request_fails_alone_with_its_line_number_and_reason(row, message):
    with pytest.raises(ValueError, match=message) as caught:
        parse_request(7, row)
    assert str(caught.value).startswith("line 7: ")


def test_a_bad_line_among_good_ones_is_reported_and_the_others_run():
    text = "\n".join(
        [line("a"), json.dumps({"custom_id": "b", "url": "/v1/chat/completions", "body": {}}), "", line("c")]
    )
    requests, errors = parse_batch(text)
    assert [r.custom_id for r in requests] == ["a", "c"]
    assert [(e.line_number, e.custom_id) for e in errors] == [(2, "b")]


def test_a_line_of_another_endpoint_fails_alone():
    requests, errors = parse_batch(
        line("a") + "\n" + line("b", url="/v1/completions", prompt="x"), endpoint="/v1/chat/completions"
    )
    assert [r.custom_id for r in requests] == ["a"] and errors[0].code == "mismatched_url"


@pytest.mark.parametrize(
    ("text", "line_number", "message"),
    [
        (line("a") + "\n{not json\n", 2, "not valid JSON"),
        ('["a list"]\n', 1, "expected a JSON object"),
        ("\n\n", 1, "no requests"),
        (line("a") + "\n" + line("a"), 2, "repeats line 1"),
    ],
)
def test_a_file_that_is_not_jsonl_fails_whole_naming_the_line(text, line_number, message):
    with pytest.raises(BatchFileError, match=message) as caught:
        parse_batch(text)
    assert caught.value.line_number == line_number


def test_replay_reads_an_openai_batch_file_as_the_same_prompts(tmp_path):
    from elis.prompts import read_prompts

    path = tmp_path / "batch.jsonl"
    path.write_text(line("q1") + "\n" + line("q2", url="/v1/completions", prompt="Once") + "\n")
    items = read_prompts(path)
    assert [(i.id, i.messages) for i in items] == [
        ("q1", ({"role": "user", "content": "Hi"},)),
        ("q2", ({"role": "user", "content": "Once"},)),
    ]
