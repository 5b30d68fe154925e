"""The one exception type for input a user got wrong.

The CLI prints its message as a single line and exits with status 2; the Python API lets it
propagate. Everything else that goes wrong is a bug and keeps its traceback.
"""


class UserInputError(ValueError):
    """Bad input from a user: the message names what is wrong and how to fix it."""
