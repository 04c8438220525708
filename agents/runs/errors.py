"""Errors of a run that are the user's to fix (exit 2 on the command line, one line). They import nothing heavy, so
that the CLI can catch them without loading torch first; the modules that raise them import them from here."""

from __future__ import annotations


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupted or does not fit the run's configuration."""


class RunSaveError(OSError):
    """Writing a run's files failed (a full disk, a lost mount...); the message names what is still intact."""
