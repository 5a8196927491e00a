"""The one error type users see.

A :class:`ReactomoError` carries one clear sentence that names what was received and what would work. Pages show
``str(err)`` (never a traceback); the CLI prints it to stderr and exits with status 2. It subclasses
``ValueError`` so callers that only know the standard library still catch it.
"""

from __future__ import annotations


class ReactomoError(ValueError):
    """Bad input or a request that cannot be carried out; the message is one sentence for the user."""
