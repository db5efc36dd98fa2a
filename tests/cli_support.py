"""The `tunelab` command in this process, for the checks that need only its exit status and one-line error.

A real `python -m tunelab.cli` process spends 1.5-2.3 s (measured on the idle 2-core machine,
more under load) starting up before it refuses a bad flag; click's runner takes the same command group (`tunelab.cli:cli`, whose
`TunelabGroup` turns user errors into the same one line) without that start-up. Real processes
stay where the process is the point: kill -9, concurrency, stdin, Ctrl-C, servers, and anything
that loads llama.cpp (its C-level log lines reach only a real process's stderr).
"""

from __future__ import annotations

import subprocess

from click.testing import CliRunner

from tunelab.cli import cli


def invoke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`tunelab ARGS` through click's runner, shaped as a finished process so the same checks read it.

    Exceptions are not caught: one the CLI would have shown as a traceback fails the test with it."""
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return subprocess.CompletedProcess(["tunelab", *args], result.exit_code, result.stdout, result.stderr)


def assert_clean_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    """Exit status 1 and one line on stderr that says what went wrong, no traceback."""
    assert result.returncode == 1, result.stderr
    assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
