# -*- test-case-name: tests.test_spool -*-
"""
The durable spool: messages appended to a few segment files, fsync'd in groups.

Every add, replace and copy waits for the next group commit: one thread
writes all the records that arrived while the previous commit ran and
fsyncs them together. The mutable area of a record (state, attempts, next
attempt, last error) is rewritten in place without an fsync; after a power
loss that only means an earlier retry or a message delivered again.
"""

from __future__ import annotations

import fcntl
import os
import re
from typing import BinaryIO, Callable, Protocol, TypeVar

from attrs import evolve, frozen
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._segments import (
    Batch,
    Segment,
    Slot,
    SpooledSource,
    Write,
    commitBatch,
    readSegments,
)
from ._spoolformat import (
    DONE,
    HEADER_SIZE,
    LIVE,
    MessageParts,
    Mutable,
    Range,
    encodeMeta,
    newQueueId,
)
from .envelope import Envelope, MessageSource

__all__ = [
    "MessageParts",
    "Range",
    "Spool",
    "SpoolClosed",
    "SpoolLocked",
    "SpooledMessage",
    "ThreadRunner",
    "newQueueId",
]

_log = Logger()

_T = TypeVar("_T")
_SEGMENT = re.compile(r"seg-(\d{8})")
_QUEUE_ID = re.compile(r"[a-z2-7]{16}")


class ThreadRunner(Protocol):
    """
    Runs a function in a thread, such as C{partial(deferToThreadPool,
    reactor, pool)} with a pool of one thread.
    """

    def __call__(self, work: Callable[[], _T]) -> Deferred[_T]:
        """
        @return: A L{Deferred} that fires with the result of C{work()}.
        """


class SpoolClosed(Exception):
    """
    The spool is closed and takes no more messages.
    """


class SpoolLocked(Exception):
    """
    Another process has the spool directory open.
    """


@frozen
class SpooledMessage:
    """
    A message found in the spool at start-up.

    @ivar queueId: Its queue id.
    @ivar envelope: Where it still goes.
    @ivar created: When it was accepted, in seconds since the epoch.
    @ivar attempts: Its failed attempts so far.
    @ivar nextAttempt: When to try it next.
    @ivar lastError: The reply of its last failed attempt.
    @ivar size: Its size in bytes.
    """

    queueId: str
    envelope: Envelope
    created: float
    attempts: int
    nextAttempt: float
    lastError: str
    size: int


