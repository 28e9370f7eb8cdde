"""
Tests for L{ace_mail.proxy} under hostile input: the open-relay and smuggling
batteries, overlong lines, limits, timeouts and connection counts.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from .proxyfakes import (
    HOST,
    OPEN_ID,
    REPLY,
    Client,
    FakeQueue,
    FakeStore,
    makeFactory,
)
from .test_proxy_data import SECOND, SMUGGLING
from .test_proxy_policy import DOMAIN, HIDDEN_IN_CONTACT, IP, NMAP_RECIPIENTS

NMAP_TESTS = (
    [("<>", NMAP_RECIPIENTS[0])]
    + [
        (sender, NMAP_RECIPIENTS[0])
        for sender in (
            f"<antispam@{DOMAIN}>",
            f"<antispam@{HOST}>",
            f"<antispam@[{IP}]>",
        )
    ]
    + [(f"<antispam@[{IP}]>", recipient) for recipient in NMAP_RECIPIENTS[1:]]
)
"""
The 16 MAIL FROM and RCPT TO pairs of nmap's smtp-open-relay script.
"""


class OpenRelayTests(SynchronousTestCase):
    """
    None of the relay-test forms relays.
    """

    def attempt(self, host: str, sender: str, recipient: str) -> tuple[str, list]:
        factory = makeFactory()
        client = Client(factory, host=host)
        client.command("EHLO nmap.scanme.org")
        client.command(f"MAIL FROM:{sender}")
        reply = client.command(f"RCPT TO:<{recipient}>")
        client.send(b"DATA\r\n" + REPLY + b".\r\n")
        return reply, factory.queue.messages

    def test_nmapFromUntrusted(self) -> None:
        """
        All 16 tests of nmap's script from an untrusted client get a 5xx at
        RCPT, and nothing is queued.
        """
        self.assertEqual(len(NMAP_TESTS), 16)
        for sender, recipient in NMAP_TESTS:
            reply, queued = self.attempt("198.51.100.7", sender, recipient)
            self.assertEqual(reply[0], "5", (sender, recipient, reply))
            self.assertEqual(queued, [], (sender, recipient))

    def test_nmapFromTrusted(self) -> None:
        """
        From a trusted client the plain address is pass-through, but every
        routing trick is still refused and nothing is queued.
        """
        for sender, recipient in NMAP_TESTS[4:]:
            reply, queued = self.attempt("127.0.0.1", sender, recipient)
            self.assertEqual(reply[0], "5", (sender, recipient, reply))
            self.assertEqual(queued, [], (sender, recipient))

    def test_hiddenInContactAddress(self) -> None:
        """
        The tricks wrapped around a valid contact id, from a trusted client,
        are refused and never reach the store or the queue.
        """
        for recipient in HIDDEN_IN_CONTACT:
            factory = makeFactory()
            client = Client(factory)
            [reply] = client.transaction(recipient)
            self.assertEqual(reply[0], "5", (recipient, reply))
            self.assertEqual(client.command("DATA"), "554 5.5.1 no valid recipients")
            self.assertEqual(factory.queue.messages, [], recipient)

    def test_controlCharactersInAddress(self) -> None:
        """
        CR and NUL in an address are refused with 501.
        """
        client = Client(makeFactory())
        client.command("EHLO c.example")
        self.assertTrue(
            client.send(b"MAIL FROM:<a\rb@c.example>\r\n")[0].startswith("501 5.5.2")
        )
        client.command("MAIL FROM:<a@b.example>")
        self.assertTrue(
            client.send(b"RCPT TO:<" + OPEN_ID.encode() + b"\0@x.example>\r\n")[
                0
            ].startswith("501 5.5.2")
        )


class SmugglingTests(SynchronousTestCase):
    """
    No end-of-data look-alike ever yields a second message.
    """

    def smuggle(self, sequence: bytes, chunked: bool) -> tuple[FakeQueue, list[str]]:
        """
        Pipeline a whole session that hides a second transaction behind
        C{sequence}, then send a clean message.

        @return: The queue and every reply line.
        """
        queue = FakeQueue()
        client = Client(makeFactory(queue=queue))
        data = (
            b"EHLO c.example\r\nMAIL FROM:<agent@agents.example.org>\r\n"
            b"RCPT TO:<" + OPEN_ID.encode() + b"@" + HOST.encode() + b">\r\nDATA\r\n"
            b"Subject: first\r\n\r\nfirst" + sequence + SECOND + b".\r\n"
            b"MAIL FROM:<agent@agents.example.org>\r\nRCPT TO:<colleague@agents.example.org>\r\n"
            b"DATA\r\nSubject: clean\r\n\r\nclean\r\n.\r\nQUIT\r\n"
        )
        if chunked:
            lines = []
            for index in range(len(data)):
                lines += client.send(data[index : index + 1])
        else:
            lines = client.send(data)
        return queue, lines

    def test_battery(self) -> None:
        """
        For each sequence, in one piece or byte by byte: the first message
        is refused with 550 at its real end, the smuggled commands get no
        reply, and the queue sees exactly the clean message.
        """
        for name, sequence in SMUGGLING.items():
            for chunked in (False, True):
                queue, lines = self.smuggle(sequence, chunked)
                finals = [line for line in lines if not line.startswith("250-")]
                self.assertEqual(
                    [line[:3] for line in finals],
                    [
                        "250",
                        "250",
                        "250",
                        "354",
                        "550",
                        "250",
                        "250",
                        "354",
                        "250",
                        "221",
                    ],
                    (name, chunked, lines),
                )
                self.assertEqual(len(queue.messages), 1, name)
                [(envelope, message)] = queue.messages
                self.assertEqual(envelope.recipients, ("colleague@agents.example.org",))
                self.assertEqual(message, b"Subject: clean\r\n\r\nclean\r\n")

    def test_reasons(self) -> None:
        """
        Bare CR or LF gives 550 5.6.2, NUL gives 550 5.6.0.
        """
        _, lines = self.smuggle(SMUGGLING["<LF>.<LF>"], False)
        self.assertIn(
            "550 5.6.2 message refused: bare CR or LF not allowed; lines end with CRLF",
            lines,
        )
        _, lines = self.smuggle(SMUGGLING["<CR><LF><NUL>.<CR><LF>"], False)
        self.assertIn(
            "550 5.6.0 message refused: NUL characters are not allowed", lines
        )


class LimitTests(SynchronousTestCase):
    """
    Long lines, many recipients and big messages.
    """

    def test_overlongLineStaysInData(self) -> None:
        """
        A line over the limit inside DATA does not drop the session back to
        command mode: the commands after it are message text, and the one
        reply comes at the real end.
        """
        factory = makeFactory()
        client = Client(factory)
        client.transaction(f"{OPEN_ID}@{HOST}")
        client.command("DATA")
        lines = client.send(
            b"Subject: x\r\n\r\n"
            + b"y" * 5000
            + b"\r\nRSET\r\nMAIL FROM:<e@evil.example>\r\nQUIT\r\n"
        )
        self.assertEqual(lines, [])
        self.assertEqual(
            client.send(b".\r\n"),
            ["552 5.3.4 message refused: a line is longer than 1000 bytes"],
        )
        self.assertEqual(client.command("NOOP"), "250 2.0.0 OK")
        self.assertEqual(factory.queue.messages, [])

    def test_tooManyRecipients(self) -> None:
        """
        Recipients beyond the limit get 452 4.5.3; the message goes to the
        others.
        """
        factory = makeFactory(maxRecipients=2)
        client = Client(factory)
        replies = client.transaction(
            "a@example.net", f"{OPEN_ID}@{HOST}", "c@example.net"
        )
        self.assertEqual(
            replies[2],
            "452 4.5.3 too many recipients: at most 2 a message; send the rest in another message",
        )
        self.assertEqual(client.message(), "250 2.0.0 message accepted as q0, q1")
        self.assertEqual(factory.queue.messages[1][0].recipients, ("a@example.net",))

    def test_tooBig(self) -> None:
        """
        A message over the size is read to its end and refused with 552
        5.3.4; nothing is queued and the session goes on.
        """
        factory = makeFactory(maxMessageSize=1000)
        client = Client(factory)
        client.transaction(f"{OPEN_ID}@{HOST}")
        self.assertEqual(
            client.message(REPLY + b"z" * 900 + b"\r\n"),
            "552 5.3.4 message refused: it is larger than 1000 bytes",
        )
        self.assertEqual(factory.queue.messages, [])
        self.assertEqual(factory.refusals["message-too-big"], 1)
        client.command("MAIL FROM:<a@b.example>")
        client.command(f"RCPT TO:<{OPEN_ID}@{HOST}>")
        self.assertEqual(client.message(), "250 2.0.0 message accepted as q0")


class TimeoutTests(SynchronousTestCase):
    """
    Idle and slow clients are closed with 421 4.4.2.
    """

    def test_idle(self) -> None:
        """
        Silence between commands closes the connection after the idle
        timeout, counted from the last input.
        """
        factory = makeFactory()
        client = Client(factory)
        factory.clock.advance(299)
        client.command("NOOP")
        factory.clock.advance(299)
        self.assertEqual(client.replies(), [])
        factory.clock.advance(1)
        self.assertEqual(
            client.replies(),
            [
                "421 4.4.2 no input between commands for 300 seconds; closing the connection"
            ],
        )
        self.assertTrue(client.transport.disconnecting)

    def test_data(self) -> None:
        """
        Inside DATA the data timeout applies.
        """
        factory = makeFactory(dataTimeout=600)
        client = Client(factory)
        client.transaction(f"{OPEN_ID}@{HOST}")
        client.command("DATA")
        client.send(b"Subject: slow\r\n")
        factory.clock.advance(599)
        self.assertFalse(client.transport.disconnecting)
        factory.clock.advance(1)
        self.assertEqual(
            client.replies(),
            ["421 4.4.2 no input inside DATA for 600 seconds; closing the connection"],
        )
        self.assertTrue(client.transport.disconnecting)

    def test_notWhileWaiting(self) -> None:
        """
        No timeout runs while the proxy waits for the queue; it starts again
        after the answer.
        """
        queue = FakeQueue(automatic=False)
        factory = makeFactory(queue=queue)
        client = Client(factory)
        client.transaction(f"{OPEN_ID}@{HOST}")
        client.command("DATA")
        client.send(REPLY + b".\r\n")
        factory.clock.advance(10_000)
        self.assertFalse(client.transport.disconnecting)
        queue.fire()
        self.assertEqual(client.replies(), ["250 2.0.0 message accepted as q0"])
        factory.clock.advance(300)
        self.assertTrue(client.transport.disconnecting)

    def test_closedWhileWaiting(self) -> None:
        """
        A client that goes away while the store is asked gets no reply
        written later.
        """
        store = FakeStore()
        store.pending = []
        client = Client(makeFactory(store=store))
        client.command("EHLO c.example")
        client.command("MAIL FROM:<a@b.example>")
        self.assertEqual(client.send(f"RCPT TO:<{OPEN_ID}@{HOST}>\r\n".encode()), [])
        client.protocol.connectionLost(None)
        store.pending[0].callback(None)
        self.assertEqual(client.replies(), [])


class ConnectionLimitTests(SynchronousTestCase):
    """
    Connections in all and per client.
    """

    def test_total(self) -> None:
        """
        Beyond the limit a client gets 421 4.7.0 at connect and is closed;
        once one closes, the next is served.
        """
        factory = makeFactory(maxConnections=2)
        first, _ = Client(factory, host="192.0.2.1"), Client(factory, host="192.0.2.2")
        third = Client(factory, host="192.0.2.3")
        self.assertEqual(
            third.greeting,
            [
                "421 4.7.0 mx.example.com is serving too many connections; try again later"
            ],
        )
        self.assertTrue(third.transport.disconnecting)
        third.protocol.connectionLost(None)
        first.protocol.connectionLost(None)
        self.assertTrue(
            Client(factory, host="192.0.2.3").greeting[0].startswith("220 ")
        )

    def test_perClient(self) -> None:
        """
        Beyond the limit per client address the same client gets 421 4.7.0;
        another is served.
        """
        factory = makeFactory(maxConnectionsPerClient=1)
        Client(factory, host="192.0.2.1")
        second = Client(factory, host="192.0.2.1")
        self.assertTrue(
            second.greeting[0].startswith(
                "421 4.7.0 mx.example.com: too many connections from 192.0.2.1"
            )
        )
        self.assertTrue(
            Client(factory, host="192.0.2.2").greeting[0].startswith("220 ")
        )
        self.assertEqual(factory.refusals["too-many-connections-from-client"], 1)


class PipeliningTests(SynchronousTestCase):
    """
    A pipelining client cannot run ahead of a lookup.
    """

    def test_waitsForStore(self) -> None:
        """
        While a contact lookup waits, reading pauses and later commands wait
        in order; they are answered once it is done.
        """
        store = FakeStore()
        store.pending = []
        client = Client(makeFactory(store=store))
        lines = client.send(
            b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<"
            + OPEN_ID.encode()
            + b"@"
            + HOST.encode()
            + b">\r\nRCPT TO:<x@example.net>\r\nDATA\r\n"
        )
        self.assertEqual(lines[-1], "250 2.1.0 sender <a@b.example> OK")
        self.assertEqual(client.transport.producerState, "paused")
        store.pending[0].callback(None)
        self.assertEqual(
            client.replies(),
            [
                f"550 5.1.1 no contact {OPEN_ID} is known here; answer from ACE Agent",
                "250 2.1.5 recipient <x@example.net> OK",
                "354 End data with <CR><LF>.<CR><LF>",
            ],
        )
