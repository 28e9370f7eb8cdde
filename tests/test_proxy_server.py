"""
Tests for L{ace_mail.proxy.ProxyProtocol} and L{ace_mail.proxy.ProxyFactory}:
the session grammar and who may relay.
"""

from __future__ import annotations

import re

from twisted.trial.unittest import SynchronousTestCase

from .proxyfakes import (
    HOST,
    OPEN_ID,
    UNKNOWN_ID,
    Client,
    makeFactory,
)

_ENHANCED = re.compile(r"^[245]\d\d [245]\.\d{1,3}\.\d{1,3} \S")


class GrammarTests(SynchronousTestCase):
    """
    The commands, their order and their replies.
    """

    def setUp(self) -> None:
        self.client = Client(makeFactory())

    def test_greeting(self) -> None:
        """
        The greeting is 220 with the HELO name first, as RFC 5321 wants.
        """
        self.assertEqual(
            self.client.greeting, ["220 mx.example.com ESMTP ace-mail proxy ready"]
        )

    def test_ehlo(self) -> None:
        """
        EHLO advertises SIZE with the limit, 8BITMIME, PIPELINING and
        ENHANCEDSTATUSCODES; without TLS settings neither STARTTLS nor AUTH.
        """
        lines = self.client.send(b"EHLO client.example.org\r\n")
        self.assertEqual(
            lines,
            [
                "250-mx.example.com greets client.example.org",
                "250-SIZE 10240000",
                "250-8BITMIME",
                "250-PIPELINING",
                "250 ENHANCEDSTATUSCODES",
            ],
        )

    def test_helo(self) -> None:
        """
        HELO is answered with one line and opens the session as well.
        """
        self.assertEqual(
            self.client.command("HELO c.example"), "250 mx.example.com greets c.example"
        )
        self.assertTrue(self.client.command("MAIL FROM:<>").startswith("250 2.1.0"))

    def test_greetingNeedsName(self) -> None:
        """
        EHLO without a name is a 501.
        """
        self.assertEqual(
            self.client.command("EHLO"), "501 5.5.4 syntax: EHLO your-host-name"
        )

    def test_sequence(self) -> None:
        """
        MAIL needs EHLO, RCPT needs MAIL, DATA needs a recipient, and a
        second MAIL needs RSET first.
        """
        c = self.client
        self.assertEqual(
            c.command("MAIL FROM:<a@b.example>"), "503 5.5.1 send EHLO or HELO first"
        )
        c.command("EHLO c.example")
        self.assertEqual(
            c.command(f"RCPT TO:<{OPEN_ID}@{HOST}>"), "503 5.5.1 send MAIL FROM first"
        )
        self.assertEqual(c.command("DATA"), "503 5.5.1 send MAIL FROM first")
        c.command("MAIL FROM:<a@b.example>")
        self.assertEqual(c.command("DATA"), "554 5.5.1 no valid recipients")
        self.assertTrue(c.command("MAIL FROM:<a@b.example>").startswith("503 5.5.1"))
        self.assertEqual(c.command("RSET"), "250 2.0.0 reset")
        self.assertEqual(
            c.command(f"RCPT TO:<{OPEN_ID}@{HOST}>"), "503 5.5.1 send MAIL FROM first"
        )

    def test_otherCommands(self) -> None:
        """
        NOOP, VRFY, HELP and unknown commands get their replies.
        """
        c = self.client
        self.assertEqual(c.command("NOOP"), "250 2.0.0 OK")
        self.assertTrue(c.command("VRFY someone").startswith("252 2.5.2 "))
        self.assertTrue(c.command("VRFY").startswith("501 5.5.4 "))
        self.assertTrue(c.command("HELP").startswith("214 2.0.0 commands: EHLO"))
        self.assertEqual(c.command("EXPN staff"), "500 5.5.1 command not recognized")
        self.assertEqual(c.command("BDAT 10 LAST"), "500 5.5.1 command not recognized")
        self.assertEqual(c.command(""), "500 5.5.1 command not recognized")
        self.assertEqual(
            c.command("DATA x"), "501 5.5.4 this command takes no argument"
        )

    def test_quit(self) -> None:
        """
        QUIT is answered with 221 and closes the connection; later input is
        ignored.
        """
        self.assertEqual(
            self.client.send(b"QUIT\r\nNOOP\r\n"),
            ["221 2.0.0 mx.example.com closing the connection"],
        )
        self.assertTrue(self.client.transport.disconnecting)

    def test_enhancedCodes(self) -> None:
        """
        Every reply after the greeting, but for EHLO's and 354, has an
        enhanced status code and a sentence.
        """
        c = self.client
        lines = c.send(
            b"HELO c.example\r\nNOOP\r\nVRFY x\r\nMAIL FROM:<bad>\r\nMAIL FROM:<a@b.example>\r\n"
            b"RCPT TO:<x!y@z.example>\r\nRCPT TO:<"
            + UNKNOWN_ID.encode()
            + b"@proxy.example.com>\r\n"
            b"RCPT TO:<"
            + OPEN_ID.encode()
            + b"@proxy.example.com>\r\nSTARTTLS\r\nAUTH PLAIN\r\n"
            b"FOO\r\nRSET\r\nQUIT\r\n"
        )
        self.assertEqual(len(lines), 13)
        for line in lines[1:]:
            self.assertRegex(line, _ENHANCED)

    def test_mailParameters(self) -> None:
        """
        SIZE within the limit, BODY and AUTH are accepted; SIZE over the
        limit is a 552 at MAIL; others are 555 or 501.
        """
        c = self.client
        c.command("EHLO c.example")
        self.assertTrue(
            c.command(
                "MAIL FROM:<a@b.example> SIZE=10240000 BODY=8BITMIME AUTH=<>"
            ).startswith("250 ")
        )
        c.command("RSET")
        self.assertEqual(
            c.command("MAIL FROM:<a@b.example> SIZE=10240001"),
            "552 5.3.4 message size 10240001 exceeds the limit of 10240000 bytes",
        )
        self.assertTrue(
            c.command("MAIL FROM:<a@b.example> SIZE=big").startswith("501 5.5.4")
        )
        self.assertTrue(
            c.command("MAIL FROM:<a@b.example> BODY=BINARYMIME").startswith("501 5.5.4")
        )
        self.assertTrue(
            c.command("MAIL FROM:<a@b.example> SMTPUTF8").startswith("555 5.5.4")
        )
        c.command("MAIL FROM:<a@b.example>")
        self.assertTrue(
            c.command(f"RCPT TO:<{OPEN_ID}@{HOST}> NOTIFY=NEVER").startswith(
                "555 5.5.4"
            )
        )

    def test_longCommand(self) -> None:
        """
        A command line over 512 bytes gets 500 5.5.2, and the session goes
        on.
        """
        c = self.client
        self.assertEqual(
            c.command("NOOP " + "x" * 506), "500 5.5.2 line too long: at most 512 bytes"
        )
        self.assertEqual(c.command("NOOP " + "x" * 5000)[:3], "500")
        self.assertEqual(c.command("NOOP " + "x" * 505), "250 2.0.0 OK")

    def test_unterminatedLine(self) -> None:
        """
        More than 64 KiB without CRLF closes the connection with 421 rather
        than being kept.
        """
        c = self.client
        self.assertEqual(c.send(b"x" * 65536), [])
        self.assertEqual(
            c.send(b"x"),
            ["421 4.7.0 line too long without CRLF; closing the connection"],
        )
        self.assertTrue(c.transport.disconnecting)

    def test_controlAndNonAscii(self) -> None:
        """
        Control characters and non-ASCII bytes in a command are refused.
        """
        c = self.client
        self.assertTrue(c.send(b"NOOP \0\r\n")[0].startswith("501 5.5.2"))
        self.assertTrue(c.send(b"NOOP a\rb\r\n")[0].startswith("501 5.5.2"))
        self.assertEqual(
            c.send(b"NOOP \xc3\xa9\r\n"), ["500 5.5.2 commands must be ASCII"]
        )


