"""llama.cpp's warnings go to the `llama.cpp` logger, not to the terminal (llama-cpp-python's own
level map is stale and prints them even with verbose=False)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest


def test_llama_cpp_warnings_are_logged_not_printed(
    bundled_model: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from tunelab.engine.chat_template import gguf_template

    with caplog.at_level(logging.WARNING, logger="llama.cpp"):
        gguf_template(bundled_model)  # a vocabulary-only load: llama.cpp warns "n_ctx_seq (512) > n_ctx_train (0)"
    assert "n_ctx_train" not in capfd.readouterr().err
    assert any("n_ctx_train" in record.getMessage() for record in caplog.records if record.name == "llama.cpp")
