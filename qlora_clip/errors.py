"""The error type for bad user input, in a module of its own so library code never imports the CLI."""
from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input; the message names the flag or path at fault and what to do."""
