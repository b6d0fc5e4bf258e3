"""The one error type for what a user can fix: a wrong option, a missing or malformed file, an unknown name.

Raised with a message that says what is wrong and how to fix it; `python -m bench` prints it as one `error:`
line and exits 2 (--debug shows the traceback). Anything else that escapes is a bug and keeps its traceback.
Each layer's own errors (suite files, assets, checkpoints, training configs) subclass it.
"""


class UserError(Exception):
    """An input the user can fix; str(error) is the one line shown to them."""
