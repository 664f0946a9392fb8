"""hookdb's client side: the in-process :class:`Emitter` and the ``hookdb-emit`` hook command.

Kept free of imports so that ``hookdb-emit`` starts as fast as a bare interpreter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hookdb.client.emitter import Emitter

__all__ = ["Emitter"]


def __getattr__(name: str) -> object:
    if name == "Emitter":
        from hookdb.client.emitter import Emitter

        return Emitter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
