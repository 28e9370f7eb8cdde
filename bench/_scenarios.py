"""
The scenarios of C{bench/run}: each one starts what it needs on 127.0.0.1,
measures ace-mail and its peer, stops what it started and returns a L{Row}.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import subprocess
import sys
import time
from typing import Callable

from _common import LOOPBACK, canConnect, freePort, peakKiB, waitFor
from _sessions import idleSessions
from attrs import frozen
from proxy_bench import CUSTOMER, AceMail, Postfix, SmtpSink, bigMessage, load

HERE = os.path.dirname(os.path.abspath(__file__))


@frozen
class Row:
    """
    One line of the table.

    @ivar scenario: Its name, as C{--only} takes it.
    @ivar what: What was measured, and with what load.
    @ivar ace: ace-mail's figure.
    @ivar peer: The peer's figure, or L{None} without a peer.
    @ivar unit: The unit of both figures.
    @ivar ratio: The ratio the target is about, or L{None}.
    @ivar peakMiB: ace-mail's peak resident memory, or L{None}.
    @ivar target: The target, in words.
    @ivar met: Whether the target was met; L{None} for a figure only.
    """

    scenario: str
    what: str
    ace: float
    peer: float | None
    unit: str
    ratio: float | None
    peakMiB: float | None
    target: str
    met: bool | None


@frozen
class Load:
    """
    The counts of one run of the harness.
    """

    messages: int
    sessions: int
    size: int
    bigMiB: int
    idle: int
    pop3Messages: int
    pop3Runs: int
    contacts: int
    lookups: int
    apiMessages: int
    apiClients: int


class Context:
    """
    What the scenarios of one run share: the load, a work folder, a deadline
    per scenario, one C{smtp-sink}, and Postfix's rate once measured.
    """

    def __init__(self, load: Load, work: str, timeout: float) -> None:
        self.load = load
        self.work = work
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.sink: SmtpSink | None = None
        self.postfixRate: float | None = None

    def begin(self) -> None:
        """
        Give the next scenario its own full time.
        """
        self.deadline = time.monotonic() + self.timeout

    def smtpSink(self) -> SmtpSink:
        """
        The shared sink, started on first use.
        """
        if self.sink is None:
            sink = self.sink = SmtpSink(freePort())
            print("$ " + shlex.join(sink.command), flush=True)
            waitFor("smtp-sink", lambda: canConnect(sink.port), self.deadline)
        return self.sink

    def folder(self, name: str) -> str:
        """
        A new folder for one scenario's files, inside the run's work folder.
        """
        path = os.path.join(self.work, name)
        os.makedirs(path)
        return path

    def sourceArguments(self) -> argparse.Namespace:
        """
        The C{smtp-source} load, as L{proxy_bench.load} takes it.
        """
        return argparse.Namespace(
            messages=self.load.messages,
            sessions=self.load.sessions,
            size=self.load.size,
        )

    def stop(self) -> None:
        """
        Stop the shared sink, if it was started.
        """
        if self.sink is not None:
            self.sink.process.terminate()
            self.sink.process.wait(10)
            self.sink = None

    def postfix(self) -> float:
        """
        Postfix's relay rate to the sink, measured on first use.
        """
        if self.postfixRate is None:
            sink = self.smtpSink()
            postfix = Postfix(self.folder("postfix"), freePort(), sink.port)
            try:
                postfix.start()
                waitFor("Postfix", lambda: canConnect(postfix.port), self.deadline)
                self.postfixRate, _ = load(
                    self.sourceArguments(), postfix.port, CUSTOMER, sink, self.deadline
                )
            finally:
                postfix.stop()
            print(f"Postfix relay: {self.postfixRate:.0f} msgs/s", flush=True)
        return self.postfixRate


def _throughAceMail(
    context: Context,
    name: str,
    sinkPort: int,
    measure: Callable[[AceMail], float],
    extra: dict[str, str] | None = None,
) -> tuple[float, float]:
    """
    Start a new ace-mail, run C{measure} on it and stop it.

    @return: What C{measure} returned, and ace-mail's peak RSS in MiB.
    """
    aceMail = AceMail(context.folder(name), sinkPort, context.deadline, extra)
    try:
        print("$ " + shlex.join(aceMail.command), flush=True)
        figure = measure(aceMail)
        peak = peakKiB(aceMail.process.pid) / 1024
    finally:
        aceMail.stop()
    return figure, peak


def _relay(context: Context, name: str, contact: bool, ratio: float) -> Row:
    """
    Relay throughput through a new ace-mail, as pass-through mail or (when
    C{contact}) as replies to one contact, against Postfix's relay.
    """
    sink = context.smtpSink()

    def measure(aceMail: AceMail) -> float:
        rcpt = aceMail.createContact() if contact else CUSTOMER
        rate, _ = _source(context, aceMail.proxyPort, rcpt, sink)
        return rate

    rate, peak = _throughAceMail(context, name, sink.port, measure)
    print(f"ace-mail {name}: {rate:.0f} msgs/s", flush=True)
    postfix = context.postfix()
    counts = context.load
    return Row(
        name,
        f"smtp-source {counts.sessions} sessions, {counts.messages} x "
        f"{counts.size // 1024} KiB, to smtp-sink; peer Postfix relay",
        rate,
        postfix,
        "msgs/s",
        rate / postfix,
        peak,
        f">= {ratio}x Postfix",
        rate / postfix >= ratio,
    )


def _source(
    context: Context, port: int, rcpt: str, sink: SmtpSink | None
) -> tuple[float, int]:
    """
    Run the shared C{smtp-source} load against C{port}.
    """
    return load(context.sourceArguments(), port, rcpt, sink, context.deadline)


def relay(context: Context) -> Row:
    """
    Pass-through relay throughput against Postfix.
    """
    return _relay(context, "relay", False, 1.5)


def replies(context: Context) -> Row:
    """
    Replies to a contact, rewritten, against Postfix pass-through.
    """
    return _relay(context, "replies", True, 1.2)


def accept(context: Context) -> Row:
    """
    Accept only (fsync, no relay) against a minimal aiosmtpd that fsyncs.

    ace-mail's upstream is a socket that listens and never answers: its
    relay waits for a greeting while the queue fills, and makes no attempt
    per message (a refused connection would defer each one, extra work).
    """

    def measure(aceMail: AceMail) -> float:
        return _source(context, aceMail.proxyPort, CUSTOMER, None)[0]

    with socket.socket() as silent:
        silent.bind((LOOPBACK, 0))
        silent.listen(1000)
        rate, peak = _throughAceMail(
            context, "accept", silent.getsockname()[1], measure
        )
    print(f"ace-mail accept only: {rate:.0f} msgs/s", flush=True)
    port = freePort()
    script = os.path.join(HERE, "peers", "aiosmtpd_fsync.py")
    command = [sys.executable, script, "--port", str(port)]
    command += ["--dir", context.folder("aiosmtpd")]
    print("$ " + shlex.join(command), flush=True)
    peer = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    try:
        waitFor("the aiosmtpd peer", lambda: canConnect(port), context.deadline)
        peerRate, _ = _source(context, port, CUSTOMER, None)
    finally:
        peer.terminate()
        peer.wait(10)
    print(f"aiosmtpd with fsync: {peerRate:.0f} msgs/s", flush=True)
    counts = context.load
    return Row(
        "accept",
        f"smtp-source {counts.sessions} sessions, {counts.messages} x "
        f"{counts.size // 1024} KiB, fsync, upstream silent; peer aiosmtpd + fsync",
        rate,
        peerRate,
        "msgs/s",
        rate / peerRate,
        peak,
        ">= 1.5x aiosmtpd",
        rate / peerRate >= 1.5,
    )


def large(context: Context) -> Row:
    """
    One big message through the proxy: the growth of ace-mail's peak RSS.
    """
    sink = context.smtpSink()
    mebibytes = context.load.bigMiB

    def measure(aceMail: AceMail) -> float:
        before, after = bigMessage(aceMail, sink, mebibytes, context.deadline)
        return (after - before) / 1024

    growth, peak = _throughAceMail(context, "large", sink.port, measure)
    print(f"one {mebibytes} MiB message: peak RSS {growth:+.1f} MiB", flush=True)
    return Row(
        "large",
        f"one {mebibytes} MiB message through the proxy: peak RSS growth",
        growth,
        None,
        "MiB",
        None,
        peak,
        "<= 16 MiB growth",
        growth <= 16,
    )


def sessions(context: Context) -> Row:
    """
    Thousands of idle SMTP sessions: ace-mail's RSS, and one more banner.
    """
    sink = context.smtpSink()
    count = context.load.idle
    found: dict[str, float] = {}

    def measure(aceMail: AceMail) -> float:
        pid = aceMail.process.pid
        found.update(idleSessions(aceMail.proxyPort, pid, count, context.deadline))
        return found["bannerSeconds"]

    limit = str(count + 10)
    limits = {
        "--smtpProxyMaxConnections": limit,
        "--smtpProxyMaxConnectionsPerClient": limit,
    }
    seconds, peak = _throughAceMail(context, "sessions", sink.port, measure, limits)
    met = found["opened"] == count and found["peakMiB"] <= 300 and seconds <= 1
    return Row(
        "sessions",
        f"{int(found['opened'])} of {count} idle SMTP sessions held; a new "
        "session's banner time",
        1000 * seconds,
        None,
        "ms",
        None,
        peak,
        "RSS <= 300 MiB; banner <= 1000 ms",
        met,
    )
