"""The one on-disk cache of generated task data: a safetensors file per parameter set, written atomically, and the
last few files kept in memory so repeated `split` calls do not reread them.

Every generated task (tokens, pixels, images, PDE fields) goes through `load_or_generate`. The file is named by a
hash of the task's parameters and its generator's format version (`cache_path_for`), so a second run with the same
parameters reads the file, and any change of a parameter or of the generator gets a new file. It is written to a
temporary file and renamed, so a reader never sees a half-written file.
"""

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

Tensors = dict[str, Tensor]

_LOADED: OrderedDict[Path, Tensors] = OrderedDict()
_KEEP = 4


def cache_path_for(task_name: str, description: dict[str, Any]) -> Path:
    """`<cache>/tasks/<task_name>/<hash of description>.safetensors`."""
    digest = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / "tasks" / task_name / f"{digest}.safetensors"


def load_or_generate(path: Path, generate: Callable[[], Tensors], *, stored: Callable[[Tensors], Tensors] | None = None,
                     loaded: Callable[[Tensors], Tensors] | None = None) -> Tensors:
    """The tensors stored at `path`, generated (and stored) first when the file does not exist.

    `stored` maps freshly generated tensors to what is written (e.g. token ids narrowed to int16) and `loaded`
    maps what is read back to what callers get (e.g. widened to int64); a freshly generated set is returned as
    generated. The path is the memo key, so pointing TOKENMIX_CACHE elsewhere reads (or writes) that folder.
    Callers must not modify the returned tensors in place: they are shared by later calls.
    """
    if path in _LOADED:
        _LOADED.move_to_end(path)
        return _LOADED[path]
    if path.exists():
        tensors = load_file(path)
        if loaded is not None:
            tensors = loaded(tensors)
    else:
        tensors = {name: tensor.contiguous() for name, tensor in generate().items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(handle)
        try:
            save_file(tensors if stored is None else stored(tensors), temporary)
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
    _LOADED[path] = tensors
    while len(_LOADED) > _KEEP:
        _LOADED.popitem(last=False)
    return tensors


def forget_loaded() -> None:
    """Drop the in-memory copies, so the next `load_or_generate` reads the files again (tests use it)."""
    _LOADED.clear()
