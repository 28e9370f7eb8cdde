# -*- test-case-name: tests.reliability.test_upstream -*-
"""
A fault-injecting SMTP proxy for the reliability suite, and the count of
what reached the sinks behind it.

It listens on 127.0.0.1 in front of a real SMTP sink and passes each
conversation through, command by command, until a L{Fault} says otherwise:
then it refuses connections, answers with a chosen reply at a chosen stage,
stops answering, or drops the connection. It runs an asyncio loop in a
thread of the test process, so a test can change the fault at any moment.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import threading
import time
from collections import Counter
from itertools import pairwise
from typing import Any, Callable, Coroutine, TypeVar

from attrs import frozen

from tests.e2e._harness import Sink, message

_T = TypeVar("_T")

BANNER = b"220 fault.test ESMTP the fault proxy\r\n"
_TEST_ID = re.compile(rb"^X-Test-Id: (\S+)\r?$", re.MULTILINE)


@frozen
class Fault:
    """
    What the proxy does wrong, and where.

    @ivar stage: C{"connect"} (the port refuses connections), C{"banner"},
        C{"ehlo"}, C{"mail"}, C{"rcpt"}, C{"data"} (the reply to DATA) or
        C{"dot"} (the reply to the final ".").
    @ivar action: C{"reply"} answers C{reply} in the server's place (and
        closes the connection after a 421); C{"hang"} never answers again;
        C{"drop"} closes the connection without a word.
    @ivar reply: The reply line for C{"reply"}, such as C{"421 4.3.2 bye"}.
    @ivar victims: At C{"rcpt"} and C{"dot"}, the fault strikes only
        recipients that contain this text (and transactions that have one);
        empty for all.
    """

    stage: str
    action: str = "reply"
    reply: str = ""
    victims: str = ""

    def strikes(self, stage: str, recipients: list[str]) -> bool:
        """
        @return: Whether the fault applies at C{stage} to a transaction with
            these recipients so far.
        """
        if stage != self.stage:
            return False
        if not self.victims or stage not in ("rcpt", "dot"):
            return True
        return any(self.victims in recipient for recipient in recipients)


class _Gone(Exception):
    """
    The conversation is over: the proxy dropped it or the client left.
    """


class FaultProxy:
    """
    One fault-injecting proxy, listening on 127.0.0.1:C{port} and passing
    good conversations to the SMTP server on 127.0.0.1:C{backendPort}.

    @ivar events: C{(time, command, argument)} for each MAIL and RCPT the
        proxy received, in order, from any connection; C{time} is
        C{time.time()}.
    """

    def __init__(self, port: int, backendPort: int) -> None:
        self.port = port
        self.backendPort = backendPort
        self.events: list[tuple[float, str, str]] = []
        self._fault: Fault | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._generation = 0

    def start(self, fault: Fault | None = None) -> None:
        """
        Start the loop and serve with C{fault} (none by default).
        """
        self._thread.start()
        self.setFault(fault)

    def stop(self) -> None:
        """
        Close every connection and the listener, and end the thread.
        """
        if not self._thread.is_alive():
            return
        self._call(self._apply(Fault("connect")))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def setFault(self, fault: Fault | None) -> None:
        """
        Change the fault, as a server restarted with a new behaviour would:
        every open connection is dropped. C{None} passes everything through.
        """
        self._call(self._apply(fault))

    def flap(self, period: float) -> None:
        """
        Go down (refusing connections and dropping open ones) and up again,
        every C{period} seconds, until L{setFault} or L{stop}.
        """
        self._call(self._flap(period, Fault("connect"), self._generation + 1))

    def retries(self) -> tuple[int, list[float]]:
        """
        @return: How many recipients the proxy saw in RCPT TO, and the
            seconds between each RCPT TO and the one before it for the same
            recipient.
        """
        tries: dict[str, list[float]] = {}
        for at, verb, argument in list(self.events):
            if verb == "RCPT":
                tries.setdefault(argument.upper(), []).append(at)
        gaps = [b - a for times in tries.values() for a, b in pairwise(times)]
        return len(tries), gaps

    def _call(self, work: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(10)

    async def _flap(self, period: float, fault: Fault | None, generation: int) -> None:
        """
        Apply C{fault}, and the opposite C{period} seconds later, for as
        long as no other fault is set.
        """
        if generation < self._generation:
            return
        await self._apply(fault, generation)
        following = None if fault is not None else Fault("connect")
        self._loop.call_later(
            period,
            lambda: self._loop.create_task(self._flap(period, following, generation)),
        )

    async def _apply(self, fault: Fault | None, generation: int = 0) -> None:
        """
        Serve with C{fault} from now on.

        @param generation: The flapping this belongs to; by default, none,
            and any flapping ends.
        """
        self._generation = generation or self._generation + 1
        self._fault = fault
        for client in list(self._clients):
            client.transport.abort()
        refusing = fault is not None and fault.stage == "connect"
        if refusing and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        elif not refusing and self._server is None:
            self._server = await asyncio.start_server(
                self._serve, "127.0.0.1", self.port, reuse_address=True
            )

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._clients.add(writer)
        backend: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            if not await self._inject("banner", [], reader, writer):
                backend = await asyncio.open_connection("127.0.0.1", self.backendPort)
                await _reply(backend[0])
                writer.write(BANNER)
                await self._converse(reader, writer, *backend)
        except (_Gone, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._clients.discard(writer)
            writer.transport.abort()
            if backend is not None:
                backend[1].transport.abort()

    async def _converse(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        backendReader: asyncio.StreamReader,
        backendWriter: asyncio.StreamWriter,
    ) -> None:
        """
        Pass commands to the server one at a time, and its replies back,
        except where the fault strikes. The content after DATA is kept
        until the final "." and only then offered to the server, so that a
        fault at the end of data leaves nothing stored.
        """
        recipients: list[str] = []
        while True:
            line = await _line(reader)
            verb, _, argument = line.decode("ascii", "replace").strip().partition(" ")
            verb = verb.upper()
            stage = {"EHLO": "ehlo", "HELO": "ehlo", "MAIL": "mail"}.get(verb, "")
            if verb in ("MAIL", "RSET"):
                recipients = []
            if verb in ("MAIL", "RCPT"):
                self.events.append((time.time(), verb, argument))
            if verb == "RCPT":
                stage = "rcpt"
                recipients.append(argument)
            if verb == "DATA":
                if await self._inject("data", recipients, reader, writer):
                    continue
                writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                content = await _content(reader)
                if await self._inject("dot", recipients, reader, writer):
                    continue
                backendWriter.write(b"DATA\r\n")
                answer = await _reply(backendReader)
                if answer.startswith(b"354"):
                    backendWriter.write(content + b".\r\n")
                    answer = await _reply(backendReader)
                writer.write(answer)
                continue
            if stage and await self._inject(stage, recipients, reader, writer):
                if stage == "rcpt":
                    recipients.pop()
                continue
            backendWriter.write(line)
            writer.write(await _reply(backendReader))

    async def _inject(
        self,
        stage: str,
        recipients: list[str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """
        Act out the fault if it strikes here.

        @return: C{True} if it answered in the server's place.
        @raise _Gone: If it ended the conversation.
        """
        fault = self._fault
        if fault is None or not fault.strikes(stage, recipients):
            return False
        if fault.action == "hang":
            while await reader.read(65536):
                pass
            raise _Gone()
        if fault.action == "drop":
            raise _Gone()
        writer.write(fault.reply.encode("ascii") + b"\r\n")
        if fault.reply.startswith("421"):
            await writer.drain()
            raise _Gone()
        return True


async def _line(reader: asyncio.StreamReader) -> bytes:
    line = await reader.readline()
    if not line.endswith(b"\n"):
        raise _Gone()
    return line


async def _reply(reader: asyncio.StreamReader) -> bytes:
    """
    @return: One whole reply, all its lines, as received.
    """
    lines = [await _line(reader)]
    while lines[-1][3:4] == b"-":
        lines.append(await _line(reader))
    return b"".join(lines)


async def _content(reader: asyncio.StreamReader) -> bytes:
    """
    @return: The content after DATA, still dot-stuffed, up to and without
        the final ".".
    """
    lines = []
    while (line := await _line(reader)) != b".\r\n":
        lines.append(line)
    return b"".join(lines)


def senderOf(testId: str) -> str:
    """
    The envelope sender of a test message: its own address, so that its
    bounce says which message it is about.
    """
    return f"s-{testId}@example.com"


@frozen
class Arrival:
    """
    One message stored by a sink.

    @ivar testId: The test message it is, or that it bounces.
    @ivar bounce: Whether it is a bounce to the test message's sender.
    @ivar at: When the sink stored it.
    @ivar whole: Whether it is the whole test message, or a bounce that
        quotes the test message's headers.
    """

    testId: str
    bounce: bool
    at: float
    whole: bool


def arrivals(
    sinks: list[Sink], expected: Callable[[str], str] = message
) -> list[Arrival]:
    """
    What the sinks stored, each message read with its envelope.

    @param expected: Makes the text of the test message with a test id.
    """
    found = []
    for sink in sinks:
        for path in sink.files():
            name = os.path.basename(path) + ".json"
            with open(os.path.join(sink.directory, "envelope", name)) as f:
                envelope = json.load(f)
            with open(path, "rb") as f:
                content = f.read()
            quoted = _TEST_ID.search(content)
            testId = quoted.group(1).decode("ascii") if quoted else "(none)"
            bounce = envelope["mailFrom"] in ("", "<>")
            if bounce:
                whole = envelope["recipients"] == [senderOf(testId)] and (
                    b"message/delivery-status" in content
                )
            else:
                whole = content.endswith(expected(testId).encode("ascii"))
            found.append(Arrival(testId, bounce, os.stat(path).st_mtime, whole))
    return found


@frozen
class Tally:
    """
    The outcome of one fault.

    @ivar sent: The messages accepted.
    @ivar delivered: Those that reached a sink.
    @ivar bounced: Those whose bounce reached a sink.
    @ivar lost: Those that did neither.
    @ivar duplicates: The copies beyond the first (a bounce counts as one).
    @ivar damaged: The stored messages that are not a whole test message or
        a bounce of one, or are not of this test.
    @ivar latencies: For each message, the seconds from the 202 to the
        first arrival of it or its bounce.
    @ivar duplicated: The test ids that arrived more than once.
    """

    sent: int
    delivered: int
    bounced: int
    lost: int
    duplicates: int
    damaged: int
    latencies: tuple[float, ...]
    duplicated: frozenset[str]

    def sentence(self) -> str:
        """
        @return: The counts and latencies, as the figures show them.
        """
        latency = "no latency"
        if self.latencies:
            median, worst = statistics.median(self.latencies), max(self.latencies)
            latency = f"latency median {median:.2f} s, max {worst:.2f} s"
        return (
            f"sent {self.sent}, delivered {self.delivered}, bounced "
            f"{self.bounced}, lost {self.lost}, duplicates {self.duplicates}, "
            f"damaged {self.damaged}; {latency}"
        )


def tally(accepted: dict[str, float], found: list[Arrival]) -> Tally:
    """
    Count what became of the accepted messages.

    @param accepted: The time of the 202 of each accepted test message.
    """
    copies = Counter((a.testId, a.bounce) for a in found)
    first: dict[str, float] = {}
    for arrival in found:
        first[arrival.testId] = min(arrival.at, first.get(arrival.testId, arrival.at))
    delivered = {t for t in accepted if copies[t, False]}
    bounced = {t for t in accepted if copies[t, True]}
    duplicated = {t for t in accepted if copies[t, False] + copies[t, True] > 1}
    return Tally(
        sent=len(accepted),
        delivered=len(delivered),
        bounced=len(bounced),
        lost=len(set(accepted) - delivered - bounced),
        duplicates=sum(copies[t, False] + copies[t, True] - 1 for t in duplicated),
        damaged=sum(1 for a in found if not a.whole or a.testId not in accepted),
        latencies=tuple(first[t] - accepted[t] for t in sorted(first) if t in accepted),
        duplicated=frozenset(duplicated),
    )
