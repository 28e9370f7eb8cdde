"""
Tests for adding a message to L{ace_mail.spool} as parts: bytes in memory
and ranges of an open file, copied into the record a chunk at a time.
"""

from __future__ import annotations

import errno
import os
import tempfile
import zlib
from typing import BinaryIO

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from ace_mail import _spoolformat
from ace_mail import queue as queueModule
from ace_mail.queue import Queue
from ace_mail.spool import MessageParts, Range, Spool

from .test_queue import ENVELOPE as QUEUE_ENVELOPE
from .test_queue import QueueTestsMixin
from .test_spool import ENVELOPE, HeldRunner, SpoolTestsMixin, readAll, runNow

HEADER = b"Subject: parts\r\n\r\n"


def bodyFile(test: SynchronousTestCase, size: int) -> tuple[BinaryIO, bytes]:
    """
    @return: An open temporary file holding C{size} bytes of a body after
        some bytes that are not part of it, and that body.
    """
    body = bytes(range(256)) * (size // 256) + b"\r\n" * (size % 256 // 2)
    file = tempfile.TemporaryFile()
    test.addCleanup(file.close)
    file.write(b"not the body" + body)
    file.flush()
    return file, body


def parts(file: BinaryIO, body: bytes) -> MessageParts:
    return MessageParts((HEADER, Range(file.fileno(), 12, len(body))))


class PartsTests(SpoolTestsMixin, SynchronousTestCase):
    """
    A message given as parts is stored as if it were given whole, and as
    durably.
    """

    def test_writtenAndFsyncedBeforeItFires(self) -> None:
        """
        Nothing of a message given as parts is written before the writer
        thread runs, and its L{Deferred} fires only after its segment is
        fsync'd; the message read back is the parts joined.
        """
        runner = HeldRunner()
        directory = self.mktemp()
        spool = self.openSpool(directory, runner)
        events: list[str] = []
        realFsync = os.fsync
        self.patch(os, "fsync", lambda fd: (events.append("fsync"), realFsync(fd)))
        file, body = bodyFile(self, 5000)
        added = spool.add(ENVELOPE, parts(file, body), 1000.0)
        added.addCallback(lambda queueId: events.append("fired") or queueId)
        self.assertNoResult(added)
        self.assertEqual((events, os.listdir(directory)), ([], []))
        runner.runOne()
        queueId = self.successResultOf(added)
        self.assertEqual(events, ["fsync", "fsync", "fired"])
        self.assertEqual(readAll(spool, queueId), HEADER + body)

    def test_copiedInChunksWithItsCrc(self) -> None:
        """
        A range larger than L{_spoolformat.CHUNK} is read from its file a
        chunk at a time, and the record's CRC covers the whole message: it
        is found again, whole, after a restart.
        """
        self.patch(_spoolformat, "CHUNK", 1000)
        file, body = bodyFile(self, 10_000)
        reads: list[int] = []
        realPread = os.pread

        def pread(fd: int, size: int, offset: int) -> bytes:
            if fd == file.fileno():
                reads.append(size)
            return realPread(fd, size, offset)

        self.patch(os, "pread", pread)
        directory = self.mktemp()
        spool = self.openSpool(directory)
        queueId = self.successResultOf(spool.add(ENVELOPE, parts(file, body), 1.0))
        self.assertEqual(reads, [1000] * 10)
        with open(os.path.join(directory, "seg-00000001"), "rb") as segment:
            record = segment.read()
        header = _spoolformat.Header.decode(record)
        assert header is not None
        meta = _spoolformat.encodeMeta(ENVELOPE, 1.0)
        self.assertEqual(header.payloadCrc, zlib.crc32(meta + HEADER + body))
        spool = self.reopen(spool, directory)
        [found] = spool.recover()
        self.assertEqual((found.queueId, found.size), (queueId, len(HEADER + body)))
        self.assertEqual(readAll(spool, queueId), HEADER + body)

    def test_tornTailCutOff(self) -> None:
        """
        A record written from parts and cut short at any of many offsets is
        discarded at recovery, and the segment cut back to where it began.
        """
        directory = self.mktemp()
        spool = self.openSpool(directory)
        kept = self.fill(spool, 1)
        path = os.path.join(directory, "seg-00000001")
        start = os.path.getsize(path)
        file, body = bodyFile(self, 3000)
        self.successResultOf(spool.add(ENVELOPE, parts(file, body), 1.0))
        self.successResultOf(spool.close())
        with open(path, "rb") as segment:
            data = segment.read()
        for end in range(start, len(data), 97):
            with open(path, "wb") as segment:
                segment.write(data[:end])
            spool = Spool.open(directory, runNow)
            found = [m.queueId for m in spool.recover()]
            self.successResultOf(spool.close())
            self.assertEqual((found, os.path.getsize(path)), (kept, start), end)

    def test_fileEndingEarlyFailsTheCommitAndIsTakenBack(self) -> None:
        """
        When a file ends before its range does, the commit fails with
        L{OSError}, what it wrote is cut off again, and the next add
        succeeds; after a restart only the accepted messages are there.
        """
        directory = self.mktemp()
        spool = self.openSpool(directory)
        kept = self.fill(spool, 1)
        size = os.path.getsize(os.path.join(directory, "seg-00000001"))
        file, body = bodyFile(self, 3000)
        tooLong = MessageParts((HEADER, Range(file.fileno(), 12, len(body) + 50)))
        self.failureResultOf(spool.add(ENVELOPE, tooLong, 1.0), OSError)
        self.flushLoggedErrors(OSError)
        self.assertEqual(os.path.getsize(os.path.join(directory, "seg-00000001")), size)
        kept += self.fill(spool, 1, first=1)
        spool = self.reopen(spool, directory)
        self.assertEqual([m.queueId for m in spool.recover()], kept)

    def test_failedFsyncTakenBack(self) -> None:
        """
        A message given as parts whose commit failed to fsync is refused,
        and is not in the spool after a restart.
        """
        directory = self.mktemp()
        spool = self.openSpool(directory)
        kept = self.fill(spool, 1)

        def broken(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        self.patch(os, "fsync", broken)
        file, body = bodyFile(self, 3000)
        self.failureResultOf(spool.add(ENVELOPE, parts(file, body), 1.0), OSError)
        self.flushLoggedErrors(OSError)
        self.patch(os, "fsync", lambda fd: None)
        spool = self.reopen(spool, directory)
        self.assertEqual([m.queueId for m in spool.recover()], kept)


class QueuePartsTests(QueueTestsMixin, SynchronousTestCase):
    """
    The queue takes parts as it takes bytes; a signer signs only small ones.
    """

    def signed(self) -> Queue:
        return self.restart(signer=lambda data: b"DKIM-Signature: x\r\n" + data)

    def test_partsDelivered(self) -> None:
        """
        A message enqueued as parts is delivered with the parts' bytes and
        listed with their size.
        """
        file, body = bodyFile(self, 2000)
        queueId = self.successResultOf(
            self.queue.enqueue(QUEUE_ENVELOPE, parts(file, body))
        )
        self.assertEqual(self.deliver.calls[0].data, HEADER + body)
        entry = self.queue.get(queueId)
        assert entry is not None
        self.assertEqual(entry.size, len(HEADER + body))

    def test_smallPartsSigned(self) -> None:
        """
        With a signer, parts under the bound are read and signed.
        """
        self.signed()
        file, body = bodyFile(self, 2000)
        self.successResultOf(self.queue.enqueue(QUEUE_ENVELOPE, parts(file, body)))
        self.assertEqual(
            self.deliver.calls[0].data, b"DKIM-Signature: x\r\n" + HEADER + body
        )

    def test_largePartsQueuedUnsignedWithAWarning(self) -> None:
        """
        With a signer, parts at or over the bound are queued unsigned, and
        a warning names the queue id.
        """
        self.patch(queueModule, "SIGNED_PARTS_LIMIT", 1000)
        self.signed()
        file, body = bodyFile(self, 2000)
        with capturedLogs() as events:
            queueId = self.successResultOf(
                self.queue.enqueue(QUEUE_ENVELOPE, parts(file, body))
            )
        self.assertEqual(self.deliver.calls[0].data, HEADER + body)
        warnings = [e for e in events if "too large to sign" in e["log_format"]]
        self.assertEqual([e["queueId"] for e in warnings], [queueId])
