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


def test_every_command_list_shows_whole_summaries_in_an_80_column_terminal():
    """Click cuts a command's docstring to fit the list, ending it with '...': every command says its summary
    whole (short_help), at the width of an ordinary terminal."""
    groups = [[]] + [[name] for name in ("predictor", "simulate", "bench", "keys", "models", "db")]
    for group in groups:
        result = runner.invoke(app, [*group, "--help"], terminal_width=80)
        assert result.exit_code == 0
        listing = result.output.split("Commands:", 1)[1]
        cut = [line.strip() for line in listing.splitlines() if line.rstrip().endswith("...")]
        assert not cut, (group, cut)


def test_an_unknown_policy_is_refused_with_the_choices():
    result = runner.invoke(app, ["demo", "--policies", "fastest"])
    assert result.exit_code != 0
    assert "unknown policy 'fastest'" in result.output


def test_dtype_auto_is_bfloat16_only_where_the_cpu_or_a_gpu_computes_it_natively(monkeypatch):
    from elis import config

    assert config.cpu_has_native_bf16("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    assert config.cpu_has_native_bf16("Features\t: fp asimd bf16\n")  # ARM
    assert not config.cpu_has_native_bf16("flags\t\t: fpu sse avx2 avx512f avx512_vnni\n")  # AVX-512, no BF16
    assert not config.cpu_has_native_bf16("")
    monkeypatch.setattr(config, "has_gpu", lambda: False)
    monkeypatch.setattr(config, "cpu_has_native_bf16", lambda cpuinfo=None: False)
    assert config.Settings(dtype="auto").dtype == "float32"
    assert config.Settings(dtype="bfloat16").dtype == "bfloat16"  # an explicit choice stands
    monkeypatch.setattr(config, "has_gpu", lambda: True)
    assert config.Settings(dtype="auto").dtype == "bfloat16"
