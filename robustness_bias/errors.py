"""The one base of the errors a user can fix: a bad setting, unreadable data, missing weights, a busy folder.

Each message names the problem and the fix in one line; the command line catches :class:`UserError` once
and prints that line (exit code 2) instead of a traceback. Errors of our own code stay tracebacks.
"""


class UserError(Exception):
    """A problem with what the user gave (settings, files, folders); the message says how to fix it."""
