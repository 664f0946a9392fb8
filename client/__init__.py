"""hookdb's client side: the in-process :class:`Emitter` and the ``hookdb-emit`` hook command.

Imports nothing at all (not even ``typing``), so that ``hookdb-emit`` starts as fast as a bare
interpreter; ``Emitter`` is loaded on first use. ``__init__.pyi`` gives type checkers the real type.
"""

__all__ = ["Emitter"]


def __getattr__(name: str) -> object:
    if name == "Emitter":
        from hookdb.client.emitter import Emitter

        return Emitter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
