"""Named registries (kernels, schedules, models): extend the library by registering a function."""
from __future__ import annotations

from typing import Callable, Dict, Generic, TypeVar

T = TypeVar("T")


class Registry(Dict[str, T], Generic[T]):
    """A ``dict`` of name -> object with a ``register`` decorator and a ``get`` that names the choices."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self:
                raise ValueError(f"{self.what} {name!r} is already registered")
            self[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:  # type: ignore[override]
        try:
            return self[name]
        except KeyError:
            raise KeyError(f"unknown {self.what} {name!r}; allowed: {', '.join(sorted(self))}") from None
