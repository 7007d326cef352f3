"""The errors a user can act on.

Each carries one line of text and the exit code the command ends with; the
CLI prints ``iabulk: <message>`` and exits, never a traceback.
"""

from __future__ import annotations


class IabulkError(Exception):
    """Base class: a problem with the input or the environment, not a bug."""

    exit_code = 2


class UsageError(IabulkError):
    """Bad flags or arguments."""


class JobLogError(IabulkError):
    """The job log cannot be used: missing, unreadable, locked, or for another run."""


class DestinationError(IabulkError):
    """A destination directory became unusable during a run (read-only, gone)."""


class SourceError(IabulkError):
    """The source of items (search, item list, identifiers) cannot be resolved."""

    exit_code = 1


class TransientSourceError(SourceError):
    """The source failed in a way that trying again may cure (a search page
    cut off mid-body, a connection reset, retries of a 5xx exhausted)."""
