# -*- test-case-name: tests.test_spool -*-
"""
Segment files: the records placed in them, the thread-side commit of a
batch of writes, reading a message back, and reading segments at start-up.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import BinaryIO, Callable

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ._spoolformat import (
    LIVE,
    PAYLOAD_OFFSET,
    Found,
    MessageParts,
    Mutable,
    Range,
    messageOffset,
    scanSegment,
    writeRecord,
)
from .envelope import Envelope

_log = Logger()


def segmentPath(directory: str, number: int) -> str:
    """
    @return: The path of segment file C{number}.
    """
    return os.path.join(directory, f"seg-{number:08d}")


@define(eq=False)
class Segment:
    """
    A segment file and how much of it is live.

    @ivar fd: Its descriptor, or -1 until the commit that creates it ends.
    @ivar size: The bytes written or planned, up to the end of its last
        record.
    @ivar relocating: Whether its live records are being moved out.
    @ivar retired: Whether it is to be deleted.
    """

    number: int
    fd: int
    size: int
    liveCount: int = 0
    liveBytes: int = 0
    relocating: bool = False
    retired: bool = False


@define(eq=False)
class Slot:
    """
    Where the current record of a live message is.

    @ivar offset: Where the record starts in its segment.
    @ivar length: The length of the whole record.
    @ivar messageStart: Where the message starts, from the record's start.
    @ivar size: The length of the message.
    """

    queueId: str
    envelope: Envelope
    created: float
    segment: Segment
    offset: int
    length: int
    messageStart: int
    size: int
    mutable: Mutable

    def copy(self) -> Range:
        """
        @return: Where the message is, to copy it into a new record.
        """
        return Range(self.segment.fd, self.offset + self.messageStart, self.size)

    def open(self) -> BinaryIO:
        """
        @return: The message, read from a descriptor of its own so that it
            stays readable after its segment is deleted.
        """
        start = self.offset + self.messageStart
        reader = RangeReader(os.dup(self.segment.fd), start, self.size)
        return io.BufferedReader(reader, 1 << 16)


@define(eq=False)
class Write:
    """
    A record waiting for the next group commit.

    @ivar message: The message, as bytes or as parts copied in when the
        batch is committed; a L{Range} of a record copied from the current
        record of the same queue id; or L{None} to find that range when the
        batch is planned.
    @ivar moving: For a relocation, the segment the record leaves.
    @ivar segment: Where the record goes, once planned.
    """

    queueId: str
    envelope: Envelope
    created: float
    message: bytes | Range | MessageParts | None
    mutable: Mutable
    deferred: Deferred[None]
    moving: Segment | None = None
    meta: bytes = b""
    segment: Segment | None = None
    offset: int = 0

    @property
    def length(self) -> int:
        """
        The length of the whole record, once the metadata is encoded.
        """
        assert self.message is not None
        message = self.message
        if isinstance(message, (Range, MessageParts)):
            size = message.length
        else:
            size = len(message)
        return PAYLOAD_OFFSET + len(self.meta) + size

    def slot(self) -> Slot:
        """
        @return: Where this record is, once it is written.
        """
        assert self.segment is not None
        start = messageOffset(self.meta)
        size = self.length - start
        return Slot(
            self.queueId,
            self.envelope,
            self.created,
            self.segment,
            self.offset,
            self.length,
            start,
            size,
            self.mutable,
        )


@define(eq=False)
class Batch:
    """
    One group commit: the writes, the segment files to create first, and
    the ones to delete after.

    @ivar moot: Writes left out because their message is gone or is being
        written again anyway.
    @ivar fds: The descriptors of the segments that exist.
    """

    writes: list[Write] = field(factory=list)
    moot: list[Write] = field(factory=list)
    fds: dict[int, int] = field(factory=dict)
    created: list[Segment] = field(factory=list)
    deletions: list[Segment] = field(factory=list)


class RangeReader(io.RawIOBase):
    """
    Reads a range of a file with C{pread}, from its own file descriptor.
    """

    def __init__(self, fd: int, offset: int, length: int) -> None:
        self._fd = fd
        self._position = offset
        self._end = offset + length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        wanted = min(len(buffer), self._end - self._position)
        if wanted <= 0:
            return 0
        count = os.preadv(self._fd, [memoryview(buffer)[:wanted]], self._position)
        if count == 0:
            raise OSError("the spool segment ended before the message did")
        self._position += count
        return count

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def commitBatch(directory: str, directoryFd: int, batch: Batch) -> dict[int, int]:
    """
    Write and fsync a batch, then delete its dead segments; this runs in
    the runner's thread and touches nothing but the batch.

    @return: The descriptors of the segment files it created.
    """
    fds = dict(batch.fds)
    created = {}
    try:
        for segment in batch.created:
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL
            fds[segment.number] = os.open(
                segmentPath(directory, segment.number), flags, 0o600
            )
            created[segment.number] = fds[segment.number]
        for write in batch.writes:
            assert write.segment is not None and write.message is not None
            writeRecord(
                fds[write.segment.number],
                write.offset,
                write.queueId,
                write.meta,
                write.message,
                write.mutable,
            )
        for number in {write.segment.number for write in batch.writes if write.segment}:
            os.fsync(fds[number])
        if created:
            os.fsync(directoryFd)
    except BaseException:
        for fd in created.values():
            os.close(fd)
        _takeBack(directory, directoryFd, batch, fds, created)
        raise
    for segment in batch.deletions:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(segmentPath(directory, segment.number))
    if batch.deletions:
        os.fsync(directoryFd)
    return created


def _takeBack(
    directory: str,
    directoryFd: int,
    batch: Batch,
    fds: dict[int, int],
    created: dict[int, int],
) -> None:
    """
    Remove what a failed commit wrote, as far as the disk allows, so that
    no record of it, whole or torn, is found at the next start: the segment
    files it created go, and the others are cut back to where it began.
    """
    starts: dict[int, int] = {}
    for write in batch.writes:
        assert write.segment is not None
        number = write.segment.number
        starts[number] = min(write.offset, starts.get(number, write.offset))
    for number in created:
        with contextlib.suppress(OSError):
            os.unlink(segmentPath(directory, number))
    for number, start in starts.items():
        if number in fds and number not in created:
            with contextlib.suppress(OSError):
                os.ftruncate(fds[number], start)
                os.fsync(fds[number])
    if created:
        with contextlib.suppress(OSError):
            os.fsync(directoryFd)


def readSegments(
    directory: str, numbers: list[int]
) -> tuple[list[Segment], list[Slot], set[str]]:
    """
    Open and read segment files, cutting off unacknowledged writes at their
    tails; of several records of one queue id, only the newest counts.

    @return: The segments, the live messages in them, and the queue id of
        every record found, live or done.
    """
    segments = []
    newest: dict[str, tuple[Segment, Found]] = {}
    for number in numbers:
        fd = os.open(segmentPath(directory, number), os.O_RDWR)
        size = os.fstat(fd).st_size
        found, end = scanSegment(fd, size, f"seg-{number:08d}")
        if end < size:
            _log.warn(
                "spool segment {segment}: cut off {length} bytes of an "
                "unacknowledged write",
                segment=number,
                length=size - end,
            )
            os.ftruncate(fd, end)
            os.fsync(fd)
        segment = Segment(number, fd, end)
        segments.append(segment)
        newest.update((record.header.queueId, (segment, record)) for record in found)
    slots = []
    for queueId, (segment, record) in newest.items():
        mutable = record.mutable
        if mutable is None:
            _log.warn(
                "{queueId}: its retry state was damaged; due now", queueId=queueId
            )
            mutable = Mutable(LIVE, 0, 0.0, "")
        if mutable.state == LIVE:
            start = PAYLOAD_OFFSET + record.metaLength
            size = record.header.recordLength - start
            slots.append(
                Slot(
                    queueId,
                    record.envelope,
                    record.created,
                    segment,
                    record.offset,
                    record.header.recordLength,
                    start,
                    size,
                    mutable,
                )
            )
    return segments, slots, set(newest)


@define
class SpooledSource:
    """
    A L{MessageSource} over a spooled message; open it in the reactor
    thread.

    @ivar opener: Opens the message with this queue id.
    """

    opener: Callable[[str], BinaryIO]
    queueId: str
    size: int

    def open(self) -> BinaryIO:
        return self.opener(self.queueId)
