# -*- test-case-name: tests.test_proxy_server -*-
"""
The plumbing of one SMTP server connection: lines, waiting, timeouts, replies.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import _replies as replies
from ._policy import Refusal

if TYPE_CHECKING:
    from ._factory import ProxyFactory

_log = Logger()
_T = TypeVar("_T")

HARD_LINE_LIMIT = 65536


class Mode(enum.Enum):
    """
    What the next input is: commands, message data, or an AUTH response.
    """

    COMMAND = "command"
    DATA = "data"
    AUTH = "auth"


class Session(Protocol):
    """
    Splits input at CRLF and hands it on one piece at a time.

    Subclasses handle each command line in L{lineReceived} and message data
    in L{feedData}. A handler that must wait for something calls L{wait}:
    reading stops, input that already arrived stays in the buffer, and it
    is handled once the answer is written, so that a pipelining client
    cannot run ahead. A line that does not end within L{HARD_LINE_LIMIT}
    bytes closes the connection. Only a line's end restarts the timeout, so
    a client that trickles bytes without ever ending a line (slowloris) is
    closed when it runs out.

    @ivar peer: The client's address and port, for logs.
    @ivar mode: What the next input is.
    """

    def __init__(self, factory: ProxyFactory) -> None:
        self.factory = factory
        self.settings = factory.settings
        self.peer = "unknown"
        self.host: str | None = None
        self.mode = Mode.COMMAND
        self.closing = False
        self._buffer = b""
        self._pos = 0
        self._lastByte = b""
        self._busy = False
        self._processing = False
        self._admitted = False
        self._timer: IDelayedCall | None = None

    @property
    def wire(self) -> Any:
        """
        The transport: TCP, TLS over TCP or a test's fake; each can pause,
        write, close and (all but TLS) start TLS.
        """
        return self.transport

    def connectionMade(self) -> None:
        peer = self.wire.getPeer()
        self.host = getattr(peer, "host", None)
        self.peer = (
            f"{self.host}:{getattr(peer, 'port', '')}" if self.host else str(peer)
        )
        refusal = self.factory.admit(self.host)
        if refusal is not None:
            self.closeWith(refusal)
            return
        self._admitted = True
        self.sessionStarted()
        self._armTimer()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closing = True
        self._cancelTimer()
        if self._admitted:
            self._admitted = False
            self.factory.release(self.host)
            self.sessionEnded()

    def sessionStarted(self) -> None:
        """
        Called once the connection is admitted: greet the client.
        """
        raise NotImplementedError()

    def sessionEnded(self) -> None:
        """
        Called once an admitted connection is closed: log its end.
        """
        raise NotImplementedError()

    def lineReceived(self, line: bytes) -> None:
        """
        Handle one line, without its CRLF, in command or AUTH mode.
        """
        raise NotImplementedError()

    def feedData(self, data: bytes) -> bytes | None:
        """
        Take message data in DATA mode.

        @return: L{None} while the message goes on, else the input after its
            end; the subclass has then left DATA mode.
        """
        raise NotImplementedError()

    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        lineEnded = b"\r\n" in self._lastByte + data
        self._lastByte = data[-1:] or self._lastByte
        self._buffer += data
        self._process(restartTimer=lineEnded)

    def discardInput(self) -> int:
        """
        Forget the input not handled yet.

        @return: How many bytes were dropped.
        """
        dropped = len(self._buffer) - self._pos
        self._buffer, self._pos = b"", 0
        return dropped

    def _process(self, restartTimer: bool = True) -> None:
        if self._processing:
            return
        self._processing = True
        try:
            while not self._busy and not self.closing:
                if self.mode is Mode.DATA:
                    rest = self.feedData(self._buffer[self._pos :])
                    self._buffer, self._pos = rest or b"", 0
                    if rest is None:
                        break
                    continue
                end = self._buffer.find(b"\r\n", self._pos)
                if end < 0:
                    break
                line = self._buffer[self._pos : end]
                self._pos = end + 2
                self.lineReceived(line)
        finally:
            self._processing = False
        self._buffer, self._pos = self._buffer[self._pos :], 0
        idle = not self._busy and not self.closing
        if idle and len(self._buffer) > HARD_LINE_LIMIT:
            self.closeWith(replies.UNTERMINATED_LINE)
        self._armTimer(restartTimer)

    def wait(
        self,
        deferred: Deferred[_T],
        done: Callable[[_T], None],
        failed: Callable[[Failure], None],
    ) -> None:
        """
        Stop reading until C{deferred} fires, answer with C{done} or
        C{failed}, then go on with the buffered input. Once the connection
        is closing, nothing is answered.
        """
        self._busy = True
        self._cancelTimer()
        self.wire.pauseProducing()

        def finish(result: _T | Failure) -> None:
            self._busy = False
            if self.closing:
                return
            if isinstance(result, Failure):
                failed(result)
            else:
                done(result)
            if not self.closing:
                self.wire.resumeProducing()
                self._process()

        deferred.addBoth(finish).addErrback(
            lambda reason: _log.failure("{peer} session failed", reason, peer=self.peer)
        )

    def _armTimer(self, restart: bool = True) -> None:
        """
        Start the timeout, or with C{restart} start it again from now.
        """
        if self._busy or self.closing:
            return
        if self.mode is Mode.DATA:
            timeout = self.settings.dataTimeout
        else:
            timeout = self.settings.idleTimeout
        if self._timer is not None and self._timer.active():
            if restart:
                self._timer.reset(timeout)
        else:
            self._timer = self.factory.clock.callLater(timeout, self._timedOut)

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timedOut(self) -> None:
        self._timer = None
        if self.mode is Mode.DATA:
            self.closeWith(replies.timedOut("inside DATA", self.settings.dataTimeout))
        else:
            self.closeWith(
                replies.timedOut("between commands", self.settings.idleTimeout)
            )

    def closeWith(self, refusal: Refusal) -> None:
        """
        Answer with C{refusal} and close the connection.
        """
        self.refuse(refusal)
        self.closing = True
        self._cancelTimer()
        self.wire.loseConnection()

    def refuse(self, refusal: Refusal, **fields: Any) -> None:
        """
        Answer with C{refusal}, count it and log it with C{fields}.
        """
        self.factory.refusals[refusal.reason] += 1
        _log.info(
            "{peer} refused: {reply}",
            peer=self.peer,
            reply=str(refusal),
            reason=refusal.reason,
            **fields,
        )
        self.write(str(refusal))

    def write(self, reply: str) -> None:
        """
        Send one reply, or several lines joined with CRLF.
        """
        self.wire.write(reply.encode("ascii", "replace") + b"\r\n")
