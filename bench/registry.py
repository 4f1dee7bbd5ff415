"""A small decorator registry (timm's `@register_model` pattern), shared by datasets, models,
methods and exit policies so that each plugin is one decorated definition."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from bench.errors import choices_error

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, discover: Callable[[], None] | None = None):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._discover = discover
        self._discovered = discover is None

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def _ensure_discovered(self) -> None:
        if not self._discovered:
            self._discovered = True
            assert self._discover is not None
            self._discover()

    def get(self, name: str, where: str = "") -> T:
        self._ensure_discovered()
        if not isinstance(name, str) or name not in self._entries:
            raise choices_error(self.kind, name, self.names(), where)
        return self._entries[name]

    def names(self) -> list[str]:
        self._ensure_discovered()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._ensure_discovered()
        return name in self._entries
