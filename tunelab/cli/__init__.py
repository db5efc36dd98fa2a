"""The `tunelab` command: noun groups with verbs; a bare `tunelab` starts the TUI.

User errors are `TunelabError`s: printed as one line (no traceback), exit status 1.
"""

from __future__ import annotations

import errno
import sqlite3
import sys

import click

from tunelab.cli.app_context import AppContext, pass_app
from tunelab.errors import TunelabError


class UserError(click.ClickException):
    """A TunelabError on its way out of click: one line on stderr, the error's exit status."""

    def __init__(self, error: TunelabError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code  # type: ignore[misc]  # click types it a ClassVar, but reads it from the instance

    def show(self, file: object = None) -> None:
        click.echo(f"error: {self.message}", err=True)


FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
"""A full disk, a file-size limit or a quota: the user frees space, it is not a bug."""
SQLITE_WRITE_ERRORS = {"SQLITE_FULL", "SQLITE_IOERR_WRITE", "SQLITE_IOERR_FSYNC", "SQLITE_IOERR_TRUNCATE", "SQLITE_IOERR_SHMSIZE"}
"""What SQLite reports when the disk fills: FULL for ENOSPC, IOERR_WRITE for a file-size limit (EFBIG)."""


def disk_full(exc: BaseException) -> TunelabError | None:
    """The one-line error for a write that ran out of space (OS write or SQLite), else None.

    Every write is atomic (temp file + rename, or one transaction), so the previous state is intact."""
    short_write = isinstance(exc, OSError) and exc.errno is None and " requested and " in str(exc)  # numpy's tofile
    if isinstance(exc, OSError) and (exc.errno in FULL_ERRNOS or short_write):
        where = f" writing {exc.filename}" if exc.filename else ""
        return TunelabError(f"out of disk space{where} ({exc.strerror or exc}): nothing was half-written; free some space and run it again")
    if isinstance(exc, sqlite3.OperationalError) and getattr(exc, "sqlite_errorname", "") in SQLITE_WRITE_ERRORS:
        return TunelabError(
            f"could not write the database ({exc}: is the disk full?): the change was rolled back; free some space and run it again"
        )
    return None


class TunelabGroup(click.Group):
    """Turns user errors raised anywhere in a command into `UserError`, also under click's test runner."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except TunelabError as exc:
            raise UserError(exc) from None
        except (OSError, sqlite3.OperationalError) as exc:
            if (full := disk_full(exc)) is None:
                raise
            raise UserError(full) from None


@click.group(cls=TunelabGroup, invoke_without_command=True)
@click.option("--home", type=click.Path(file_okay=False), default=None, help="Data dir (default: $TUNELAB_HOME or the XDG data dir).")
@click.option(
    "--engine-url", default=None, metavar="URL", help="The app answers through this OpenAI-compatible server instead of llama.cpp here."
)
@click.version_option(package_name="tunelab")
@click.pass_context
def cli(ctx: click.Context, home: str | None, engine_url: str | None) -> None:
    """tunelab: chat with a local model, add chosen examples, fine-tune, compare."""
    ctx.obj = AppContext(home=home, engine_url=engine_url)
    if ctx.invoked_subcommand is None:
        from tunelab.tui.app import TunelabApp

        TunelabApp(ctx.obj.settings, ctx.obj.conn).run()


def _register() -> None:
    from tunelab.cli import adapters, bank, chat, compare, curve, distill, doctor, feedback, history, models, tokens, train

    for module in (adapters, bank, chat, compare, curve, doctor, feedback, history, models, tokens, train):
        cli.add_command(module.command)
    cli.add_command(feedback.rate)
    cli.add_command(compare.reports)
    bank.command.add_command(distill.command)


_register()


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


__all__ = ["cli", "main", "pass_app"]
