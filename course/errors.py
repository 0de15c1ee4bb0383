"""User mistakes: one clear line, exit code 2, no traceback."""


class UserError(Exception):
    """A mistake the user can fix. The message is one sentence naming what was expected and where."""

    exit_code = 2
