"""
A failing fsync in the spool's commit, seen from the API and from the SMTP
proxy: the message is refused (503, 451), nothing is acknowledged or
queued, nothing comes back after a restart, and once fsync works again the
next message is accepted.

The parts are real (L{Spool}, L{Queue}, L{Api} and the proxy's protocol);
only C{os.fsync} is replaced, and the spool's thread is the test's own.
"""

from __future__ import annotations

import errno
import json
import os
from typing import Any, Callable, TypeVar

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from ace_mail.api import Api, LimitedRequest
from ace_mail.envelope import Envelope, MessageSource, Outcome
from ace_mail.queue import Queue
from ace_mail.spool import Spool
from tests.proxyfakes import Client, makeFactory

_T = TypeVar("_T")

TOKEN = "fsync-token"
MESSAGE = "From: agent@example.com\nTo: customer@example.net\nSubject: hi\n\nHello.\n"
REPLY = b"From: agent@example.com\r\nTo: customer@example.net\r\n\r\nHello.\r\n"


def runNow(work: Callable[[], _T]) -> Deferred[_T]:
    """
    Run the spool's work at once, in the calling thread.
    """
    return maybeDeferred(work)


def brokenFsync(fd: int) -> None:
    """
    An fsync that fails as a failing disk makes it fail.
    """
    raise OSError(errno.EIO, "Input/output error")


class FsyncFailureTests(SynchronousTestCase):
    """
    What clients are told, and what is kept, when fsync fails.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.directory = self.mktemp()
        self.queue = self.startQueue()
        self.site = Site(
            Api(
                self.clock,
                self.queue,
                TOKEN,
                heloName="ace.example",
                messageSizeLimit=65536,
            ).resource(),
            reactor=self.clock,
        )
        self.site.requestFactory = LimitedRequest.withLimit(65536)
        self.factory = makeFactory(queue=self.queue)  # type: ignore[arg-type]

    def startQueue(self) -> Queue:
        """
        Open the spool and start a queue over it whose deliveries never
        end, so that every accepted message stays listed.
        """

        def deliver(envelope: Envelope, source: MessageSource, queueId: str) -> Any:
            return Deferred[Outcome]()

        spool = Spool.open(self.directory, runNow)
        queue = Queue(self.clock, spool, deliver, hostname="ace.example")
        queue.startService()
        self.addCleanup(lambda: queue.running and queue.stopService())
        return queue

    def restart(self) -> Queue:
        """
        Stop the queue (closing the spool) and start a new one over the
        same directory.
        """
        self.successResultOf(self.queue.stopService())
        self.queue = self.startQueue()
        return self.queue

    def post(self) -> int:
        """
        Send one message to C{POST /v1/outgoing}.

        @return: The status of the answer.
        """
        body = json.dumps(
            {
                "from": "agent@example.com",
                "to": ["customer@example.net"],
                "message": MESSAGE,
            }
        ).encode()
        head = (
            "POST /v1/outgoing HTTP/1.1\r\nHost: localhost\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        protocol = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(head.encode() + body)
        return int(transport.value().split(b" ", 2)[1])

    def relay(self) -> str:
        """
        Send one message through the proxy from a trusted client, to an
        address that is not a contact.

        @return: The reply to the end of data.
        """
        client = Client(self.factory)
        self.assertEqual(client.transaction("customer@example.net")[0][:3], "250")
        return client.message(REPLY)

    def test_apiAnswers503(self) -> None:
        """
        When fsync fails the API answers 503, the queue lists nothing, and
        nothing is found after a restart.
        """
        self.patch(os, "fsync", brokenFsync)
        self.assertEqual(self.post(), 503)
        self.flushLoggedErrors(OSError)
        self.assertEqual(self.queue.list(), [])
        self.patch(os, "fsync", lambda fd: None)
        self.assertEqual(self.restart().list(), [])

    def test_proxyAnswers451(self) -> None:
        """
        When fsync fails the proxy answers 451 at the end of data, the
        queue lists nothing, and nothing is found after a restart.
        """
        self.patch(os, "fsync", brokenFsync)
        self.assertTrue(self.relay().startswith("451 4.3.0 "))
        self.flushLoggedErrors(OSError)
        self.assertEqual(self.queue.list(), [])
        self.patch(os, "fsync", lambda fd: None)
        self.assertEqual(self.restart().list(), [])

    def test_acceptedOnceFsyncWorks(self) -> None:
        """
        After fsyncs that failed, the next messages through the API and the
        proxy are accepted, and they (and only they) survive a restart.
        """
        self.patch(os, "fsync", brokenFsync)
        self.assertEqual(self.post(), 503)
        self.assertTrue(self.relay().startswith("451 "))
        self.flushLoggedErrors(OSError)
        self.patch(os, "fsync", lambda fd: None)
        self.assertEqual(self.post(), 202)
        self.assertTrue(self.relay().startswith("250 "))
        routes = sorted(entry.route for entry in self.queue.list())
        self.assertEqual(routes, ["outgoing", "proxy"])
        self.assertEqual(sorted(e.route for e in self.restart().list()), routes)
