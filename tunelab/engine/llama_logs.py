"""llama.cpp's log lines go to Python logging; only its errors reach the terminal.

llama-cpp-python's own callback maps ggml's log levels with an old enum (NONE, INFO, WARN,
ERROR...), while the bundled ggml has DEBUG=1, INFO=2, WARN=3, ERROR=4: every warning is taken
for an error and printed even with `verbose=False` (seen: "llama_context: n_ctx_seq (512) >
n_ctx_train (0)" when loading an adapter, "llama_kv_cache_iswa: using full-size SWA cache" when
chatting with Gemma 3). This callback reads the levels right and sends everything below ERROR
to the `llama.cpp` logger, where `--verbose`-style handlers can still pick it up.
"""

from __future__ import annotations

import ctypes
import logging
import sys

import llama_cpp

LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
"""ggml_log_level (ggml.h of the bundled llama.cpp) -> logging level; 5 (CONT) continues the previous line's level."""

logger = logging.getLogger("llama.cpp")
logger.addHandler(logging.NullHandler())  # else, with no logging set up, Python's last-resort handler prints warnings
_last_level = logging.DEBUG


@llama_cpp.llama_log_callback
def _callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    global _last_level
    py_level = _last_level if level == 5 else LEVELS.get(level, logging.DEBUG)
    _last_level = py_level
    message = text.decode("utf-8", errors="replace")
    if py_level >= logging.ERROR:
        print(message, end="", flush=True, file=sys.stderr)
    elif logger.isEnabledFor(py_level):
        logger.log(py_level, message.rstrip("\n"))


def install() -> None:
    """Route llama.cpp's (and ggml's) logging through `_callback` (idempotent; kept alive at module level)."""
    llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))


install()
