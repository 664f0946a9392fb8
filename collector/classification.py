"""Every classification the collector applies, in one place."""

from __future__ import annotations

# SQLSTATE classes of errors about the data of a row (22 data exception, 23 integrity constraint
# violation): the batch is split to isolate the rows at fault, and the breaker is not told. Every other
# error (08 connection, 53 resources, 57 operator intervention, 42 a missing table, timeouts, I/O, ...)
# is about the database's availability: it counts against the breaker and the batch is retried whole.
DATA_ERROR_CLASSES = frozenset({"22", "23"})


def sqlstate_class(exc: BaseException) -> str:
    """The two-character SQLSTATE class of a database error; ``"io"`` for errors below SQL."""
    code = getattr(exc, "sqlstate", None)
    return code[:2] if isinstance(code, str) else "io"


def is_data_error(exc: BaseException) -> bool:
    return sqlstate_class(exc) in DATA_ERROR_CLASSES
