"""The command line: help texts and clear errors for bad options."""

from __future__ import annotations

from typer.testing import CliRunner

from elis.cli import app

runner = CliRunner()


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "worker", "flower", "replay", "simulate", "predictor", "models", "db", "demo", "bench"):
        assert command in result.output


def test_an_unknown_policy_is_refused_with_the_choices():
    result = runner.invoke(app, ["demo", "--policies", "fastest"])
    assert result.exit_code != 0
    assert "unknown policy 'fastest'" in result.output
