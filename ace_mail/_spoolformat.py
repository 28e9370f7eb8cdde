# -*- test-case-name: tests.test_spool -*-
"""
The on-disk format of a spool record, and the reading and writing of one.

A record is a fixed header, a fixed-size mutable area and the payload::

    header   magic, version, queue id, payload length, payload CRC32,
             and a CRC32 of those fields
    mutable  state, attempts, next attempt, last error, and a CRC32 of them
    payload  length of the metadata, the metadata as JSON (the envelope and
             the created time), then the message bytes

The payload never changes once written; the mutable area is rewritten in
place.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import struct
import zlib
from typing import Iterator, Sequence

from attrs import frozen
from twisted.logger import Logger

from .envelope import Envelope

_log = Logger()

MAGIC = b"ACEq"
VERSION = 1

LIVE = 1
DONE = 2

LAST_ERROR_SIZE = 232
CHUNK = 1 << 20

_HEADER = struct.Struct(">4sB3x16sQI")
_CHECK = struct.Struct(">I")
_MUTABLE = struct.Struct(">B3xIdH232s2x")
_META_LENGTH = struct.Struct(">I")

HEADER_SIZE = _HEADER.size + _CHECK.size
MUTABLE_SIZE = _MUTABLE.size + _CHECK.size
PAYLOAD_OFFSET = HEADER_SIZE + MUTABLE_SIZE

_QUEUE_ID = re.compile(rb"[a-z2-7]{16}")


def newQueueId() -> str:
    """
    @return: A new queue id: 80 random bits as 16 lowercase base32 letters.
    """
    return base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()


@frozen
class Mutable:
    """
    The part of a record that changes after it is written.

    @ivar state: L{LIVE} or L{DONE}.
    @ivar attempts: The number of failed delivery attempts so far.
    @ivar nextAttempt: When to try again, in seconds since the epoch.
    @ivar lastError: The reply of the last failed attempt, cut to
        L{LAST_ERROR_SIZE} bytes of UTF-8.
    """

    state: int
    attempts: int
    nextAttempt: float
    lastError: str

    def encode(self) -> bytes:
        """
        @return: The L{MUTABLE_SIZE} bytes of this mutable area.
        """
        error = self.lastError.encode("utf-8")[:LAST_ERROR_SIZE]
        fields = _MUTABLE.pack(
            self.state, self.attempts, self.nextAttempt, len(error), error
        )
        return fields + _CHECK.pack(zlib.crc32(fields))

    @classmethod
    def decode(cls, data: bytes) -> Mutable | None:
        """
        @return: The mutable area in C{data}, or L{None} if its check fails.
        """
        fields = data[: _MUTABLE.size]
        (check,) = _CHECK.unpack_from(data, _MUTABLE.size)
        if zlib.crc32(fields) != check:
            return None
        state, attempts, nextAttempt, length, error = _MUTABLE.unpack(fields)
        lastError = error[:length].decode("utf-8", "ignore")
        return cls(state, attempts, nextAttempt, lastError)


@frozen
class Header:
    """
    The fixed header of a record.

    @ivar queueId: The queue id of the message.
    @ivar payloadLength: The length of the payload in bytes.
    @ivar payloadCrc: The CRC32 of the payload.
    """

    queueId: str
    payloadLength: int
    payloadCrc: int

    @property
    def recordLength(self) -> int:
        return PAYLOAD_OFFSET + self.payloadLength

    def encode(self) -> bytes:
        """
        @return: The L{HEADER_SIZE} bytes of this header.
        """
        fields = _HEADER.pack(
            MAGIC,
            VERSION,
            self.queueId.encode("ascii"),
            self.payloadLength,
            self.payloadCrc,
        )
        return fields + _CHECK.pack(zlib.crc32(fields))

    @classmethod
    def decode(cls, data: bytes) -> Header | None:
        """
        @return: The header at the start of C{data}, or L{None} if there is
            no sane header there.
        """
        if len(data) < HEADER_SIZE:
            return None
        fields = data[: _HEADER.size]
        (check,) = _CHECK.unpack_from(data, _HEADER.size)
        if zlib.crc32(fields) != check:
            return None
        magic, version, queueId, length, crc = _HEADER.unpack(fields)
        if magic != MAGIC or version != VERSION or not _QUEUE_ID.fullmatch(queueId):
            return None
        return cls(queueId.decode("ascii"), length, crc)


@frozen
class Range:
    """
    Bytes already in a segment file, to be copied into a new record.

    @ivar fd: The open segment file.
    @ivar offset: Where the bytes start.
    @ivar length: How many bytes there are.
    """

    fd: int
    offset: int
    length: int

    def chunks(self) -> Iterator[bytes]:
        """
        @return: The bytes, in chunks of at most L{CHUNK} bytes.
        @raise OSError: If the file ends early.
        """
        done = 0
        while done < self.length:
            data = os.pread(self.fd, min(CHUNK, self.length - done), self.offset + done)
            if not data:
                raise OSError(f"spool segment ended {self.length - done} bytes early")
            done += len(data)
            yield data


@frozen
class MessageParts:
    """
    A message given as pieces, to be copied into a record a chunk at a time
    rather than held in memory whole.

    @ivar pieces: The message, in order: bytes as they are, and ranges of
        open files (such as the temporary file a message was received
        into); each file must stay open, and unchanged in that range, until
        the record is written.
    """

    pieces: Sequence[bytes | Range]

    @property
    def length(self) -> int:
        """
        The length of the whole message.
        """
        return sum(
            piece.length if isinstance(piece, Range) else len(piece)
            for piece in self.pieces
        )

    def chunks(self) -> Iterator[bytes]:
        """
        @return: The message, in chunks of at most L{CHUNK} bytes for the
            ranges and as they are for the bytes.
        @raise OSError: If a file ends before its range does.
        """
        for piece in self.pieces:
            if isinstance(piece, Range):
                yield from piece.chunks()
            else:
                yield piece

    def read(self) -> bytes:
        """
        @return: The whole message in memory.
        @raise OSError: If a file ends before its range does.
        """
        return b"".join(self.chunks())


def encodeMeta(envelope: Envelope, created: float) -> bytes:
    """
    @return: The metadata of a payload, with its length in front.
    """
    meta = json.dumps(
        {
            "sender": envelope.sender,
            "recipients": list(envelope.recipients),
            "route": envelope.route,
            "created": created,
        },
        separators=(",", ":"),
    ).encode("utf-8")
    return _META_LENGTH.pack(len(meta)) + meta


def _writeAll(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def writeRecord(
    fd: int,
    offset: int,
    queueId: str,
    meta: bytes,
    message: bytes | Range | MessageParts,
    mutable: Mutable,
) -> None:
    """
    Write one record; the caller fsyncs.

    @param meta: The output of L{encodeMeta}.
    @param message: The message, or where to copy it from.
    @raise OSError: If it cannot be written, or a file it is copied from
        ends early.
    """
    crc = zlib.crc32(meta)
    if isinstance(message, (Range, MessageParts)):
        position = offset + PAYLOAD_OFFSET + len(meta)
        for chunk in message.chunks():
            crc = zlib.crc32(chunk, crc)
            _writeAll(fd, chunk, position)
            position += len(chunk)
        length, tail = message.length, b""
    else:
        crc = zlib.crc32(message, crc)
        length, tail = len(message), message
    header = Header(queueId, len(meta) + length, crc)
    _writeAll(fd, header.encode() + mutable.encode() + meta + tail, offset)


def messageOffset(meta: bytes) -> int:
    """
    @return: Where the message starts, counted from the start of its record.
    """
    return PAYLOAD_OFFSET + len(meta)


@frozen
class Found:
    """
    A record found by L{scanSegment}, its payload intact.

    @ivar offset: Where the record starts in the segment.
    @ivar header: Its header.
    @ivar mutable: Its mutable area, or L{None} if that failed its check.
    @ivar envelope: The envelope from its metadata.
    @ivar created: The created time from its metadata.
    @ivar metaLength: The length of the metadata, with its length field.
    """

    offset: int
    header: Header
    mutable: Mutable | None
    envelope: Envelope
    created: float
    metaLength: int


def _readFound(fd: int, offset: int, header: Header, head: bytes) -> Found | None:
    payload = Range(fd, offset + PAYLOAD_OFFSET, header.payloadLength)
    crc = 0
    for chunk in payload.chunks():
        crc = zlib.crc32(chunk, crc)
    if crc != header.payloadCrc or header.payloadLength < _META_LENGTH.size:
        return None
    (length,) = _META_LENGTH.unpack(os.pread(fd, _META_LENGTH.size, payload.offset))
    if length > header.payloadLength - _META_LENGTH.size:
        return None
    try:
        meta = json.loads(os.pread(fd, length, payload.offset + _META_LENGTH.size))
        envelope = Envelope(meta["sender"], meta["recipients"], meta["route"])
        created = float(meta["created"])
    except (ValueError, KeyError, TypeError):
        return None
    mutable = Mutable.decode(head[HEADER_SIZE:PAYLOAD_OFFSET])
    return Found(offset, header, mutable, envelope, created, _META_LENGTH.size + length)


def _nextHeader(fd: int, start: int, size: int) -> int | None:
    position = start
    while position < size:
        window = os.pread(fd, CHUNK + PAYLOAD_OFFSET, position)
        found = window.find(MAGIC, 1 if position == start else 0)
        while found != -1 and found < CHUNK:
            if Header.decode(window[found : found + HEADER_SIZE]) is not None:
                return position + found
            found = window.find(MAGIC, found + 1)
        position += CHUNK
    return None


def scanSegment(fd: int, size: int, name: str) -> tuple[list[Found], int]:
    """
    Read every record of a segment.

    A damaged record followed by intact ones is logged and skipped; damaged
    records at the tail are a write that was never acknowledged, and are
    cut off.

    @param name: The segment's name, for the log.
    @return: The intact records in order, and where the segment should be
        cut.
    """
    found: list[Found] = []
    damaged: list[tuple[int, int, str]] = []
    offset = 0
    while offset < size:
        head = os.pread(fd, PAYLOAD_OFFSET, offset)
        header = Header.decode(head)
        if header is None:
            resume = _nextHeader(fd, offset, size)
            if resume is None:
                break
            damaged.append((offset, resume - offset, "(unknown)"))
            offset = resume
            continue
        end = offset + header.recordLength
        if end > size:
            break
        record = _readFound(fd, offset, header, head)
        if record is None:
            damaged.append((offset, header.recordLength, header.queueId))
        else:
            for at, length, queueId in damaged:
                _log.error(
                    "{queueId}: spool segment {segment} has {length} damaged "
                    "bytes at {offset}; a message there is lost",
                    queueId=queueId,
                    segment=name,
                    length=length,
                    offset=at,
                )
            damaged = []
            found.append(record)
        offset = end
    return found, damaged[0][0] if damaged else offset
