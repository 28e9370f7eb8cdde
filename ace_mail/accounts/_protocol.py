# -*- test-case-name: tests.test_accounts_protocol -*-
"""
One client connection to a POP3 server: commands, bounded responses,
streamed message content and a timeout on every step.
"""

from __future__ import annotations

from collections import deque
from typing import BinaryIO

from attrs import define, frozen
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import (
    IDelayedCall,
    IOpenSSLClientConnectionCreator,
    IReactorTime,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

MAX_LINE = 8192
"""
The longest status or listing line accepted, without its CRLF.
"""

MAX_MESSAGE_LINE = 1024 * 1024
"""
The longest line of a message's content accepted, without its CRLF.
"""

MAX_LISTING_LINES = 1_000_000
"""
The most lines a multi-line listing (CAPA, UIDL, LIST) may have.
"""

MAX_LISTING_BYTES = 128 * 1024 * 1024
"""
The most bytes the lines of one listing may have together: room for a
UIDL of a million messages, where the limits of each line and of the line
count alone would let a server fill 8 GB.
"""


class POP3Error(Exception):
    """
    A poll cannot go on. The message is a sentence for the operator that
    names the server.
    """


@frozen
class Response:
    """
    A server's answer to one command.

    @ivar ok: C{True} for C{+OK}, C{False} for C{-ERR}.
    @ivar text: The rest of the status line.
    @ivar lines: The lines of a multi-line listing, dot-unstuffed, without
        the terminating C{"."}.
    """

    ok: bool
    text: str
    lines: tuple[bytes, ...] = ()


@define
class _Pending:
    """
    A command sent, or waiting to be sent, and what its response is.

    @ivar line: The command line without CRLF; empty for the greeting.
    @ivar what: The command's name for sentences, never a secret.
    @ivar kind: C{"line"}, C{"listing"}, C{"body"} or C{"stls"}.
    @ivar sink: Where a body goes.
    @ivar limit: The most bytes a body may have.
    @ivar name: What to call a body's message in sentences.
    @ivar options: What to start TLS with after C{+OK} to STLS.
    """

    line: bytes
    what: str
    kind: str
    deferred: Deferred[Response]
    sink: BinaryIO | None = None
    limit: int = 0
    name: str = ""
    options: IOpenSSLClientConnectionCreator | None = None


def quote(data: bytes | str, length: int = 200) -> str:
    """
    @return: C{data} fit for a log line or a status sentence: printable
        ASCII, control and other bytes as C{?}, at most C{length}
        characters.
    """
    if isinstance(data, str):
        data = data.encode("ascii", "replace")
    shown = "".join(chr(b) if 0x20 <= b < 0x7F else "?" for b in data[:length])
    return shown + ("..." if len(data) > length else "")


class _BodyReader:
    """
    Dot-unstuff a message's content as it arrives and write it to a file,
    keeping at most a few bytes of it in memory.
    """

    def __init__(self, sink: BinaryIO, limit: int, name: str) -> None:
        self._sink = sink
        self._limit = limit
        self._name = name
        self._size = 0
        self._atLineStart = True
        self._lineLength = 0
        self._held = b""

    def feed(self, data: bytes) -> bytes | None:
        """
        Take the next bytes of the content.

        @return: L{None} while the terminating C{CRLF.CRLF} is still to
            come, else the bytes after it.
        @raise POP3Error: When a line or the whole is too long.
        """
        data, self._held = self._held + data, b""
        out = []
        rest = None
        position = 0
        while position < len(data):
            if self._atLineStart:
                if data[position : position + 1] == b".":
                    after = data[position + 1 : position + 3]
                    if after == b"\r\n":
                        rest = data[position + 3 :]
                        break
                    if after in (b"", b"\r"):
                        self._held = data[position:]
                        break
                    position += 1
                self._atLineStart = False
            end = data.find(b"\r\n", position)
            if end == -1:
                piece = data[position:]
                if piece.endswith(b"\r"):
                    self._held, piece = b"\r", piece[:-1]
                self._countLine(len(piece))
                out.append(piece)
                break
            self._countLine(end - position)
            out.append(data[position : end + 2])
            position = end + 2
            self._atLineStart = True
            self._lineLength = 0

        chunk = b"".join(out)
        self._size += len(chunk)
        if self._size > self._limit:
            raise POP3Error(f"{self._name} is larger than {self._limit} bytes")
        self._sink.write(chunk)
        return rest

    def _countLine(self, length: int) -> None:
        self._lineLength += length
        if self._lineLength > MAX_MESSAGE_LINE:
            raise POP3Error(
                f"{self._name} has a line longer than {MAX_MESSAGE_LINE} bytes"
            )


class POP3Connection(Protocol):
    """
    The client side of one POP3 connection.

    Commands are sent at once when C{pipelining} is on, else each after
    the previous response is complete; responses are matched to them in
    order. While a response is awaited the server may be silent for at most
    C{timeout} seconds. A bad response, an overlong line, a timeout or a
    lost connection fails every outstanding command with L{POP3Error} and
    drops the connection.

    @ivar peer: The server as C{host:port}, for sentences.
    @ivar pipelining: Send commands without waiting (RFC 2449 PIPELINING).
    @ivar greeting: Fires with the server's greeting.
    """

    def __init__(self, clock: IReactorTime, peer: str, timeout: float) -> None:
        self.peer = peer
        self.pipelining = False
        self.greeting: Deferred[Response] = Deferred()
        self._clock = clock
        self._timeout = timeout
        self._waiting: deque[_Pending] = deque()
        self._unsent: deque[_Pending] = deque()
        self._buffer = b""
        self._listing: list[bytes] | None = None
        self._listingSize = 0
        self._statusText = ""
        self._body: _BodyReader | None = None
        self._timer: IDelayedCall | None = None
        self._failure: POP3Error | None = None
        self._generation = 0

    def connectionMade(self) -> None:
        self._waiting.append(_Pending(b"", "the greeting", "line", self.greeting))
        self._armTimer()

    def dataReceived(self, data: bytes) -> None:
        if self._failure is not None:
            return
        self._cancelTimer()
        self._armTimer()

        buffer, self._buffer = self._buffer + data, b""
        position = 0
        generation = self._generation
        while position < len(buffer) and self._failure is None:
            if generation != self._generation:
                # TLS started: whatever came with the STLS answer was sent
                # in the clear and is not to be believed.
                return
            if self._body is not None:
                self._feedBody(buffer[position:])
                buffer, position = self._buffer, 0
                self._buffer = b""
                continue
            end = buffer.find(b"\r\n", position, position + MAX_LINE + 2)
            if end == -1:
                if len(buffer) - position > MAX_LINE:
                    self._fail(f"{self.peer} sent a line longer than {MAX_LINE} bytes")
                else:
                    self._buffer = buffer[position:]
                return
            line = buffer[position:end]
            position = end + 2
            self._lineReceived(line)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._fail(
            f"the connection to {self.peer} was lost: {reason.getErrorMessage()}",
            "none",
        )

    def command(self, line: str, what: str = "") -> Deferred[Response]:
        """
        Send a command whose response is one line.

        @param line: The command, without CRLF.
        @param what: Its name in sentences (the verb if empty); give one for
            commands that carry secrets.
        """
        return self._send(_Pending(b"", what or line, "line", Deferred()), line)

    def listing(self, line: str) -> Deferred[Response]:
        """
        Send a command whose C{+OK} response has lines (CAPA, UIDL, LIST).
        """
        return self._send(_Pending(b"", line, "listing", Deferred()), line)

    def retrieve(
        self, line: str, sink: BinaryIO, limit: int, name: str
    ) -> Deferred[Response]:
        """
        Send a command whose C{+OK} response is a message (RETR), and write
        the message, unstuffed with its CRLFs, to C{sink} as it arrives.

        @param limit: The most bytes the message may have.
        @param name: What to call the message in sentences.
        """
        pending = _Pending(b"", line, "body", Deferred(), sink, limit, name)
        return self._send(pending, line)

    def startTLS(self, options: IOpenSSLClientConnectionCreator) -> Deferred[Response]:
        """
        Send STLS and, on C{+OK}, start TLS at once, dropping anything that
        came in the clear after the C{+OK}.
        """
        pending = _Pending(b"", "STLS", "stls", Deferred(), options=options)
        return self._send(pending, "STLS")

    def close(self) -> None:
        """
        Close the connection; outstanding commands fail.
        """
        self._fail(f"the connection to {self.peer} was closed", "lose")

    def abort(self, reason: str) -> None:
        """
        Drop the connection at once; outstanding commands fail.

        @param reason: The sentence they fail with.
        """
        self._fail(reason)

    def _send(self, pending: _Pending, line: str) -> Deferred[Response]:
        if self._failure is not None:
            return fail(self._failure)
        if any(c in line for c in "\r\n\0"):
            return fail(POP3Error(f"{pending.what} may not contain CR, LF or NUL"))
        pending.line = line.encode("utf-8")
        if self.pipelining or not (self._waiting or self._unsent):
            self._write(pending)
        else:
            self._unsent.append(pending)
        return pending.deferred

    def _write(self, pending: _Pending) -> None:
        self._waiting.append(pending)
        self.transport.write(pending.line + b"\r\n")  # type: ignore[union-attr]
        self._armTimer()

    def _lineReceived(self, line: bytes) -> None:
        if not self._waiting:
            self._fail(f"{self.peer} sent {quote(line)!r} unasked")
            return
        head = self._waiting[0]

        if self._listing is not None:
            if line == b".":
                lines, self._listing = tuple(self._listing), None
                self._complete(Response(True, self._statusText, lines))
            elif len(self._listing) >= MAX_LISTING_LINES:
                self._fail(f"{self.peer} answered {head.what} with too many lines")
            elif self._listingSize + len(line) > MAX_LISTING_BYTES:
                self._fail(
                    f"{self.peer} answered {head.what} with more than"
                    f" {MAX_LISTING_BYTES} bytes"
                )
            else:
                self._listingSize += len(line)
                self._listing.append(line[1:] if line.startswith(b".") else line)
            return

        status, _, rest = line.partition(b" ")
        if status not in (b"+OK", b"-ERR"):
            self._fail(
                f"{self.peer} answered {head.what} with {quote(line)!r},"
                " which is not a POP3 response"
            )
            return
        ok = status == b"+OK"
        text = quote(rest, MAX_LINE)
        if ok and head.kind == "listing":
            self._listing, self._statusText = [], text
            self._listingSize = 0
        elif ok and head.kind == "body":
            assert head.sink is not None
            self._body = _BodyReader(head.sink, head.limit, head.name)
            self._statusText = text
        else:
            if ok and head.options is not None:
                self.transport.startTLS(head.options)  # type: ignore[union-attr]
                self._generation += 1
            self._complete(Response(ok, text))

    def _feedBody(self, data: bytes) -> None:
        assert self._body is not None
        try:
            rest = self._body.feed(data)
        except POP3Error as e:
            self._fail(str(e))
            return
        if rest is not None:
            self._body = None
            self._buffer = rest
            self._complete(Response(True, self._statusText))

    def _complete(self, response: Response) -> None:
        pending = self._waiting.popleft()
        self._cancelTimer()
        if self._unsent and not self._waiting:
            self._write(self._unsent.popleft())
        self._armTimer()
        pending.deferred.callback(response)

    def _armTimer(self) -> None:
        if self._timer is None and self._waiting and self._failure is None:
            self._timer = self._clock.callLater(self._timeout, self._timedOut)

    def _cancelTimer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _timedOut(self) -> None:
        self._timer = None
        self._fail(
            f"{self.peer} did not answer {self._waiting[0].what}"
            f" within {self._timeout:g} seconds"
        )

    def _fail(self, reason: str, close: str = "abort") -> None:
        """
        Fail every outstanding command.

        @param close: How to end the connection: C{"abort"}, C{"lose"}
            (after what was written) or C{"none"} (it is gone already).
        """
        if self._failure is not None:
            return
        self._failure = POP3Error(reason)
        self._cancelTimer()
        self._body = None
        self._buffer = b""
        outstanding = [*self._waiting, *self._unsent]
        self._waiting.clear()
        self._unsent.clear()
        if self.transport is None:
            pass
        elif close == "abort":
            self.transport.abortConnection()  # type: ignore[attr-defined]
        elif close == "lose":
            self.transport.loseConnection()
        for pending in outstanding:
            pending.deferred.errback(self._failure)
