"""
Tests for L{ace_mail.spool}: durability, group commit, recovery and reclaim.
"""

from __future__ import annotations

import errno
import os
import re
from typing import Any, Callable, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from ace_mail import _spoolformat
from ace_mail.envelope import Envelope
from ace_mail.spool import Spool, SpoolClosed, SpoolLocked

_T = TypeVar("_T")

ENVELOPE = Envelope("agent@example.com", ["a@example.net", "b@example.net"])


def runNow(work: Callable[[], _T]) -> Deferred[_T]:
    """
    A thread runner that runs the work at once, in the calling thread.
    """
    return maybeDeferred(work)


class HeldRunner:
    """
    A thread runner that holds each job until the test runs it.
    """

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def __call__(self, work: Callable[[], _T]) -> Deferred[_T]:
        done: Deferred[_T] = Deferred()
        self.jobs.append((work, done))
        return done

    def runOne(self) -> None:
        work, done = self.jobs.pop(0)
        maybeDeferred(work).chainDeferred(done)


def message(number: int, size: int = 60) -> bytes:
    """
    @return: A distinct message of about C{size} bytes.
    """
    head = f"Subject: message {number}\r\n\r\n".encode()
    return head + bytes([65 + number % 26]) * max(0, size - len(head))


class SpoolTestsMixin:
    """
    Opening, filling and reopening spools in temporary directories.
    """

    mktemp: Callable[[], str]
    addCleanup: Callable[..., None]
    successResultOf: Callable[[Deferred[Any]], Any]

    def openSpool(
        self, directory: str, runner: Any = runNow, segmentSize: int = 1 << 20
    ) -> Spool:
        spool = Spool.open(directory, runner, segmentSize)
        self.addCleanup(spool.close)
        return spool

    def fill(
        self, spool: Spool, count: int, size: int = 60, first: int = 0
    ) -> list[str]:
        return [
            self.successResultOf(spool.add(ENVELOPE, message(n, size), 1000.0 + n))
            for n in range(first, first + count)
        ]

    def reopen(self, spool: Spool, directory: str, **kwargs: Any) -> Spool:
        self.successResultOf(spool.close())
        return self.openSpool(directory, **kwargs)


def readAll(spool: Spool, queueId: str) -> bytes:
    with spool.source(queueId).open() as stream:
        return stream.read()


