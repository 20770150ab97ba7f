"""Errors raised at tokenmix's boundaries.

Every bad input raises `MixerInputError` (a `ValueError`) whose message names the mixer (or op), what was
expected and what was given. The CLI turns these into one line and a non-zero exit.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TokenmixError(Exception):
    """Base class of tokenmix's own errors."""


class MixerInputError(TokenmixError, ValueError):
    """An input, option or name that a mixer, op, task or command cannot accept."""


def unknown_name(kind: str, name: object, valid: Iterable[str], owner: str | None = None) -> MixerInputError:
    """Build the error for a name that is not among `valid`, listing the valid ones and the closest match."""
    valid = sorted(valid)
    close = difflib.get_close_matches(str(name), valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    prefix = f"{owner}: " if owner else ""
    return MixerInputError(f"{prefix}unknown {kind} {name!r}; valid: {', '.join(valid) or '(none)'}.{hint}")
