"""The mixer registry: `MixerSpec`, `register`, `create`, `available`, `spec`.

A mixer class is registered with its spec (what it is, which paper, which algorithms, causal or not, what its
streaming state costs). `create(name, dim, **options)` checks the name, every option and `impl` against what the
class accepts, so a typo fails with the list of valid choices instead of deep inside an op.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, Literal

from tokenmix.errors import MixerInputError, unknown_name

Layout = Literal["sequence", "grid"]
Causality = Literal["always", "optional", "never"]
StateKind = Literal["none", "fixed", "growing"]


@dataclass(frozen=True)
class MixerSpec:
    """What a mixer is. `tokenmix.spec(name)` returns it and `tokenmix info NAME` prints it."""

    name: str
    family: str
    layout: Layout
    paper: str
    arxiv: str
    impls: tuple[str, ...]
    causal: Causality
    state: StateKind
    time_complexity: str
    memory_complexity: str
    summary: str = ""
    spatial_dims: tuple[int, ...] = ()
    resolution_invariant: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # keyword options and their defaults, from the class

    def __post_init__(self) -> None:
        if self.layout not in ("sequence", "grid"):
            raise ValueError(f"{self.name}: layout must be 'sequence' or 'grid', not {self.layout!r}")
        if self.causal not in ("always", "optional", "never"):
            raise ValueError(f"{self.name}: causal must be 'always', 'optional' or 'never', not {self.causal!r}")
        if self.state not in ("none", "fixed", "growing"):
            raise ValueError(f"{self.name}: state must be 'none', 'fixed' or 'growing', not {self.state!r}")
        if not self.impls or self.impls[0] != "reference":
            raise ValueError(f"{self.name}: impls must start with 'reference', got {self.impls!r}")
        if self.layout == "grid" and not self.spatial_dims:
            raise ValueError(f"{self.name}: a grid mixer must declare spatial_dims")
        if self.causal == "never" and self.state != "none":
            raise ValueError(f"{self.name}: a non-causal mixer cannot stream, so its state must be 'none'")

    @property
    def streams(self) -> bool:
        """Whether the mixer can run token by token (`init_state` / `step`)."""
        return self.causal != "never"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_REGISTRY: dict[str, type] = {}


def _keyword_options(cls: type) -> dict[str, Any]:
    """The keyword options of `cls.__init__` with their defaults (`dim` is positional, not an option)."""
    options: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for parameter in inspect.signature(init).parameters.values():
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
                default = parameter.default
                options[parameter.name] = None if default is inspect.Parameter.empty else default
    return options


def register(**fields: Any):
    """Class decorator: `@register(name=..., family=..., ...)` attaches a `MixerSpec` and registers the class."""

    def decorate(cls: type) -> type:
        name = fields["name"]
        if name in _REGISTRY:
            raise ValueError(f"mixer {name!r} is registered twice ({_REGISTRY[name].__qualname__}, {cls.__qualname__})")
        spec_ = MixerSpec(**fields, options=_keyword_options(cls))
        cls.spec = spec_
        _REGISTRY[name] = cls
        return cls

    return decorate


def _load_builtin_mixers() -> None:
    # Importing the packages registers their mixers; done lazily so `registry` has no import cycle.
    import tokenmix.grid  # noqa: F401
    import tokenmix.sequence  # noqa: F401


def available(layout: Layout | None = None) -> list[str]:
    """Names of the registered mixers, sorted; `layout` keeps only "sequence" or "grid" mixers."""
    _load_builtin_mixers()
    return sorted(n for n, c in _REGISTRY.items() if layout is None or c.spec.layout == layout)


def mixer_class(name: str) -> type:
    _load_builtin_mixers()
    if name not in _REGISTRY:
        raise unknown_name("mixer", name, _REGISTRY)
    return _REGISTRY[name]


def spec(name: str) -> MixerSpec:
    """The `MixerSpec` of a registered mixer."""
    return mixer_class(name).spec


def create(name: str, dim: int, **options: Any):
    """Build mixer `name` for `dim` channels. Unknown names, options and impls raise `MixerInputError`."""
    cls = mixer_class(name)
    valid = cls.spec.options
    for option in options:
        if option not in valid:
            raise unknown_name("option", option, valid, owner=name)
    return cls(dim, **options)  # the constructor checks dim, impl and causal against the spec
