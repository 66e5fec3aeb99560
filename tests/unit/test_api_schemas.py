"""Request validation that needs no database: what a caller may send."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from elis.api.schemas import JobCreate


def test_a_plain_prompt_becomes_one_user_message():
    job = JobCreate(prompt="Hello")
    assert job.chat() == [{"role": "user", "content": "Hello"}]
    assert job.prompt_text() == "Hello"


def test_chat_messages_keep_their_roles_and_the_last_user_turn_is_the_prompt_text():
    job = JobCreate(messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert [m["role"] for m in job.chat()] == ["system", "user"]
    assert job.prompt_text() == "Hi"


def test_a_single_stop_string_is_accepted_as_a_list():
    assert JobCreate(prompt="x", stop="END").stop == ["END"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"prompt": ""},
        {"prompt": "x", "messages": [{"role": "user", "content": "y"}]},
        {"messages": []},
        {"prompt": "x", "top_p": 0},
        {"prompt": "x", "temperature": 3},
        {"prompt": "x", "stop": [""]},
        {"prompt": "x", "target_output_tokens": 0},
        {"prompt": "x", "unknown": 1},
    ],
)
def test_invalid_requests_are_rejected(body):
    with pytest.raises(ValidationError):
        JobCreate(**body)
