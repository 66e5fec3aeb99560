"""`elis flower`: authentication is required and secrets stay out of the command line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from elis.cli import app
from elis.config import Settings
from elis.flower import FlowerConfigError, broker_api_url, flower_command


def test_flower_refuses_to_start_without_a_password():
    result = CliRunner().invoke(app, ["flower"], env={"ELIS_FLOWER_PASSWORD": ""})
    assert result.exit_code == 2 and "ELIS_FLOWER_PASSWORD" in result.output


def test_credentials_and_the_management_api_go_through_the_environment_not_argv(monkeypatch):
    monkeypatch.setenv("FLOWER_UNKNOWN_OPTION", "x")  # Flower fails on FLOWER_* names it does not know
    settings = Settings(
        broker_url="amqp://elis:s3cr%40t@rabbit:5672//", flower_user="ops", flower_password="pw"
    )
    args, env = flower_command(settings, 5600, "0.0.0.0")
    assert args[-3:] == ["flower", "--port=5600", "--address=0.0.0.0"]
    assert not any("pw" in a or "s3cr" in a for a in args)
    assert env["FLOWER_BASIC_AUTH"] == "ops:pw"
    assert env["FLOWER_BROKER_API"] == "http://elis:s3cr%40t@rabbit:15672/api/"
    assert "FLOWER_UNKNOWN_OPTION" not in env


def test_an_explicit_management_url_wins_and_bad_user_names_are_refused():
    assert broker_api_url(Settings(broker_api_url="https://mq.example/api/")) == "https://mq.example/api/"
    with pytest.raises(FlowerConfigError, match="must not contain"):
        flower_command(Settings(flower_user="a:b", flower_password="pw"), 5555, "127.0.0.1")
