"""Exceptions shared by the programs, kept torch-free so `python -m adm` can report them cheaply."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the last good checkpoint is kept on disk."""