class DurabilityTests(SpoolTestsMixin, SynchronousTestCase):
    """
    A message is acknowledged only once it is fsync'd, and adds share fsyncs.
    """

    def setUp(self) -> None:
        self.fsynced: list[int] = []
        realFsync = os.fsync

        def fsync(fd: int) -> None:
            self.fsynced.append(fd)
            realFsync(fd)

        self.patch(os, "fsync", fsync)

    def test_addFiresOnlyAfterFsync(self) -> None:
        """
        The L{Deferred} of an add fires only after the thread job wrote and
        fsync'd the record, the new segment file and its directory.
        """
        runner = HeldRunner()
        spool = self.openSpool(self.mktemp(), runner)
        del self.fsynced[:]
        added = spool.add(ENVELOPE, message(1), 1000.0)
        self.assertNoResult(added)
        self.assertEqual(self.fsynced, [])
        runner.runOne()
        queueId = self.successResultOf(added)
        self.assertRegex(queueId, r"\A[a-z2-7]{16}\Z")
        self.assertEqual(len(self.fsynced), 2)

    def test_groupCommit(self) -> None:
        """
        Adds that arrive while a commit runs go out together in the next
        commit, with one fsync.
        """
        runner = HeldRunner()
        spool = self.openSpool(self.mktemp(), runner)
        first = spool.add(ENVELOPE, message(0), 1000.0)
        rest = [spool.add(ENVELOPE, message(n), 1000.0) for n in range(1, 9)]
        self.assertEqual(len(runner.jobs), 1)
        runner.runOne()
        self.successResultOf(first)
        for added in rest:
            self.assertNoResult(added)
        self.assertEqual(len(runner.jobs), 1)
        before = len(self.fsynced)
        runner.runOne()
        self.assertEqual(len(self.fsynced) - before, 1)
        ids = [self.successResultOf(added) for added in rest]
        self.assertEqual(len(set(ids)), 8)
        self.assertEqual(runner.jobs, [])

    def test_failedCommitErrbacksAndMovesOn(self) -> None:
        """
        When a commit fails, its adds fail, and the next add goes to a new
        segment file and succeeds.
        """
        directory = self.mktemp()
        spool = self.openSpool(directory)
        self.fill(spool, 1)

        def broken(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(os, "fsync", broken)
        failure = self.failureResultOf(spool.add(ENVELOPE, message(1), 1.0), OSError)
        self.assertEqual(failure.value.errno, errno.ENOSPC)
        self.flushLoggedErrors(OSError)
        self.patch(os, "fsync", lambda fd: None)
        self.successResultOf(spool.add(ENVELOPE, message(2), 2.0))
        self.assertIn("seg-00000002", os.listdir(directory))

    def test_closeRejectsAdds(self) -> None:
        """
        After L{Spool.close}, an add fails with L{SpoolClosed}.
        """
        spool = self.openSpool(self.mktemp())
        self.successResultOf(spool.close())
        self.failureResultOf(spool.add(ENVELOPE, b"x", 1.0), SpoolClosed)

    def test_closeWaitsForTheCommit(self) -> None:
        """
        L{Spool.close} lets the commit under way and the adds waiting for
        the next one finish before it fires.
        """
        runner = HeldRunner()
        spool = self.openSpool(self.mktemp(), runner)
        first = spool.add(ENVELOPE, message(0), 1.0)
        second = spool.add(ENVELOPE, message(1), 1.0)
        closed = spool.close()
        runner.runOne()
        self.assertNoResult(closed)
        runner.runOne()
        self.successResultOf(first)
        self.successResultOf(second)
        self.successResultOf(closed)

    def test_locked(self) -> None:
        """
        A spool directory that is open cannot be opened again.
        """
        directory = self.mktemp()
        self.openSpool(directory)
        self.assertRaises(SpoolLocked, Spool.open, directory, runNow)


class RecoveryTests(SpoolTestsMixin, SynchronousTestCase):
    """
    L{Spool.recover} finds every acknowledged message and cuts off torn
    writes.
    """

    def test_recoverEverything(self) -> None:
        """
        The messages, envelopes, created times and retry states all come
        back after a restart.
        """
        directory = self.mktemp()
        spool = self.openSpool(directory)
        ids = self.fill(spool, 3, size=5000)
        spool.update(ids[1], 2, 5000.0, "451 4.3.0 try later")
        spool = self.reopen(spool, directory)
        found = spool.recover()
        self.assertEqual([m.queueId for m in found], ids)
        self.assertEqual([m.created for m in found], [1000.0, 1001.0, 1002.0])
        self.assertEqual(found[0].envelope, ENVELOPE)
        self.assertEqual(found[0].size, 5000)
        self.assertEqual(found[0].nextAttempt, 1000.0)
        self.assertEqual(
            (found[1].attempts, found[1].nextAttempt, found[1].lastError),
            (2, 5000.0, "451 4.3.0 try later"),
        )
        for n, queueId in enumerate(ids):
            self.assertEqual(readAll(spool, queueId), message(n, 5000))

    def test_appendsGoToAFreshSegment(self) -> None:
        """
        After a restart, new records go to a new segment file and the old
        one is left as it was.
        """
        directory = self.mktemp()
        spool = self.openSpool(directory)
        self.fill(spool, 2)
        old = os.path.join(directory, "seg-00000001")
        size = os.path.getsize(old)
        spool = self.reopen(spool, directory)
        spool.recover()
        self.fill(spool, 1)
        self.assertEqual(os.path.getsize(old), size)
        self.assertTrue(os.path.exists(os.path.join(directory, "seg-00000002")))

    def test_removedAndDoneAreGone(self) -> None:
        """
        A removed message is not recovered.
        """
        directory = self.mktemp()
        spool = self.openSpool(directory)
        ids = self.fill(spool, 3)
        spool.remove(ids[0])
        spool = self.reopen(spool, directory)
        self.assertEqual([m.queueId for m in spool.recover()], ids[1:])

    def test_lastErrorCut(self) -> None:
        """
        A long last error is kept to its first 232 bytes, on a character
        boundary.
        """
        directory = self.mktemp()
        spool = self.openSpool(directory)
        [queueId] = self.fill(spool, 1)
        spool.update(queueId, 1, 1.0, "é" * 200)
        spool = self.reopen(spool, directory)
        [found] = spool.recover()
        self.assertEqual(found.lastError, "é" * 116)

    def tornCase(self, count: int = 3) -> tuple[str, bytes, int, list[str]]:
        directory = self.mktemp()
        spool = self.openSpool(directory)
        ids = self.fill(spool, count - 1)
        path = os.path.join(directory, "seg-00000001")
        start = os.path.getsize(path)
        ids += self.fill(spool, 1, first=count - 1)
        self.successResultOf(spool.close())
        with open(path, "rb") as segment:
            return directory, segment.read(), start, ids

    def recoverFrom(self, directory: str, data: bytes) -> tuple[list[str], int]:
        path = os.path.join(directory, "seg-00000001")
        with open(path, "wb") as segment:
            segment.write(data)
        spool = Spool.open(directory, runNow)
        try:
            found = [m.queueId for m in spool.recover()]
        finally:
            self.successResultOf(spool.close())
        return found, os.path.getsize(path)

    def test_tornTailAtEveryOffset(self) -> None:
        """
        A last record cut at any byte is discarded and the segment is cut
        back to where it started; the records before it are intact.
        """
        directory, data, start, ids = self.tornCase()
        self.assertGreater(len(data) - start, 300)
        for end in range(start, len(data)):
            found, size = self.recoverFrom(directory, data[:end])
            self.assertEqual((found, size), (ids[:2], start), end)
        self.assertEqual(self.recoverFrom(directory, data)[0], ids)

    def test_tornTailFollowedByZeros(self) -> None:
        """
        A torn last record followed by zeros, as a file grown without its
        data after a power loss, is discarded too.
        """
        directory, data, start, ids = self.tornCase()
        for end in range(start, len(data), 7):
            torn = data[:end] + bytes(len(data) - end + 4096)
            self.assertEqual(self.recoverFrom(directory, torn), (ids[:2], start))

    def test_tailFailingItsCrc(self) -> None:
        """
        A whole last record whose payload fails its CRC is discarded.
        """
        directory, data, start, ids = self.tornCase()
        damaged = data[:-1] + bytes([data[-1] ^ 1])
        self.assertEqual(self.recoverFrom(directory, damaged), (ids[:2], start))

    def test_damagedRecordInTheMiddleIsSkipped(self) -> None:
        """
        A record whose payload fails its CRC, with records after it, is
        logged and skipped by its length.
        """
        directory, data, start, ids = self.tornCase()
        damaged = bytearray(data)
        damaged[start - 1] ^= 1
        with capturedLogs() as events:
            found, size = self.recoverFrom(directory, bytes(damaged))
        self.assertEqual((found, size), ([ids[0], ids[2]], len(data)))
        self.assertIn(ids[1], [event.get("queueId") for event in events])

    def test_damagedHeaderInTheMiddleIsSkipped(self) -> None:
        """
        When a header in the middle is damaged, recovery finds the next
        sane header and goes on from there.
        """
        directory, data, start, ids = self.tornCase(4)
        second = data.index(_spoolformat.MAGIC, 1)
        damaged = bytearray(data)
        damaged[second + 10] ^= 0xFF
        found, size = self.recoverFrom(directory, bytes(damaged))
        self.assertEqual((found, size), ([ids[0], ids[2], ids[3]], len(data)))

    def test_damagedRetryStateIsDueNow(self) -> None:
        """
        A record whose mutable area fails its check is recovered as live,
        with no attempts, due at once.
        """
        directory, data, start, ids = self.tornCase()
        damaged = bytearray(data)
        damaged[start + _spoolformat.HEADER_SIZE + 5] ^= 1
        self.recoverFrom(directory, bytes(damaged))
        spool = self.openSpool(directory)
        found = spool.recover()
        self.assertEqual(
            (found[2].queueId, found[2].attempts, found[2].nextAttempt),
            (ids[2], 0, 0.0),
        )


class ReplaceTests(SpoolTestsMixin, SynchronousTestCase):
    """
    L{Spool.replace} stores a message again with fewer recipients.
    """

    def test_replaceKeepsMessageAndState(self) -> None:
        """
        After a replace, the same queue id has the new envelope, the same
        message, created time and retry state, before and after a restart.
        """
        directory = self.mktemp()
        spool = self.openSpool(directory)
        ids = self.fill(spool, 2, size=3000)
        spool.update(ids[0], 1, 2000.0, "421 busy")
        fewer = Envelope(ENVELOPE.sender, ["b@example.net"])
        self.successResultOf(spool.replace(ids[0], fewer))
        self.assertEqual(readAll(spool, ids[0]), message(0, 3000))
        spool = self.reopen(spool, directory)
        found = spool.recover()
        self.assertEqual([m.queueId for m in found], ids)
        self.assertEqual(
            (found[0].envelope, found[0].created, found[0].attempts),
            (fewer, 1000.0, 1),
        )
        self.assertEqual(found[0].lastError, "421 busy")

    def test_updateWhileReplacing(self) -> None:
        """
        An update made while the replacement is being written ends up in
        the new record.
        """
        directory = self.mktemp()
        runner = HeldRunner()
        spool = self.openSpool(directory, runner)
        added = spool.add(ENVELOPE, message(0), 1000.0)
        runner.runOne()
        queueId = self.successResultOf(added)
        replaced = spool.replace(queueId, Envelope(ENVELOPE.sender, ["a@example.net"]))
        spool.update(queueId, 3, 9000.0, "450 later")
        runner.runOne()
        self.successResultOf(replaced)
        closed = spool.close()
        self.successResultOf(closed)
        spool = self.openSpool(directory)
        [found] = spool.recover()
        self.assertEqual((found.attempts, found.nextAttempt), (3, 9000.0))
        self.assertEqual(found.envelope.recipients, ("a@example.net",))

    def test_removeWhileReplacing(self) -> None:
        """
        A message removed while its replacement is written stays removed.
        """
        directory = self.mktemp()
        runner = HeldRunner()
        spool = self.openSpool(directory, runner)
        added = spool.add(ENVELOPE, message(0), 1000.0)
        runner.runOne()
        queueId = self.successResultOf(added)
        replaced = spool.replace(queueId, Envelope(ENVELOPE.sender, ["a@example.net"]))
        spool.remove(queueId)
        runner.runOne()
        self.successResultOf(replaced)
        self.assertRaises(KeyError, spool.source, queueId)
        closed = spool.close()
        self.successResultOf(closed)
        self.assertEqual(self.openSpool(directory).recover(), [])

    def test_newestRecordWins(self) -> None:
        """
        If the old record was not marked done (its in-place write was lost),
        recovery still keeps only the newest record of the id.
        """
        directory = self.mktemp()
        spool = self.openSpool(directory)
        [queueId] = self.fill(spool, 1)
        path = os.path.join(directory, "seg-00000001")
        with open(path, "rb") as segment:
            before = segment.read()
        fewer = Envelope(ENVELOPE.sender, ["b@example.net"])
        self.successResultOf(spool.replace(queueId, fewer))
        self.successResultOf(spool.close())
        with open(path, "r+b") as segment:
            segment.write(before)
        [found] = self.openSpool(directory).recover()
        self.assertEqual((found.queueId, found.envelope), (queueId, fewer))


class ReclaimTests(SpoolTestsMixin, SynchronousTestCase):
    """
    Segments whose messages are done are deleted; nearly empty ones are
    compacted.
    """

    def segments(self, directory: str) -> list[str]:
        return sorted(n for n in os.listdir(directory) if re.match("seg-", n))

    def test_rotation(self) -> None:
        """
        Records go to a new segment once the active one would pass its size,
        and all of them are recovered.
        """
        directory = self.mktemp()
        spool = self.openSpool(directory, segmentSize=4000)
        ids = self.fill(spool, 10, size=1000)
        self.assertEqual(len(self.segments(directory)), 5)
        spool = self.reopen(spool, directory, segmentSize=4000)
        self.assertEqual([m.queueId for m in spool.recover()], ids)

    def test_doneSegmentDeleted(self) -> None:
        """
        A segment that is not active and has only done records is deleted;
        the active one is kept.
        """
        directory = self.mktemp()
        spool = self.openSpool(directory, segmentSize=4000)
        ids = self.fill(spool, 6, size=1000)
        for queueId in ids[:2]:
            self.assertEqual(self.segments(directory)[0], "seg-00000001")
            spool.remove(queueId)
        self.assertNotIn("seg-00000001", self.segments(directory))
        for queueId in ids[2:]:
            spool.remove(queueId)
        self.assertEqual(self.segments(directory), ["seg-00000003"])

    def test_sparseSegmentCompacted(self) -> None:
        """
        The live records of a segment under a quarter live move to the
        active segment, keep their ids, bytes and retry state, and the old
        segment goes.
        """
        directory = self.mktemp()
        spool = self.openSpool(directory, segmentSize=12000)
        ids = self.fill(spool, 12, size=1000)
        self.assertEqual(self.segments(directory)[:2], ["seg-00000001", "seg-00000002"])
        spool.update(ids[3], 4, 7777.0, "451 later")
        stream = spool.source(ids[3]).open()
        self.addCleanup(stream.close)
        for queueId in ids[:3] + ids[4:8]:
            spool.remove(queueId)
        self.assertNotIn("seg-00000001", self.segments(directory))
        self.assertEqual(readAll(spool, ids[3]), message(3, 1000))
        self.assertEqual(stream.read(), message(3, 1000))
        spool = self.reopen(spool, directory, segmentSize=12000)
        found = spool.recover()
        self.assertEqual([m.queueId for m in found], [ids[3]] + ids[8:])
        self.assertEqual((found[0].attempts, found[0].nextAttempt), (4, 7777.0))

    def test_reclaimAfterRecovery(self) -> None:
        """
        Segments left with no live records are deleted after a restart.
        """
        directory = self.mktemp()
        spool = self.openSpool(directory, segmentSize=4000)
        ids = self.fill(spool, 6, size=1000)
        for queueId in ids:
            spool.remove(queueId)
        spool = self.reopen(spool, directory)
        self.assertEqual(spool.recover(), [])
        self.assertEqual(self.segments(directory), [])


class SourceTests(SpoolTestsMixin, SynchronousTestCase):
    """
    L{Spool.source} streams a message from its segment.
    """

    def test_streamsInChunks(self) -> None:
        """
        The source reads the message in pieces, ends exactly at its end and
        never runs into the next record.
        """
        spool = self.openSpool(self.mktemp())
        big = os.urandom(3 << 20)
        queueId = self.successResultOf(spool.add(ENVELOPE, big, 1.0))
        self.fill(spool, 1)
        source = spool.source(queueId)
        self.assertEqual(source.size, len(big))
        pieces = []
        with source.open() as stream:
            while piece := stream.read(100_000):
                self.assertLessEqual(len(piece), 100_000)
                pieces.append(piece)
        self.assertEqual(b"".join(pieces), big)
        self.assertEqual(readAll(spool, queueId), big)

    def test_removedSourceCannotOpen(self) -> None:
        """
        Opening the source of a removed message raises L{LookupError}.
        """
        spool = self.openSpool(self.mktemp())
        [queueId] = self.fill(spool, 1)
        source = spool.source(queueId)
        spool.remove(queueId)
        self.assertRaises(LookupError, source.open)


class InFlightTests(SpoolTestsMixin, SynchronousTestCase):
    """
    A segment that a commit under way is writing to is never deleted.
    """

    def test_rotatedSegmentWithNewRecordsKept(self) -> None:
        """
        When a group commit puts its first record in the active segment,
        which has no live record left, and a later one in a new segment,
        the first record survives the rotation, the reclaim that follows and
        a restart.
        """
        directory = self.mktemp()
        runner = HeldRunner()
        spool = self.openSpool(directory, runner, segmentSize=4000)
        first = spool.add(ENVELOPE, message(0, 1000), 1.0)
        first.addCallback(spool.remove)
        kept = spool.add(ENVELOPE, message(1, 1000), 2.0)
        spool.add(ENVELOPE, message(2, 3000), 3.0)
        while runner.jobs:
            runner.runOne()
        queueId = self.successResultOf(kept)
        self.assertEqual(readAll(spool, queueId), message(1, 1000))
        spool = self.reopen(spool, directory)
        self.assertIn(queueId, [found.queueId for found in spool.recover()])

    def test_segmentEmptiedDuringTheCommitKept(self) -> None:
        """
        When the last live record of a segment that a commit under way is
        writing to is removed during the commit, the segment stays, with the
        new record in it.
        """
        directory = self.mktemp()
        runner = HeldRunner()
        spool = self.openSpool(directory, runner, segmentSize=4000)
        older = spool.add(ENVELOPE, message(0, 800), 1.0)
        runner.runOne()
        busy = spool.add(ENVELOPE, message(1, 800), 2.0)
        kept = spool.add(ENVELOPE, message(2, 800), 3.0)
        spool.add(ENVELOPE, message(3, 3000), 4.0)
        runner.runOne()
        spool.remove(self.successResultOf(older))
        spool.remove(self.successResultOf(busy))
        while runner.jobs:
            runner.runOne()
        queueId = self.successResultOf(kept)
        self.assertEqual(readAll(spool, queueId), message(2, 800))
        spool = self.reopen(spool, directory)
        self.assertIn(queueId, [found.queueId for found in spool.recover()])


class FailedCommitTests(SpoolTestsMixin, SynchronousTestCase):
    """
    The records of a commit that failed never come back after a restart.
    """

    def breakFsync(self) -> None:
        def broken(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(os, "fsync", broken)

    def failedAdd(self, spool: Spool, n: int, size: int = 60) -> None:
        self.breakFsync()
        self.failureResultOf(spool.add(ENVELOPE, message(n, size), 1.0), OSError)
        self.flushLoggedErrors(OSError)
        self.patch(os, "fsync", lambda fd: None)

    def test_failedAddNotRecovered(self) -> None:
        """
        A message whose add failed, and so was never accepted, is not in the
        spool after a restart, though its record was written whole.
        """
        directory = self.mktemp()
        spool = self.openSpool(directory)
        ids = self.fill(spool, 1)
        self.failedAdd(spool, 1)
        ids += self.fill(spool, 1, first=2)
        spool = self.reopen(spool, directory)
        self.assertEqual([found.queueId for found in spool.recover()], ids)

    def test_failedAddInANewSegmentNotRecovered(self) -> None:
        """
        A message whose add failed in a segment file that its commit created
        is not in the spool after a restart, and that file is gone.
        """
        directory = self.mktemp()
        spool = self.openSpool(directory, segmentSize=4000)
        ids = self.fill(spool, 1, size=3000)
        self.failedAdd(spool, 1, size=3000)
        self.assertEqual(
            sorted(name for name in os.listdir(directory) if name.startswith("seg-")),
            ["seg-00000001"],
        )
        spool = self.reopen(spool, directory)
        self.assertEqual([found.queueId for found in spool.recover()], ids)

    def test_failedReplaceNotRecovered(self) -> None:
        """
        When a replace fails and the message is later removed, the record of
        the failed replace does not bring the message back after a restart.
        """
        directory = self.mktemp()
        spool = self.openSpool(directory)
        ids = self.fill(spool, 2)
        self.breakFsync()
        fewer = Envelope(ENVELOPE.sender, ["b@example.net"])
        self.failureResultOf(spool.replace(ids[0], fewer), OSError)
        self.flushLoggedErrors(OSError)
        self.patch(os, "fsync", lambda fd: None)
        spool.remove(ids[0])
        spool = self.reopen(spool, directory)
        self.assertEqual([found.queueId for found in spool.recover()], ids[1:])


class InPlaceWriteTests(SpoolTestsMixin, SynchronousTestCase):
    """
    The retry state written in place is best effort, like its missing
    fsync: a failure to write it is logged and stops nothing.
    """

    def breakInPlaceWrites(self) -> list[int]:
        """
        Make every in-place write of a retry state fail with EIO.

        @return: The descriptors that in-place writes were tried on.
        """
        tried: list[int] = []
        realPwrite = os.pwrite

        def pwrite(fd: int, data: Any, offset: int) -> int:
            if len(data) == _spoolformat.MUTABLE_SIZE:
                tried.append(fd)
                raise OSError(errno.EIO, "Input/output error")
            return realPwrite(fd, data, offset)

        self.patch(os, "pwrite", pwrite)
        return tried

    def test_failedInPlaceWriteDuringACommit(self) -> None:
        """
        When the retry state of a replaced record cannot be written in
        place, the replace still completes and the spool takes the next
        message.
        """
        spool = self.openSpool(self.mktemp())
        ids = self.fill(spool, 1)
        tried = self.breakInPlaceWrites()
        fewer = Envelope(ENVELOPE.sender, ["b@example.net"])
        with capturedLogs() as events:
            self.successResultOf(spool.replace(ids[0], fewer))
        self.assertTrue(tried)
        self.assertIn(ids[0], [event.get("queueId") for event in events])
        self.fill(spool, 1, first=1)

    def test_failedInPlaceRemove(self) -> None:
        """
        A remove whose in-place write fails still takes the message out, and
        its segment is deleted once nothing in it is live.
        """
        directory = self.mktemp()
        spool = self.openSpool(directory, segmentSize=4000)
        ids = self.fill(spool, 4, size=1000)
        self.breakInPlaceWrites()
        with capturedLogs():
            spool.remove(ids[0])
            spool.remove(ids[1])
        self.assertRaises(KeyError, spool.source, ids[0])
        self.assertNotIn("seg-00000001", os.listdir(directory))

    def test_noWritesAfterClose(self) -> None:
        """
        An update or a remove that comes after the spool is closed (from a
        delivery that ended late) writes to no descriptor, since the
        numbers of the closed ones may belong to other files by then.
        """
        spool = self.openSpool(self.mktemp())
        ids = self.fill(spool, 2)
        self.successResultOf(spool.close())
        tried = self.breakInPlaceWrites()
        with capturedLogs():
            spool.update(ids[0], 1, 2.0, "451 later")
            spool.remove(ids[1])
        self.assertEqual(tried, [])
