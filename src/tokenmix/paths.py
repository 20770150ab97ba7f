"""Where tokenmix keeps files it generates: the cache folder (task data) and the results database."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache folder: `$TOKENMIX_CACHE` if set, else `~/.cache/tokenmix` (created on first use by callers)."""
    override = os.environ.get("TOKENMIX_CACHE")
    return Path(override).expanduser() if override else Path.home() / ".cache" / "tokenmix"


def default_database() -> Path:
    """The results database: `$TOKENMIX_DB` if set, else `results.sqlite` in the cache folder."""
    override = os.environ.get("TOKENMIX_DB")
    return Path(override).expanduser() if override else cache_dir() / "results.sqlite"
