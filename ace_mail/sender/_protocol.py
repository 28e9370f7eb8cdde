# -*- test-case-name: tests.test_sender_protocol -*-
"""
One client connection to an SMTP server: commands, replies and timeouts.
"""

from __future__ import annotations

from collections import deque
from typing import Any, BinaryIO, Sequence

from attrs import frozen
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IOpenSSLClientConnectionCreator,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import connectionDone
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from ..envelope import MessageSource, Reply
from ._encoder import DataEncoder

CHUNK_SIZE = 64 * 1024

MAX_REPLY_SIZE = 64 * 1024
"""
The most text one reply may have over all its lines; a server that goes on
sending continuation lines is given up on rather than buffered.
"""


class SessionFailure(Exception):
    """
    The conversation with a server broke down: the connection was lost, a
    reply did not come in time, or a reply means that the server cannot
    take mail now.

    @ivar reply: The reply that ended the conversation; local failures carry
        a 421 with a sentence that names the server.
    @ivar closedByPeer: C{True} if the connection was found closed rather
        than given up on.
    """

    def __init__(self, reply: Reply, closedByPeer: bool = False) -> None:
        super().__init__(reply)
        self.reply = reply
        self.closedByPeer = closedByPeer


@frozen
class _Expectation:
    """
    A reply that the connection is waiting for.

    @ivar deferred: Fires with the L{Reply}.
    @ivar timeout: Seconds to wait for it, counted from the previous reply.
    @ivar what: What the reply answers, for the timeout's sentence.
    @ivar sentDuring: How many reads had begun when the command was sent: a
        reply found in that same read was sent before the command was.
    """

    deferred: Deferred[Reply]
    timeout: float
    what: str
    sentDuring: int


class SMTPConnection(LineReceiver):
    """
    The client side of one SMTP connection.

    It sends commands, alone or pipelined, and matches the replies to them
    in order. Each reply has its own timeout; when one runs out, the
    connection is lost, or a reply comes before its command was sent (a
    server that answers ahead, such as with a 250 for a message it has not
    seen), every outstanding reply fails with a L{SessionFailure} and the
    connection is closed.

    @ivar peer: The server's address as C{host:port}, for the sentences of
        local failures.
    @ivar extensions: The EHLO keywords (upper case) and their parameters.
    """

    delimiter = b"\r\n"
    MAX_LENGTH = 65536

    def __init__(self, clock: IReactorTime, peer: str, greetingTimeout: float) -> None:
        self.peer = peer
        self.extensions: dict[str, str] = {}
        self._clock = clock
        self._greetingTimeout = greetingTimeout
        self._expected: deque[_Expectation] = deque()
        self._lines: list[str] = []
        self._replySize = 0
        self._timer: IDelayedCall | None = None
        self._writer: _MessageWriter | None = None
        self._wire: Any = None
        self._closed = False
        self._lost = False
        self._closeWaiters: list[Deferred[None]] = []
        self._reads = 0
        self.greeting: Deferred[Reply] = Deferred()

    @property
    def isOpen(self) -> bool:
        """
        C{True} until the connection is lost or closing.
        """
        return not self._closed

    def connectionMade(self) -> None:
        # The transport is TCP, TLS over TCP or a test's fake: each has
        # abortConnection, registerProducer and (all but TLS) startTLS.
        self._wire = self.transport
        setNoDelay = getattr(self._wire, "setTcpNoDelay", None)
        if setNoDelay is not None:
            setNoDelay(True)
        self._expect(self._greetingTimeout, "the greeting").chainDeferred(self.greeting)

    def dataReceived(self, data: bytes) -> None:
        self._reads += 1
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        code, separator, rest = text[:3], text[3:4], text[4:]
        if not code.isdigit() or separator not in ("", " ", "-"):
            self._failAll(Reply(421, f"malformed reply from {self.peer}: {text!r}"))
            return

        self._lines.append(rest)
        self._replySize += len(rest) + 1
        if self._replySize > MAX_REPLY_SIZE:
            self._failAll(Reply(421, f"overlong reply from {self.peer}"))
            return
        if separator == "-":
            return

        reply = Reply(int(code), "\n".join(self._lines))
        self._lines, self._replySize = [], 0
        if not self._expected:
            # A reply nobody asked for: the server is closing the connection
            # (for example a 421 after its idle timeout).
            self.close()
            return

        if self._expected[0].sentDuring == self._reads:
            what = self._expected[0].what
            self._failAll(
                Reply(421, f"{self.peer} replied to {what} before it was sent")
            )
            return

        expectation = self._expected.popleft()
        self._cancelTimer()
        self._armTimer()
        expectation.deferred.callback(reply)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._failAll(Reply(421, f"overlong reply line from {self.peer}"))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closed = True
        self._lost = True
        why = reason.getErrorMessage()
        self._failAll(Reply(421, f"connection to {self.peer} lost: {why}"), True)
        waiters, self._closeWaiters = self._closeWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    def command(self, line: str, timeout: float, what: str = "") -> Deferred[Reply]:
        """
        Send one command.

        @param line: The command, without the line ending.
        @param timeout: Seconds to wait for its reply.
        @param what: What to call the command in a timeout's sentence; the
            first word of C{line} if empty.
        @return: Fires with the reply, or fails with L{SessionFailure}.
        """
        (reply,) = self.pipeline([(line, timeout, what)])
        return reply

    def pipeline(
        self, commands: Sequence[tuple[str, float, str]]
    ) -> list[Deferred[Reply]]:
        """
        Send several commands in one write, then wait for their replies.

        @param commands: Each command line, its timeout and its name (see
            L{command}).
        @return: One L{Deferred} for each command's reply, in order.
        """
        if self._closed:
            return [fail(self._closedFailure()) for _ in commands]

        self._wire.writeSequence(
            [line.encode("utf-8") + self.delimiter for line, _, _ in commands]
        )
        return [
            self._expect(timeout, what or line.split(" ", 1)[0])
            for line, timeout, what in commands
        ]

    def sendContent(
        self, message: MessageSource, stallTimeout: float, replyTimeout: float
    ) -> Deferred[Reply]:
        """
        Send a message's content after a 354 reply to DATA, then wait for the
        reply to the final ".".

        @param message: The message to read, chunk by chunk.
        @param stallTimeout: Seconds that the transfer may make no progress.
        @param replyTimeout: Seconds to wait for the final reply.
        @return: Fires with the final reply, or fails with L{SessionFailure}.
        """
        if self._closed:
            return fail(self._closedFailure())

        self._writer = _MessageWriter(
            self._wire, self.peer, self._clock, message.open(), stallTimeout
        )
        sent = self._writer.start()

        def contentSent(ignored: None) -> Deferred[Reply]:
            self._writer = None
            return self._expect(replyTimeout, 'the final "."')

        return sent.addCallback(contentSent)

    def whenClosed(self) -> Deferred[None]:
        """
        @return: Fires when the connection has been lost.
        """
        if self._lost:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._closeWaiters.append(waiter)
        return waiter

    def startTLS(self, options: IOpenSSLClientConnectionCreator) -> None:
        """
        Start TLS, as a client, after a 220 reply to STARTTLS.

        @param options: How to set up and verify TLS.
        """
        self._wire.startTLS(options)

    def close(self) -> None:
        """
        Close the connection without QUIT; outstanding replies fail.
        """
        if not self._closed:
            self._closed = True
            self._wire.loseConnection()

    def _closedFailure(self) -> SessionFailure:
        return SessionFailure(Reply(421, f"connection to {self.peer} closed"), True)

    def _expect(self, timeout: float, what: str) -> Deferred[Reply]:
        expectation = _Expectation(Deferred(), timeout, what, self._reads)
        self._expected.append(expectation)
        self._armTimer()
        return expectation.deferred

    def _armTimer(self) -> None:
        if self._timer is None and self._expected:
            head = self._expected[0]
            self._timer = self._clock.callLater(head.timeout, self._timedOut, head)

    def _cancelTimer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _timedOut(self, expectation: _Expectation) -> None:
        self._timer = None
        self._failAll(
            Reply(
                421,
                f"timed out after {expectation.timeout:g}s waiting for the reply"
                f" to {expectation.what} from {self.peer}",
            )
        )

    def _failAll(self, reply: Reply, closedByPeer: bool = False) -> None:
        """
        Fail every outstanding reply and the message transfer, and drop the
        connection.

        @param reply: The reason.
        @param closedByPeer: C{True} if the server closed the connection.
        """
        self._cancelTimer()
        expected, self._expected = self._expected, deque()
        writer, self._writer = self._writer, None
        self._closed = True
        if not self._lost:
            # Even after close(): a graceful close waits for the write
            # buffer to drain, which a stalled server may never allow.
            self._wire.abortConnection()
        if writer is not None:
            writer.fail(SessionFailure(reply, closedByPeer))
        for expectation in expected:
            expectation.deferred.errback(SessionFailure(reply, closedByPeer))


