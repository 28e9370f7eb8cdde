# -*- test-case-name: tests.test_apicontacts,tests.test_openapi -*-
"""
The API's answers that are not JSON: bytes of some content type, or a file
sent a piece at a time as the client takes it.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from attrs import frozen
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

_log = Logger()
_CHUNK = 1 << 16


@frozen
class RawAnswer:
    """
    An endpoint's answer with a body of its own content type.

    @ivar status: The HTTP status.
    @ivar contentType: The Content-Type, such as C{"message/rfc822"}.
    @ivar body: The bytes of the body, or an open binary file that is sent
        from where it stands to its end and then closed.
    """

    status: int
    contentType: str
    body: bytes | BinaryIO

    def writeTo(self, request: Request) -> None:
        """
        Answer C{request} with this status, content type and body.
        """
        body = self.body
        if request.channel is None:
            if not isinstance(body, bytes):
                body.close()
            return
        request.setResponseCode(self.status)
        request.setHeader(b"Content-Type", self.contentType.encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-store")
        if isinstance(body, bytes):
            request.setHeader(b"Content-Length", b"%d" % (len(body),))
            request.write(body)
            request.finish()
            return
        size = os.fstat(body.fileno()).st_size - body.tell()
        request.setHeader(b"Content-Length", b"%d" % (size,))
        _FileProducer(request, body).start()


@implementer(IPushProducer)
class _FileProducer:
    """
    Writes a file to a request a piece at a time, pausing while the
    connection's send buffer is full, so that a large file is never read
    whole into memory.
    """

    def __init__(self, request: Request, file: BinaryIO) -> None:
        self.request = request
        self.file = file
        self.paused = False
        self.done = False

    def start(self) -> None:
        self.request.notifyFinish().addErrback(self._lost)
        self.request.registerProducer(self, True)
        self.resumeProducing()

    def _lost(self, reason: Failure) -> None:
        self.stopProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and not self.done:
            try:
                chunk = self.file.read(_CHUNK)
            except OSError as e:
                _log.error(
                    "Cannot read {path} for {uri}: {error}",
                    path=self.file.name,
                    uri=self.request.uri,
                    error=e.strerror,
                )
                self.stopProducing()
                self.request.unregisterProducer()
                self.request.loseConnection()
                return
            if not chunk:
                self.stopProducing()
                self.request.unregisterProducer()
                self.request.finish()
                return
            self.request.write(chunk)

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        if not self.done:
            self.done = True
            self.file.close()
