# -*- test-case-name: tests.test_proxy_scratch -*-
"""
The unnamed files that the proxy receives messages into.
"""

from __future__ import annotations

import tempfile
from typing import BinaryIO


class ScratchFiles:
    """
    Hands out empty unnamed files for message data, and keeps the ones
    given back open, emptied, for the next messages.

    Making a file is a dear step of a small message, as the file system
    creates an inode for it, which can wait for the journal while the
    spool's thread syncs. Emptying a file that is already open costs a
    fraction of that. Every file is unlinked from the start, so nothing is left on disk
    when the process ends, however it ends.

    @ivar directory: Where the files are made; L{None} for the system's
        temporary directory.
    @ivar keep: How many emptied files are kept open at most; files given
        back beyond that are closed.
    """

    def __init__(self, directory: str | None = None, keep: int = 64) -> None:
        self.directory = directory
        self.keep = keep
        self._free: list[BinaryIO] = []

    def take(self) -> BinaryIO:
        """
        @return: An empty file open for reading and writing.
        @raise OSError: When no file can be made.
        """
        if self._free:
            return self._free.pop()
        return tempfile.TemporaryFile(dir=self.directory)

    def give(self, file: BinaryIO) -> None:
        """
        Take back a file from L{take} that its message is done with: empty
        it and keep it, or close it.
        """
        if len(self._free) >= self.keep:
            file.close()
            return
        try:
            file.seek(0)
            file.truncate()
        except OSError:
            file.close()
            return
        self._free.append(file)

    @property
    def kept(self) -> int:
        """
        The emptied files kept open.
        """
        return len(self._free)

    def close(self) -> None:
        """
        Close every file kept.
        """
        while self._free:
            self._free.pop().close()
