"""The on-disk cache of the classification datasets whose inputs are not only tokens (pixel values, images).

Like `token_storage.load_or_generate`, but every tensor keeps its own dtype (float32 pixels, uint8 images,
int64 labels), since narrowing to int16 is only right for token ids. The file is named by a hash of the task's
parameters and the generator's format version (`token_storage.cache_file`), written to a temporary file and
renamed, so a reader never sees a half-written file and a second run with the same parameters reads it back.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Protocol

from safetensors.torch import load_file, save_file
from torch import Tensor


class ArrayTask(Protocol):
    def generate(self) -> dict[str, Tensor]: ...


@functools.lru_cache(maxsize=4)
def load_or_generate_arrays(task: ArrayTask, path: Path) -> dict[str, Tensor]:
    """The task's tensors from `path`, generating and writing them first when the file is missing."""
    # `path` is part of the memo key, so pointing TOKENMIX_CACHE elsewhere reads (or writes) that folder.
    if path.exists():
        return load_file(path)
    tensors = {name: tensor.contiguous() for name, tensor in task.generate().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(handle)
    try:
        save_file(tensors, temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return tensors
