"""What a result was measured on: library versions, device, threads, dtype and the git revision."""

from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

import tokenmix


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` is CUDA when present, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def environment(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """A JSON-ready description of where a run happens."""
    return {
        "tokenmix": tokenmix.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "threads": torch.get_num_threads(),
        "dtype": str(dtype).removeprefix("torch."),
        "git_revision": git_revision(),
    }


@lru_cache(maxsize=1)
def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo on Linux, where `platform.processor()` is often empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


@lru_cache(maxsize=1)
def git_revision() -> str | None:
    """The commit of the tokenmix source tree (with `-dirty` when it has local changes), or None outside git."""
    source = Path(tokenmix.__file__).resolve().parent
    try:
        revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True,
                                  timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{revision}-dirty" if dirty else revision
