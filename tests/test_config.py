"""Settings precedence: defaults < config.toml < environment < flags."""

from __future__ import annotations

import pytest

from tunelab.config import Settings
from tunelab.errors import TunelabError


def test_precedence(home, monkeypatch):
    home.mkdir(parents=True)
    (home / "config.toml").write_text('n_ctx = 1024\nmodel = "from-file"\n')
    assert Settings.load().n_ctx == 1024
    monkeypatch.setenv("TUNELAB_N_CTX", "2048")
    settings = Settings.load(model="from-flag")
    assert settings.n_ctx == 2048 and settings.model == "from-flag"
    assert settings.db_path == home / "tunelab.db"


def test_bad_config_is_one_clear_error(home, monkeypatch):
    home.mkdir(parents=True)
    (home / "config.toml").write_text("n_ctx = [\n")
    with pytest.raises(TunelabError, match="cannot read"):
        Settings.load()
    (home / "config.toml").write_text("colour = 'red'\n")
    with pytest.raises(TunelabError, match="unknown key"):
        Settings.load()
    (home / "config.toml").write_text("")
    monkeypatch.setenv("TUNELAB_N_CTX", "lots")
    with pytest.raises(TunelabError, match="must be an integer"):
        Settings.load()
    monkeypatch.setenv("TUNELAB_N_CTX", "10")
    with pytest.raises(TunelabError, match="n_ctx must be at least"):
        Settings.load()
