"""Tasks registered by name: `register_task`, `create_task`, `get_task`, `available_tasks`.

Importing this package registers the built-in tasks.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from tokenmix.errors import MixerInputError, unknown_name
from tokenmix.tasks.base import IGNORE_INDEX, Split, Task

_TASKS: dict[str, type[Task]] = {}


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator registering a task dataclass under `name`."""

    def decorate(cls: type[Task]) -> type[Task]:
        if name in _TASKS:
            raise ValueError(f"task {name!r} is registered twice")
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"task {name!r} must be a dataclass whose fields are its parameters")
        cls.name = name
        _TASKS[name] = cls
        return cls

    return decorate


def available_tasks() -> list[str]:
    """Names of the registered tasks, sorted."""
    return sorted(_TASKS)


def get_task(name: str) -> type[Task]:
    """The class of task `name`; unknown names raise `MixerInputError` listing the valid ones."""
    if name not in _TASKS:
        raise unknown_name("task", name, _TASKS)
    return _TASKS[name]


def task_parameters(name: str) -> dict[str, Any]:
    """The parameters of task `name` with their defaults."""
    return {f.name: f.default for f in dataclasses.fields(get_task(name))}  # type: ignore[arg-type]


def create_task(name: str, **params: Any) -> Task:
    """Build task `name`; unknown or invalid parameters raise `MixerInputError`."""
    cls = get_task(name)
    valid = task_parameters(name)
    for key in params:
        if key not in valid:
            raise unknown_name("parameter", key, valid, owner=f"task {name}")
    try:
        return cls(**params)
    except (TypeError, ValueError) as error:
        if isinstance(error, MixerInputError):
            raise
        raise MixerInputError(f"task {name}: {error}") from error


# Registration happens on import; kept at the bottom so the decorator above exists.
from tokenmix.tasks import burgers, mqar  # noqa: E402,F401
from tokenmix.tasks import darcy, navier_stokes  # noqa: E402,F401
from tokenmix.tasks import induction_heads, selective_copying  # noqa: E402,F401
from tokenmix.tasks import digits, listops, mnist1d, pathfinder  # noqa: E402,F401
from tokenmix.tasks import global_shapes  # noqa: E402,F401

__all__ = ["IGNORE_INDEX", "Split", "Task", "available_tasks", "create_task", "get_task", "register_task",
           "task_parameters"]
