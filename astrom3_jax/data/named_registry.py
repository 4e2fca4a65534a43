"""A name -> entry table: the rules of the modality registry (data/modalities.py).

An entry is registered once unless `overwrite=True`, and an unknown name
fails with the list of known ones. `temporarily` registers an entry for a
`with` block only, so a test that adds a modality leaves the table as it
found it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class NamedRegistry(Generic[T]):
    """Entries with a `.name`, kept in registration order."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, entry: T, *, overwrite: bool = False) -> T:
        name = entry.name
        if name in self._entries and not overwrite:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    @contextlib.contextmanager
    def temporarily(self, entry: T, *, overwrite: bool = False) -> Iterator[T]:
        """Register `entry` inside the `with` block, then undo it.

        On exit, even by an exception, the name is removed again or, when
        `overwrite=True` replaced an entry, the old entry is put back in
        its old place.
        """
        name = entry.name
        previous = self._entries.get(name)
        self.register(entry, overwrite=overwrite)
        try:
            yield entry
        finally:
            if previous is None:
                self._entries.pop(name, None)
            else:
                self._entries[name] = previous

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; registered: {sorted(self._entries)}"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)