class Spool:
    """
    Messages on disk, in segment files named C{seg-NNNNNNNN}.

    Use it from the reactor thread only; the writing and fsyncing runs in
    the thread of the runner it is given.
    """

    def __init__(
        self,
        directory: str,
        directoryFd: int,
        runInThread: ThreadRunner,
        segmentSize: int,
        existing: list[int],
    ) -> None:
        self._directory = directory
        self._directoryFd = directoryFd
        self._runInThread = runInThread
        self._segmentSize = segmentSize
        self._existing = existing
        self._nextNumber = max(existing, default=0) + 1
        self._segments: dict[int, Segment] = {}
        self._index: dict[str, Slot] = {}
        self._active: Segment | None = None
        self._pending: list[Write] = []
        self._deletions: list[Segment] = []
        self._writing: set[Segment] = set()
        self._busy = False
        self._closing: list[Deferred[None]] | None = None
        self._recovered: set[str] | None = None

    @classmethod
    def open(
        cls, directory: str, runInThread: ThreadRunner, segmentSize: int = 64 << 20
    ) -> Spool:
        """
        Open (creating it if needed) and lock a spool directory.

        @raise SpoolLocked: If another process has it open.
        @raise OSError: If it cannot be created or opened.
        """
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700, exist_ok=True)
            parent = os.open(os.path.dirname(os.path.abspath(directory)), os.O_RDONLY)
            try:
                os.fsync(parent)
            finally:
                os.close(parent)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolLocked(
                f"the spool {directory} is in use by another process"
            ) from None
        names = (_SEGMENT.fullmatch(name) for name in os.listdir(directory))
        existing = sorted(int(match.group(1)) for match in names if match)
        return cls(directory, fd, runInThread, segmentSize, existing)

    def recover(self) -> list[SpooledMessage]:
        """
        Read the segments found by L{open}, cutting off unacknowledged
        writes at their tails, and start reclaiming their space.

        @return: The live messages, oldest first.
        """
        segments, slots, self._recovered = readSegments(self._directory, self._existing)
        self._existing = []
        for segment in segments:
            self._segments[segment.number] = segment
        for slot in slots:
            self._enter(slot)
        for segment in list(self._segments.values()):
            self._reclaim(segment)
        slots = sorted(
            self._index.values(), key=lambda s: (s.created, s.segment.number, s.offset)
        )
        return [
            SpooledMessage(
                slot.queueId,
                slot.envelope,
                slot.created,
                slot.mutable.attempts,
                slot.mutable.nextAttempt,
                slot.mutable.lastError,
                slot.size,
            )
            for slot in slots
        ]

    def seen(self, queueId: str) -> bool:
        """
        Tell whether a message was ever stored under a queue id, as far as
        this process can know: whether it is in the spool now, or was found
        by L{recover}, live or done.

        @raise RuntimeError: If the spool is not recovered yet, as it could
            not answer.
        """
        if self._recovered is None:
            raise RuntimeError("the spool must be recovered before it is asked")
        return queueId in self._index or queueId in self._recovered

    def add(
        self,
        envelope: Envelope,
        message: bytes | MessageParts,
        created: float,
        queueId: str | None = None,
    ) -> Deferred[str]:
        """
        Store a new message.

        @param message: The message, in memory or as parts that the writer
            thread copies into the record a chunk at a time; the files that
            parts name must stay open until the L{Deferred} fires or fails.

        @param queueId: The queue id to store it under, made by
            L{newQueueId} beforehand so that the caller can note it before
            the message exists; a new one by default.
        @return: A L{Deferred} that fires with its queue id once it is
            written and fsync'd.
        """
        if self._closing is not None:
            return fail(SpoolClosed("the spool is closed"))
        if queueId is None:
            queueId = newQueueId()
            while queueId in self._index:
                queueId = newQueueId()
        elif not _QUEUE_ID.fullmatch(queueId):
            return fail(ValueError(f"{queueId!r} is not a queue id"))
        elif queueId in self._index or any(
            write.queueId == queueId for write in self._pending
        ):
            return fail(ValueError(f"{queueId} is already in the spool"))
        done: Deferred[None] = Deferred()
        mutable = Mutable(LIVE, 0, created, "")
        self._pending.append(Write(queueId, envelope, created, message, mutable, done))
        self._kick()
        return done.addCallback(lambda _: queueId)

    def replace(self, queueId: str, envelope: Envelope) -> Deferred[None]:
        """
        Store a message again with a new envelope, and then drop its old
        record; its created time, message and retry state stay.

        @return: A L{Deferred} that fires once the new record is fsync'd.
        @raise KeyError: If there is no such message.
        """
        slot = self._index[queueId]
        done: Deferred[None] = Deferred()
        self._pending.append(
            Write(queueId, envelope, slot.created, None, slot.mutable, done)
        )
        self._kick()
        return done

    def update(
        self, queueId: str, attempts: int, nextAttempt: float, lastError: str
    ) -> None:
        """
        Record a failed attempt, in place and without an fsync.

        @raise KeyError: If there is no such message.
        """
        slot = self._index[queueId]
        slot.mutable = Mutable(LIVE, attempts, nextAttempt, lastError)
        self._writeMutable(slot, slot.mutable)

    def remove(self, queueId: str) -> None:
        """
        Mark a message done, in place and without an fsync.

        @raise KeyError: If there is no such message.
        """
        slot = self._index.pop(queueId)
        self._writeMutable(slot, evolve(slot.mutable, state=DONE))
        self._leave(slot)

    def source(self, queueId: str) -> MessageSource:
        """
        @return: The message, read from its segment when opened.
        @raise KeyError: If there is no such message.
        """
        return SpooledSource(self._openMessage, queueId, self._index[queueId].size)

    def _openMessage(self, queueId: str) -> BinaryIO:
        """
        @raise LookupError: If the message is no longer in the spool.
        """
        slot = self._index.get(queueId)
        if slot is None:
            raise LookupError(f"{queueId} is no longer in the spool")
        return slot.open()

    def close(self) -> Deferred[None]:
        """
        Take no more messages, finish the commits under way, and close.

        @return: A L{Deferred} that fires when every file is closed.
        """
        done: Deferred[None] = Deferred()
        if self._closing is None:
            self._closing = []
        self._closing.append(done)
        self._kick()
        return done

    def _writeMutable(self, slot: Slot, mutable: Mutable) -> None:
        """
        Write a record's retry state in place; a failure is logged, and
        costs what the missing fsync may cost: after a restart the message
        is retried sooner, or delivered again.
        """
        try:
            if slot.segment.fd < 0:
                raise SpoolClosed("the spool is closed")
            os.pwrite(slot.segment.fd, mutable.encode(), slot.offset + HEADER_SIZE)
        except (OSError, SpoolClosed) as e:
            _log.error(
                "{queueId}: could not write its retry state in the spool: {error}",
                queueId=slot.queueId,
                error=e,
            )

    def _enter(self, slot: Slot) -> None:
        self._index[slot.queueId] = slot
        slot.segment.liveCount += 1
        slot.segment.liveBytes += slot.length

    def _leave(self, slot: Slot) -> None:
        slot.segment.liveCount -= 1
        slot.segment.liveBytes -= slot.length
        self._reclaim(slot.segment)

    def _reclaim(self, segment: Segment) -> None:
        """
        Delete a segment with no live records, or move the live records of
        one that is less than a quarter live to the active segment.
        """
        if self._segments.get(segment.number) is not segment:
            return
        if segment is self._active or segment in self._writing:
            return
        if segment.retired or self._closing is not None:
            return
        if segment.liveCount == 0:
            segment.retired = True
            self._deletions.append(segment)
        elif segment.liveBytes * 4 < segment.size and not segment.relocating:
            segment.relocating = True
            for slot in self._index.values():
                if slot.segment is segment:
                    moved: Deferred[None] = Deferred()
                    moved.addErrback(self._relocationFailed, segment)
                    self._pending.append(
                        Write(
                            slot.queueId,
                            slot.envelope,
                            slot.created,
                            None,
                            slot.mutable,
                            moved,
                            segment,
                        )
                    )
        else:
            return
        self._kick()

    def _relocationFailed(self, reason: Failure, segment: Segment) -> None:
        _log.failure(
            "spool segment {segment}: moving its live messages failed",
            reason,
            segment=segment.number,
        )
        segment.relocating = False

    def _kick(self) -> None:
        if self._busy:
            return
        if self._pending or self._deletions:
            self._startBatch()
        elif self._closing is not None:
            for segment in self._segments.values():
                os.close(segment.fd)
                segment.fd = -1
            self._segments.clear()
            if self._directoryFd >= 0:
                os.close(self._directoryFd)
                self._directoryFd = -1
            closing, self._closing = self._closing, []
            for done in closing:
                done.callback(None)

    def _startBatch(self) -> None:
        self._busy = True
        batch = Batch(deletions=self._deletions)
        pending, self._pending, self._deletions = self._pending, [], []
        replaced = {w.queueId for w in pending if w.message is None and not w.moving}
        for write in pending:
            if not self._plan(write, batch, replaced):
                batch.moot.append(write)
        if batch.writes or batch.deletions:
            batch.fds.update((n, s.fd) for n, s in self._segments.items())
            done = self._runInThread(
                lambda: commitBatch(self._directory, self._directoryFd, batch)
            )
            done.addCallbacks(
                self._committed,
                self._failed,
                callbackArgs=(batch,),
                errbackArgs=(batch,),
            )
        else:
            self._busy = False
        for write in batch.moot:
            write.deferred.callback(None)
        self._kick()

    def _plan(self, write: Write, batch: Batch, replaced: set[str]) -> bool:
        """
        Resolve a write and give it its place in the active segment.

        @return: C{False} if the write is moot: its message is gone, or is
            being written again anyway.
        """
        if write.message is None:
            slot = self._index.get(write.queueId)
            if write.moving is not None:
                if slot is None or slot.segment is not write.moving:
                    return False
                if write.queueId in replaced:
                    return False
                write.envelope = slot.envelope
            elif slot is None:
                return False
            write.mutable = slot.mutable
            write.message = slot.copy()
        write.meta = encodeMeta(write.envelope, write.created)
        length = write.length
        active = self._active
        if active is None or (active.size and active.size + length > self._segmentSize):
            self._active = Segment(self._nextNumber, -1, 0)
            self._nextNumber += 1
            batch.created.append(self._active)
            if active is not None:
                self._reclaim(active)
            active = self._active
        write.segment, write.offset = active, active.size
        active.size += length
        self._writing.add(active)
        batch.writes.append(write)
        return True

    def _committed(self, created: dict[int, int], batch: Batch) -> None:
        for segment in batch.created:
            segment.fd = created[segment.number]
            self._segments[segment.number] = segment
        self._forget(batch.deletions)
        for write in batch.writes:
            self._place(write)
        self._reclaimWritten()
        self._busy = False
        for write in batch.writes:
            write.deferred.callback(None)
        self._kick()

    def _failed(self, reason: Failure, batch: Batch) -> None:
        if reason.check(OSError):
            _log.error(
                "The spool could not store {count} messages, which were refused: "
                "{reason}",
                count=len(batch.writes),
                reason=reason.getErrorMessage(),
            )
        else:
            _log.failure(
                "The spool could not store {count} messages",
                reason,
                count=len(batch.writes),
            )
        self._forget(batch.deletions)
        for write in batch.writes:
            assert write.segment is not None
            write.segment.size = min(write.segment.size, write.offset)
        previous, self._active = self._active, None
        if previous is not None:
            self._writing.add(previous)
        self._reclaimWritten()
        self._busy = False
        for write in batch.writes:
            write.deferred.errback(reason)
        self._kick()

    def _reclaimWritten(self) -> None:
        """
        Reclaim the segments that the commit just ended wrote to, which
        L{_reclaim} leaves alone while their new records are not placed.
        """
        writing, self._writing = self._writing, set()
        for segment in writing:
            self._reclaim(segment)

    def _forget(self, segments: list[Segment]) -> None:
        for segment in segments:
            del self._segments[segment.number]
            os.close(segment.fd)

    def _place(self, write: Write) -> None:
        """
        Put a written record in the index, retiring the record it replaces.
        """
        slot = write.slot()
        if isinstance(write.message, Range):
            old = self._index.get(write.queueId)
            if old is None or (
                write.moving is not None and old.segment is not write.moving
            ):
                self._writeMutable(slot, evolve(slot.mutable, state=DONE))
                return
            slot.mutable = old.mutable
            self._writeMutable(slot, slot.mutable)
            self._writeMutable(old, evolve(old.mutable, state=DONE))
            self._enter(slot)
            self._leave(old)
        else:
            self._enter(slot)
