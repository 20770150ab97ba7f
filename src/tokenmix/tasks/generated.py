"""Generated task data cached on disk: a safetensors file per parameter set, written atomically, and the last few
files kept in memory so repeated `split` calls do not reread them."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

from safetensors.torch import load_file, save_file
from torch import Tensor

from tokenmix.paths import cache_dir

_LOADED: OrderedDict[Path, dict[str, Tensor]] = OrderedDict()
_KEEP = 2


def cache_path_for(task_name: str, description: dict[str, Any]) -> Path:
    """`<cache>/tasks/<task_name>/<hash of description>.safetensors`."""
    digest = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / "tasks" / task_name / f"{digest}.safetensors"


def load_or_generate(path: Path, generate: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
    """The tensors stored at `path`, generated (and stored) first when the file does not exist."""
    if path in _LOADED:
        _LOADED.move_to_end(path)
        return _LOADED[path]
    if path.exists():
        tensors = load_file(path)
    else:
        tensors = generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(handle)
        try:
            save_file(tensors, temporary)
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
    _LOADED[path] = tensors
    while len(_LOADED) > _KEEP:
        _LOADED.popitem(last=False)
    return tensors
