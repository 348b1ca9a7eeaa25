"""The one base class for problems the user can fix: main.py prints the message and exits 2."""


class UserError(Exception):
    """A bad config, flag, dataset, weights file or output path: the message says what and where.

    Each module raises its own subclass so a reader sees where an error comes from; main.py catches
    them all here and prints `Error: <message>` without a traceback.
    """

    exit_code = 2
