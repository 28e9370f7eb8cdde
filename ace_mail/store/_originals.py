"""
The stored original emails that a node keeps as files in its originals
directory.
"""

from __future__ import annotations

import os
from typing import BinaryIO, Iterable


def openFile(directory: str, name: str) -> BinaryIO | None:
    """
    @return: The file of the original C{name}, open for reading, or L{None}
        if this node has no such file.
    """
    try:
        return open(os.path.join(directory, os.path.basename(name)), "rb")
    except FileNotFoundError:
        return None


def removeFiles(directory: str, names: Iterable[str]) -> int:
    """
    Delete the files of some originals, those that this node has, and make
    the deletion durable.

    @return: How many files were deleted.
    """
    removed = 0
    for name in names:
        try:
            os.unlink(os.path.join(directory, name))
        except FileNotFoundError:
            continue
        removed += 1
    if removed:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return removed
