"""The one base of every mistake a person can make in what they ask for.

A wrong option, preset, file, URI or config raises a `UserError` whose message names the input and what is
wrong with it. The `tempme` command catches this base once and prints the message on one line with exit
status 2; anything else is a bug and keeps its traceback. It is a ValueError, so library callers that catch
ValueError keep working.
"""


class UserError(ValueError):
    """A mistake in the input; the message names the input and what is wrong."""


class NotFound(UserError, FileNotFoundError):
    """A named file, folder or URI that holds nothing usable."""
