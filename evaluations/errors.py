"""User-facing error types of the evaluator.

Every problem the user can fix (a bad npz, a wrong checksum, a mismatched resolution) raises an
``EvalError`` with one sentence that names the file; the CLI turns it into ``error: ...`` and
exit code 2 without a traceback. Anything else is a bug and keeps its traceback.
"""


class EvalError(ValueError):
    """A problem with the user's inputs or environment, reported without a traceback."""


class ChecksumError(EvalError):
    """A file's sha256 differs from the recorded or expected one."""


class DownloadError(EvalError):
    """A transfer failed; a partial file may be kept for a later resume."""