class RelayTests(SynchronousTestCase):
    """
    Only trusted networks and authenticated clients may send.
    """

    def test_untrustedRefused(self) -> None:
        """
        An untrusted client gets 550 5.7.1 for contact and pass-through
        recipients alike; the store is not asked and nothing is queued.
        """
        factory = makeFactory()
        client = Client(factory, host="192.0.2.10")
        replies = client.transaction(f"{OPEN_ID}@{HOST}", "someone@example.net")
        self.assertEqual(
            replies,
            [
                f"550 5.7.1 <{OPEN_ID}@{HOST}>: relay access denied: authenticate or send from a trusted network",
                "550 5.7.1 <someone@example.net>: relay access denied: authenticate or send from a trusted network",
            ],
        )
        self.assertEqual(client.command("DATA"), "554 5.5.1 no valid recipients")
        self.assertEqual(factory.store.lookups, [])
        self.assertEqual(factory.queue.messages, [])
        self.assertEqual(factory.refusals["relay-denied"], 2)

    def test_trustedNetworks(self) -> None:
        """
        Clients in the configured trusted networks may send, IPv6 included.
        """
        factory = makeFactory(trustedNetworks=("192.0.2.0/24", "2001:db8::/32"))
        for host in ["192.0.2.10", "2001:db8::1"]:
            client = Client(factory, host=host)
            self.assertEqual(
                client.transaction("someone@example.net"),
                ["250 2.1.5 recipient <someone@example.net> OK"],
            )
        client = Client(factory, host="127.0.0.1")
        self.assertTrue(
            client.transaction("someone@example.net")[0].startswith("550 5.7.1")
        )
