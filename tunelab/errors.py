"""The one exception type that reaches the user.

Anything the user can fix (a missing file, a bad flag, a bank that does not exist) is raised as
`TunelabError` with a single-line message; the CLI prints it without a traceback and exits 1,
the TUI shows it as a notification. Everything else is a bug and keeps its traceback.
"""


class TunelabError(Exception):
    """A user-facing error whose message is one line and says what to do."""

    exit_code = 1
