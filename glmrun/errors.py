"""The one exception type glmrun raises for problems a user can cause (bad files, bad arguments).

Its message is a single line that says what was wrong and what to do. Programming errors inside glmrun are
not wrapped: they keep their own types and tracebacks.
"""


class GlmrunError(Exception):
    """A problem with the user's input: a file, a folder, a request or an argument."""