@implementer(IPushProducer)
class _MessageWriter:
    """
    Stream a message's content to a connection, encoded for DATA, as fast as
    the transport takes it.
    """

    def __init__(
        self,
        transport: Any,
        peer: str,
        clock: IReactorTime,
        file: BinaryIO,
        stallTimeout: float,
    ) -> None:
        self._transport = transport
        self._peer = peer
        self._clock = clock
        self._file = file
        self._stallTimeout = stallTimeout
        self._encoder = DataEncoder()
        self._paused = False
        self._stallTimer: IDelayedCall | None = None
        self._done: Deferred[None] = Deferred()

    def start(self) -> Deferred[None]:
        """
        @return: Fires when all of the content and the final "." are written.
        """
        self._transport.registerProducer(self, True)
        self.resumeProducing()
        return self._done

    def pauseProducing(self) -> None:
        self._paused = True
        if self._stallTimer is None and not self._done.called:
            self._stallTimer = self._clock.callLater(self._stallTimeout, self._stalled)

    def resumeProducing(self) -> None:
        self._paused = False
        self._cancelStallTimer()
        while not self._paused and not self._done.called:
            chunk = self._file.read(CHUNK_SIZE)
            if not chunk:
                self._finish()
                return
            self._transport.write(self._encoder.encode(chunk))

    def stopProducing(self) -> None:
        reply = Reply(421, f"connection to {self._peer} lost")
        self.fail(SessionFailure(reply, True))

    def fail(self, failure: SessionFailure) -> None:
        """
        Stop sending because the connection failed.

        @param failure: Why.
        """
        if self._done.called:
            return
        self._cleanUp()
        self._done.errback(failure)

    def _finish(self) -> None:
        self._transport.write(self._encoder.finish())
        self._cleanUp()
        self._done.callback(None)

    def _stalled(self) -> None:
        self._stallTimer = None
        reply = Reply(
            421,
            f"timed out after {self._stallTimeout:g}s sending the message"
            f" to {self._peer}",
        )
        self.fail(SessionFailure(reply))
        self._transport.abortConnection()

    def _cancelStallTimer(self) -> None:
        if self._stallTimer is not None:
            if self._stallTimer.active():
                self._stallTimer.cancel()
            self._stallTimer = None

    def _cleanUp(self) -> None:
        self._cancelStallTimer()
        self._file.close()
        self._transport.unregisterProducer()
