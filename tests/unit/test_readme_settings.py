"""The README's settings table lists every Settings field with its default and a meaning."""

from __future__ import annotations

from elis.config import Settings
from elis.settings_doc import README, readme_table, settings_rows, settings_table


def test_every_setting_has_a_meaning():
    assert [name for name, _, meaning in settings_rows() if not meaning] == []


def test_the_readme_table_lists_every_setting_with_its_current_default():
    table = readme_table(README.read_text())
    missing = [
        f"ELIS_{name.upper()}" for name in Settings.model_fields if f"`ELIS_{name.upper()}`" not in table
    ]
    assert missing == [], f"missing from README.md: {missing}; run `python -m elis.settings_doc --write`"
    assert table == settings_table(), (
        "README.md's settings table is stale: run `python -m elis.settings_doc --write`"
    )
