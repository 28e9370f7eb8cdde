"""
Upstream faults: a real C{twistd -n ace-mail} relaying through two
L{FaultProxy}s, each in front of a real aiosmtpd sink, while server 1 (and
in some cases server 2 as well) refuses, hangs, drops or answers 4xx/5xx.

Every message that got a 202 must reach a sink or bounce to its sender
there; each case records what was sent, delivered, bounced and lost, the
duplicates, and the latency from the 202 to the arrival at the sink.
"""

from __future__ import annotations

import os
import time
import uuid

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e._harness import AceMail, Sink, freePort, message, settled, waitFor
from tests.reliability import _figures
from tests.reliability.faultproxy import (
    Fault,
    FaultProxy,
    Tally,
    arrivals,
    senderOf,
    tally,
)

SECTION = "Upstream faults"
COUNT = 20
SLACK = 4.0
MINIMAL_BACKOFF = 1.0
MAXIMAL_BACKOFF = 4.0
VICTIMS = "@example.net"
OPTIONS = {
    "--smtpConnectTimeout": "2",
    "--smtpHeloTimeout": "3",
    "--smtpMailTimeout": "3",
    "--smtpRcptTimeout": "3",
    "--smtpDataInitTimeout": "3",
    "--smtpDataDoneTimeout": "3",
    "--minimalBackoffTime": f"{MINIMAL_BACKOFF:g}",
    "--maximalBackoffTime": f"{MAXIMAL_BACKOFF:g}",
    "--serverSetAsideTime": "2",
    "--outgoingMailSmtpTls": "none",
}


class FaultAceMail(AceMail):
    """
    ace-mail with the short timeouts and backoff of L{OPTIONS}.
    """

    def commandLine(self) -> list[str]:
        command = super().commandLine()
        for name, value in OPTIONS.items():
            if name in command:
                command[command.index(name) + 1] = value
            else:
                command += [name, value]
        return command

    def send(self, testId: str) -> tuple[int, float]:
        """
        Submit one test message through C{POST /v1/outgoing}.

        @return: The status of the answer and when it came.
        """
        body = {
            "from": senderOf(testId),
            "to": [f"c-{testId}{VICTIMS}"],
            "message": message(testId),
        }
        status, _ = self._request("POST", "/v1/outgoing", body)
        return status, time.time()


