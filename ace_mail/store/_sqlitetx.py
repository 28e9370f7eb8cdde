"""
One transaction on a SQLite connection in autocommit mode.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """
    Run the statements of a C{with} block in one transaction, rolled back if
    the block raises.  C{BEGIN IMMEDIATE} takes the write lock at once, so
    that what the block reads cannot change before it writes.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
