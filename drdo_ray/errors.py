"""Errors meant for the person at the terminal: the CLI prints them as one line, no traceback."""


class UserError(Exception):
    """Bad input or configuration that the user can fix."""