class UpstreamFaultTests(SynchronousTestCase):
    """
    ace-mail's sender against misbehaving upstream servers.
    """

    skip = _figures.SKIP

    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        self.sinks = [Sink(freePort(), os.path.join(base, f"sink{n}")) for n in (1, 2)]
        self.proxies = [FaultProxy(freePort(), sink.port) for sink in self.sinks]
        for sink, proxy in zip(self.sinks, self.proxies, strict=True):
            sink.start()
            self.addCleanup(sink.kill)
            proxy.start()
            self.addCleanup(proxy.stop)
        self.aceMail = FaultAceMail(
            os.path.join(base, "data"),
            self.proxies[0].port,
            self.proxies[1].port,
            os.path.join(base, "ace-mail.log"),
        )
        self.addCleanup(self.aceMail.kill)
        self.aceMail.start()
        self.prefix = uuid.uuid4().hex[:8]

    def load(self, count: int = COUNT, spacing: float = 0.0) -> dict[str, float]:
        """
        Submit C{count} test messages, C{spacing} seconds apart; each must
        be accepted, as upstream faults are no reason to refuse mail.

        @return: When each was accepted.
        """
        accepted = {}
        for n in range(count):
            testId = f"{self.prefix}-{n}"
            status, at = self.aceMail.send(testId)
            self.assertEqual(status, 202, f"{testId} was not accepted")
            accepted[testId] = at
            time.sleep(spacing)
        return accepted

    def outcome(self, accepted: dict[str, float], timeout: float) -> Tally:
        """
        Wait (at most C{timeout} seconds) until every accepted message was
        delivered or bounced, and then until the sinks are quiet, and count.
        """

        def accountedFor() -> bool:
            return set(accepted) <= {a.testId for a in arrivals(self.sinks)}

        try:
            waitFor("every accepted message to arrive", accountedFor, timeout)
        except AssertionError:
            pass
        settled(self.sinks, quiet=1.0, timeout=30)
        return tally(accepted, arrivals(self.sinks))

    def record(self, figure: str, result: Tally, more: str = "") -> None:
        """
        Keep the outcome of one fault among the suite's figures.
        """
        command = f"ACE_RELIABILITY=1 python -m twisted.trial {self.id()}"
        value = result.sentence() + (f"; {more}" if more else "")
        _figures.record(SECTION, figure, value, command)

    def assertNoLoss(self, result: Tally, bounces: bool = False) -> None:
        """
        Nothing accepted is lost, damaged or (unless C{bounces}) bounced.
        """
        log = self.aceMail.logTail(60)
        self.assertEqual((result.lost, result.damaged), (0, 0), log)
        if bounces:
            self.assertGreater(result.bounced, 0, log)
        else:
            self.assertEqual(result.bounced, 0, log)

    def assertLogShows(self, text: str) -> None:
        """
        ace-mail's log has C{text}, proof that a fault was met.
        """
        with open(self.aceMail.logPath, encoding="utf-8") as f:
            self.assertIn(text, f.read())

    def checkFault(
        self,
        figure: str,
        fault: Fault,
        evidence: str,
        timeout: float = 0.0,
        bounces: bool = False,
    ) -> Tally:
        """
        Load ace-mail while server 1 has C{fault} and server 2 is healthy.

        @param evidence: Text that ace-mail's log must show, proving that
            the fault was met.
        @param timeout: The timeout the fault runs into, if any: the worst
            latency must be at least that and within L{SLACK} of it.
        @param bounces: Whether the fault refuses mail for good.
        """
        self.proxies[0].setFault(fault)
        accepted = self.load()
        result = self.outcome(accepted, timeout + SLACK + 30)
        self.record(figure, result)
        self.assertNoLoss(result, bounces)
        self.assertEqual(result.duplicates, 0)
        worst = max(result.latencies)
        self.assertLessEqual(worst, timeout + SLACK)
        self.assertGreaterEqual(worst, timeout * 0.9)
        self.assertLogShows(evidence)
        return result

    def test_connectionRefused(self) -> None:
        """
        While server 1 refuses connections, every message goes through
        server 2 at once.
        """
        self.checkFault(
            "server 1 refuses connections",
            Fault("connect"),
            f"connection refused by 127.0.0.1:{self.proxies[0].port}",
        )

    def test_hangAfterBanner(self) -> None:
        """
        When server 1 greets but never answers EHLO, its messages fail over
        to server 2 once the EHLO timeout runs out.
        """
        self.checkFault(
            "server 1 hangs after its banner",
            Fault("ehlo", "hang"),
            "waiting for the reply to EHLO",
            timeout=3,
        )

    def test_hangAtData(self) -> None:
        """
        When server 1 never answers DATA, its messages fail over to server
        2 once the DATA timeout runs out.
        """
        self.checkFault(
            "server 1 hangs after DATA (no 354)",
            Fault("data", "hang"),
            "waiting for the reply to DATA",
            timeout=3,
        )

    def test_hangAfterDot(self) -> None:
        """
        When server 1 takes the content but never answers the final ".",
        its messages fail over to server 2 once that timeout runs out.
        """
        self.checkFault(
            'server 1 hangs after the final "."',
            Fault("dot", "hang"),
            'waiting for the reply to the final "."',
            timeout=3,
        )

    def test_dropAfterDot(self) -> None:
        """
        When server 1 drops the connection after the final "." without
        storing the message, the message is sent again through server 2.
        """
        self.checkFault(
            'server 1 drops the connection after "."',
            Fault("dot", "drop"),
            f"connection to 127.0.0.1:{self.proxies[0].port} lost",
        )

    def check421(self, stage: str) -> None:
        """
        Load ace-mail while server 1 answers 421 at C{stage}: every message
        must go to server 2 at once.
        """
        reply = f"421 4.3.2 fault at {stage}"
        self.checkFault(
            f"421 from server 1 at {stage}", Fault(stage, reply=reply), reply
        )

    def test_421AtBanner(self) -> None:
        """A 421 greeting from server 1 sends its messages to server 2."""
        self.check421("banner")

    def test_421AtEhlo(self) -> None:
        """A 421 to EHLO from server 1 sends its messages to server 2."""
        self.check421("ehlo")

    def test_421AtMail(self) -> None:
        """A 421 to MAIL FROM from server 1 sends its messages to server 2."""
        self.check421("mail")

    def test_421AtRcpt(self) -> None:
        """A 421 to RCPT TO from server 1 sends its messages to server 2."""
        self.check421("rcpt")

    def test_421AtData(self) -> None:
        """A 421 to DATA from server 1 sends its messages to server 2."""
        self.check421("data")

    def test_421AtDot(self) -> None:
        """A 421 to the final "." from server 1 sends its messages to server 2."""
        self.check421("dot")

    def test_4xxAtRcpt(self) -> None:
        """
        A 450 to RCPT TO from server 1 sends the message to server 2 at
        once, without a bounce.
        """
        reply = "450 4.2.1 fault: mailbox busy"
        self.checkFault(
            "450 from server 1 at RCPT",
            Fault("rcpt", reply=reply, victims=VICTIMS),
            reply,
        )

    def test_5xxAtRcpt(self) -> None:
        """
        A 550 to RCPT TO from server 1 is final: the message bounces to its
        sender, and the bounce arrives at the sink.
        """
        reply = "550 5.1.1 fault: no such user"
        self.checkFault(
            "550 from server 1 at RCPT",
            Fault("rcpt", reply=reply, victims=VICTIMS),
            reply,
            bounces=True,
        )

    def test_4xxAfterData(self) -> None:
        """
        A 451 to the final "." from server 1 sends the message to server 2
        at once, without a bounce.
        """
        reply = "451 4.3.0 fault: try later"
        self.checkFault(
            '451 from server 1 after "."',
            Fault("dot", reply=reply, victims=VICTIMS),
            reply,
        )

    def test_5xxAfterData(self) -> None:
        """
        A 554 to the final "." from server 1 is final: the message bounces
        to its sender, and the bounce arrives at the sink.
        """
        reply = "554 5.6.0 fault: content refused"
        self.checkFault(
            '554 from server 1 after "."',
            Fault("dot", reply=reply, victims=VICTIMS),
            reply,
            bounces=True,
        )

    def test_flapping(self) -> None:
        """
        While server 1 goes down and up every 2.5 s (dropping its open
        connections as it goes down), a steady load loses nothing; a
        message arrives twice only if server 1 had stored it.
        """
        self.proxies[0].flap(2.5)
        accepted = self.load(40, spacing=0.25)
        result = self.outcome(accepted, SLACK + 30)
        self.proxies[0].setFault(None)
        throughOne = {a.testId for a in arrivals(self.sinks[:1])}
        self.record(
            "server 1 flaps (down and up every 2.5 s)",
            result,
            f"{len(throughOne)} went through server 1",
        )
        self.assertNoLoss(result)
        self.assertLessEqual(result.duplicated, throughOne)
        self.assertGreater(len(throughOne), 0)
        self.assertLessEqual(max(result.latencies), 2 + SLACK)
        self.assertLogShows(f"connection refused by 127.0.0.1:{self.proxies[0].port}")

    def bothThenBack(self, fault: Fault, seconds: float) -> tuple[Tally, float]:
        """
        Load ace-mail while both servers have C{fault}; after C{seconds},
        during which nothing may arrive, server 2 is healthy again.

        @return: The outcome, and the seconds from server 2's return to the
            last arrival.
        """
        for proxy in self.proxies:
            proxy.setFault(fault)
        accepted = self.load()
        time.sleep(seconds)
        self.assertEqual(arrivals(self.sinks), [])
        back = time.time()
        self.proxies[1].setFault(None)
        result = self.outcome(accepted, MAXIMAL_BACKOFF + SLACK + 30)
        return result, max(a.at for a in arrivals(self.sinks)) - back

    def test_bothRefuseThenServerTwoBack(self) -> None:
        """
        While both servers refuse connections, messages wait in the queue;
        once server 2 is back, each arrives within the maximal backoff.
        """
        result, last = self.bothThenBack(Fault("connect"), 6)
        self.record(
            "both refuse for 6 s, then server 2 is back",
            result,
            f"last arrival {last:.2f} s after server 2 was back",
        )
        self.assertNoLoss(result)
        self.assertEqual(result.duplicates, 0)
        self.assertLessEqual(last, MAXIMAL_BACKOFF + SLACK)

    def test_bothDeferThenServerTwoBack(self) -> None:
        """
        While both servers answer 450 to every RCPT TO, each message is
        retried with gaps between the minimal and the maximal backoff; once
        server 2 is back, each arrives within the maximal backoff.
        """
        result, last = self.bothThenBack(Fault("rcpt", reply="450 4.2.1 busy"), 8)
        tries, gaps = self.proxies[1].retries()
        self.record(
            "both answer 450 at RCPT for 8 s, then server 2 is back",
            result,
            f"last arrival {last:.2f} s after server 2 was back; "
            f"{len(gaps)} retries, {min(gaps):.2f} to {max(gaps):.2f} s apart "
            f"(backoff {MINIMAL_BACKOFF:g} to {MAXIMAL_BACKOFF:g} s)",
        )
        self.assertNoLoss(result)
        self.assertEqual(result.duplicates, 0)
        self.assertLessEqual(last, MAXIMAL_BACKOFF + SLACK)
        self.assertEqual(tries, COUNT)
        self.assertGreaterEqual(min(gaps), MINIMAL_BACKOFF - 0.25)
        self.assertLessEqual(max(gaps), MAXIMAL_BACKOFF + 1.5)
