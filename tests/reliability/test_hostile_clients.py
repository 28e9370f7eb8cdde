"""
Hostile clients against a real C{twistd -n ace-mail} proxy in front of an
aiosmtpd sink: each case has the reply it must get, and the sink is checked
afterwards for anything that should not have reached it.
"""

from __future__ import annotations

import os
import resource
import select
import selectors
import socket
import ssl
import time
from collections import Counter

from twisted.trial.unittest import SkipTest

from tests.e2e import test_proxy
from tests.e2e._harness import LOOPBACK, ProxyAceMail
from tests.e2e.test_proxy import (
    AGENT,
    CERTS,
    CUSTOMER_ADDRESS,
    ELSEWHERE,
    SMUGGLING,
    RawClient,
    agentReply,
    revealed,
    withoutReceived,
)
from tests.reliability._figures import SKIP, record

SECTION = "Hostile clients"
COMMAND = (
    "ACE_RELIABILITY=1 python -m twisted.trial tests.reliability.test_hostile_clients"
)
TIMEOUT = 15
CONNECTIONS = 10_000
SOURCES = 100
BACKLOG = 4096


def codes(replies: list[bytes]) -> list[str]:
    """
    @return: The code and the next word of each reply's last line, such as
        C{"550 5.6.2"}.
    """
    lines = [reply.rstrip(b"\r\n").split(b"\r\n")[-1] for reply in replies]
    return [" ".join(line.decode("ascii", "replace").split(" ")[:2]) for line in lines]


def pushWhileReading(client: RawClient, data: bytes) -> bytes:
    """
    Send C{data} in pieces, stopping as soon as the server answers or stops
    taking it, so that its reply is read before a reset can drop it.

    @return: The server's reply, or what went wrong instead.
    """
    for start in range(0, len(data), 16384):
        if select.select([client.socket], [], [], 0.05)[0]:
            break
        try:
            client.send(data[start : start + 16384])
        except OSError:
            break
    try:
        return client.reply()
    except OSError as e:
        return f"(no reply: {e})".encode()


class _HostileTestCase(test_proxy._ProxyTestCase):
    """
    One sink and one ace-mail with its proxy for each test, and helpers for
    talking to the proxy badly.
    """

    skip = SKIP
    relayAnswers: list[str]

    def outcome(self, case: str, value: str) -> None:
        record(SECTION, case, value, COMMAND)

    def session(self) -> RawClient:
        """
        A raw client that has read the greeting and said EHLO.
        """
        client = RawClient(self.aceMail.proxyPort)
        self.addCleanup(client.close)
        self.assertTrue(client.reply().startswith(b"220 "))
        self.assertTrue(client.command(b"EHLO pc.agents.example").startswith(b"250"))
        return client

    def transaction(self, recipient: bytes = ELSEWHERE.encode()) -> RawClient:
        """
        A raw client with MAIL FROM and one RCPT TO sent.
        """
        client = self.session()
        mail = client.command(b"MAIL FROM:<" + AGENT.encode() + b">")
        self.assertTrue(mail.startswith(b"250"), mail)
        self.rcptReply = client.command(b"RCPT TO:<" + recipient + b">")
        return client

    def tryRelay(self, mailFrom: str, rcptTo: str) -> str:
        answer = super().tryRelay(mailFrom, rcptTo)
        self.relayAnswers.append(answer)
        return answer

    def relayed(self, case: str) -> None:
        tally = Counter(" ".join(a.split(" ")[:3]) for a in self.relayAnswers)
        self.outcome(case, f"{len(self.relayAnswers)} tried: {dict(tally)}; sink: 0")

    def assertStillServes(self) -> None:
        """
        A well-behaved client still gets a message through to the sink.
        """
        before = len(self.sentTo(ELSEWHERE))
        message = b"Subject: ok\r\n\r\nok\r\n"
        self.assertEqual(self.client().sendmail(AGENT, [ELSEWHERE], message), {})
        self.deliveriesTo(ELSEWHERE, before + 1)


class TrustedHostileClientTests(_HostileTestCase):
    """
    A client on the trusted network (127.0.0.0/8) that misbehaves.
    """

    options = ["--smtpProxyIdleTimeout", str(TIMEOUT)]
    options += ["--smtpProxyDataTimeout", str(TIMEOUT)]

    def test_smugglingSequences(self) -> None:
        """
        Each lax end-of-data sequence with a second transaction behind it
        gets 550 at the real end, and the sink gets neither message.
        """
        finals = []
        for sequence in SMUGGLING:
            client = self.transaction()
            self.assertTrue(client.command(b"DATA").startswith(b"354"))
            client.send(
                b"Subject: first\r\n\r\nfirst" + sequence + b"MAIL FROM:<s@evil.test>"
                b"\r\nRCPT TO:<victim@victim.test>\r\nDATA\r\nsmuggled\r\n.\r\n"
            )
            finals.append(client.reply())
            self.assertTrue(client.command(b"NOOP").startswith(b"250"))
        self.assertEqual({c[:3] for c in codes(finals)}, {"550"})
        self.assertEqual(self.quiet(), [])
        tally = dict(Counter(codes(finals)))
        self.outcome("smuggling sequences", f"{len(finals)} tried: {tally}; sink: 0")

    def test_openRelayFormsInContactAddress(self) -> None:
        """
        The open-relay forms of the proxy's end-to-end battery, hidden in or
        built around a contact address, are all refused.
        """
        self.relayAnswers = []
        test_proxy.TrustedClientTests.test_openRelayFormsInsideContactAddress(
            self  # type: ignore[arg-type]
        )
        self.relayed("open-relay forms in a contact address (trusted client)")

    def test_commandLineOf513Bytes(self) -> None:
        """
        A command line of 512 bytes with its CRLF is taken; one of 513 gets
        500 5.5.2 and the session goes on.
        """
        client = self.session()
        fits = client.command(b"NOOP " + b"x" * 505)
        over = client.command(b"NOOP " + b"x" * 506)
        self.assertTrue(fits.startswith(b"250 2.0.0"), fits)
        self.assertEqual(over, b"500 5.5.2 line too long: at most 512 bytes\r\n")
        self.assertTrue(client.command(b"NOOP").startswith(b"250"))
        self.outcome("command line of 513 bytes", f"{codes([over])}; 512 taken")

    def test_megabyteWithoutLineEnd(self) -> None:
        """
        1 MB without a CRLF gets 421 4.7.0 and the connection closed; the
        proxy serves the next client.
        """
        client = self.session()
        reply = pushWhileReading(client, b"x" * 1024 * 1024)
        self.assertTrue(reply.startswith(b"421 4.7.0 line too long"), reply)
        self.assertEqual(client.reply(), b"")
        self.assertStillServes()
        self.outcome("1 MB without CRLF", f"{codes([reply])}, closed; next served")

    def test_tenThousandRecipients(self) -> None:
        """
        10,000 pipelined RCPTs: the first 100 get 250, every other one 452
        4.5.3, and the message reaches the sink once, for the first 100.
        """
        client = self.transaction(b"r0@elsewhere.example")
        addresses = [f"r{n}@elsewhere.example" for n in range(1, 10_000)]
        client.send(b"".join(f"RCPT TO:<{a}>\r\n".encode() for a in addresses))
        tally = Counter(codes([self.rcptReply] + [client.reply() for _ in addresses]))
        self.assertEqual(tally, Counter({"250 2.1.5": 100, "452 4.5.3": 9900}))
        self.assertTrue(client.command(b"DATA").startswith(b"354"))
        final = client.command(b"Subject: many\r\n\r\nmany\r\n.")
        self.assertTrue(final.startswith(b"250 2.0.0"), final)
        [delivery] = self.quiet()
        self.assertEqual(len(delivery.recipients), 100)
        self.outcome("10,000 RCPTs", f"{dict(tally)}; 1 message for 100 at the sink")

    def test_dataBeforeItsAnswer(self) -> None:
        """
        Message text sent with DATA, before the 354: after an accepted RCPT
        it is the message, delivered once; after a refused one DATA gets 554
        and each line of it is answered as a (bad) command, delivering
        nothing.
        """
        body = b"Subject: early\r\n\r\nearly text\r\n.\r\n"
        client = self.transaction()
        client.send(b"DATA\r\n" + body + b"NOOP\r\n")
        accepted = codes([client.reply() for _ in range(3)])
        self.assertEqual([c[:3] for c in accepted], ["354", "250", "250"])

        client = self.transaction(b"abcdefghijklmnopqrst@ace.test")
        self.assertTrue(self.rcptReply.startswith(b"550 5.1.1"), self.rcptReply)
        client.send(b"DATA\r\n" + body + b"NOOP\r\n")
        answered = codes([client.reply() for _ in range(6)])
        self.assertEqual(answered, ["554 5.5.1"] + ["500 5.5.1"] * 4 + ["250 2.0.0"])
        [delivery] = self.quiet()
        self.assertEqual(delivery.content, b"Subject: early\r\n\r\nearly text\r\n")
        self.outcome(
            "DATA sent before the 354",
            f"recipient accepted: {accepted}, delivered once; recipient refused: "
            f"{answered}, nothing delivered",
        )

    def test_nulAndEightBit(self) -> None:
        """
        NUL in a command gets 501, 8-bit in a command 500, NUL in a message
        550 5.6.0; 8-bit headers pass through unchanged, and to a contact
        they are rewritten without showing the agent.
        """
        client = self.transaction()
        answers = [client.command(b"NOOP\0"), client.command("VRFY grü".encode())]
        client.command(b"DATA")
        answers.append(client.command(b"Subject: nul\r\n\r\na\0b\r\n."))
        self.assertEqual(codes(answers), ["501 5.5.2", "500 5.5.2", "550 5.6.0"])

        sent = "Subject: Grüße über Ärger\r\nX-Latin: café\r\n\r\nbody\r\n".encode()
        contact = self.newContact()
        reply = agentReply(contact["address"], "Re: Grüße über Ärger")
        smtp = self.client()
        for to, message in ((ELSEWHERE, sent), (contact["address"], reply)):
            self.assertEqual(smtp.sendmail(AGENT, [to], message, ["BODY=8BITMIME"]), {})
        [passed] = self.deliveriesTo(ELSEWHERE)
        [copy] = self.deliveriesTo(CUSTOMER_ADDRESS)
        self.assertEqual(withoutReceived(passed.content), withoutReceived(sent))
        self.assertEqual(revealed(copy.content, AGENT), [])
        self.assertEqual(len(self.quiet()), 2)
        self.outcome(
            "NUL bytes and 8-bit headers",
            f"{codes(answers)} (NUL in a command, 8-bit in a command, NUL in a "
            "message); 8-bit headers: 250, unchanged, and rewritten for a contact",
        )

    def test_addressesWithLineBreaks(self) -> None:
        """
        A CR or LF in MAIL FROM or RCPT TO gets 501 5.5.2 and adds no
        recipient, so DATA has none.
        """
        client = self.session()
        answers = [
            client.command(b"MAIL FROM:<a\rb@agents.example>"),
            client.command(b"MAIL FROM:<a\nb@agents.example>"),
        ]
        client.command(f"MAIL FROM:<{AGENT}>".encode())
        answers += [
            client.command(b"RCPT TO:<victim\r@victim.example>"),
            client.command(b"RCPT TO:<x@elsewhere.example>\nRCPT TO:<v@victim.test>"),
            client.command(b"RCPT TO:<x@elsewhere.example>\rDATA"),
            client.command(b"DATA"),
        ]
        self.assertEqual(codes(answers), ["501 5.5.2"] * 5 + ["554 5.5.1"])
        self.assertEqual(self.quiet(), [])
        self.outcome("addresses with CR/LF", f"{codes(answers)}; sink: 0")

    def test_slowloris(self) -> None:
        """
        One byte every 10 s, between commands or inside DATA, gets 421 4.4.2
        once the timeout (15 s here) has passed since the last line's end.
        """
        clients = {
            "between commands": self.session(),
            "inside DATA": self.transaction(),
        }
        self.assertTrue(clients["inside DATA"].command(b"DATA").startswith(b"354"))
        started = time.monotonic()
        closed: dict[str, tuple[float, bytes]] = {}
        for step in range(6):
            for client in clients.values():
                try:
                    client.send(b"Subject"[step : step + 1])
                except OSError:
                    pass
            deadline = time.monotonic() + 10
            for name, client in clients.items():
                left = max(0.0, deadline - time.monotonic())
                if (
                    name not in closed
                    and select.select([client.socket], [], [], left)[0]
                ):
                    closed[name] = (time.monotonic() - started, client.reply())
            if len(closed) == len(clients):
                break
        self.assertEqual(sorted(closed), sorted(clients), closed)
        for name, (after, reply) in closed.items():
            self.assertTrue(reply.startswith(b"421 4.4.2"), reply)
            self.assertLess(after, TIMEOUT + 8, name)
        self.assertEqual(self.quiet(), [])
        self.outcome(
            "slowloris, one byte per 10 s (timeouts 15 s)",
            ", ".join(
                f"{n}: {codes([r])} after {t:.0f} s" for n, (t, r) in closed.items()
            ),
        )


class BacklogAceMail(ProxyAceMail):
    """
    ace-mail whose proxy listens with a backlog of L{BACKLOG}.
    """

    def commandLine(self) -> list[str]:
        command = super().commandLine()
        command[command.index("--smtpProxyPort") + 1] += f":backlog={BACKLOG}"
        return command


class ConnectionFloodTests(_HostileTestCase):
    """
    Many connections at once, against a proxy listening with a backlog big
    enough to take them (with Twisted's default of 50, a burst of 10,000 is
    mostly dropped by the kernel and left to the clients' SYN retries).
    """

    def setUp(self) -> None:
        self.patch(test_proxy, "ProxyAceMail", BacklogAceMail)
        super().setUp()

    def flood(self) -> tuple[Counter[str], int]:
        """
        Open L{CONNECTIONS} connections from L{SOURCES} loopback addresses
        at once, and read the first line of each (for at most 120 s).

        @return: How many got each reply code, and how many got nothing.
        """
        selector = selectors.DefaultSelector()
        sockets: list[socket.socket] = []
        outcomes: Counter[str] = Counter()
        try:
            for n in range(CONNECTIONS):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(s)
                s.bind((f"127.0.1.{n % SOURCES + 1}", 0))
                s.setblocking(False)
                s.connect_ex((LOOPBACK, self.aceMail.proxyPort))
                selector.register(s, selectors.EVENT_READ, bytearray())
            deadline = time.monotonic() + 120
            while selector.get_map() and time.monotonic() < deadline:
                for key, _ in selector.select(1):
                    try:
                        chunk = key.fileobj.recv(4096)  # type: ignore[union-attr]
                    except OSError as e:
                        chunk, key.data[:] = b"", f"({e.strerror})".encode()
                    key.data.extend(chunk)
                    if b"\r\n" in key.data or not chunk:
                        line = bytes(key.data).split(b"\r\n")[0].decode()
                        outcomes[line[:3] or "closed"] += 1
                        selector.unregister(key.fileobj)
            return outcomes, len(selector.get_map())
        finally:
            selector.close()
            for s in sockets:
                s.close()

    def test_tenThousandConnections(self) -> None:
        """
        10,000 connections at once from 100 loopback addresses: 200 (the
        limit) are served, every other one gets 421, and afterwards a normal
        client still gets its message through.
        """
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < CONNECTIONS + 500:
            raise SkipTest(f"RLIMIT_NOFILE's hard limit {hard} is below 10,500")
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, CONNECTIONS + 500), hard))
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        started = time.monotonic()
        outcomes, unanswered = self.flood()
        seconds = time.monotonic() - started
        self.assertEqual((unanswered, set(outcomes)), (0, {"220", "421"}), outcomes)
        self.assertEqual(outcomes["220"], 200)
        self.assertStillServes()
        self.outcome(
            f"10,000 connections at once (limits 200, 20 a client; backlog {BACKLOG})",
            f"{dict(outcomes)} in {seconds:.1f} s; a normal client served after",
        )


class UntrustedHostileClientTests(_HostileTestCase):
    """
    A client from outside the trusted networks, which must start TLS and
    log in, misbehaving.
    """

    options = ["--smtpProxyTrustedNetworks", "192.0.2.0/24"]
    user = test_proxy.UntrustedClientTests.user
    password = test_proxy.UntrustedClientTests.password
    moreOptions = test_proxy.UntrustedClientTests.moreOptions

    def startTls(self, client: RawClient, pipelined: bytes = b"") -> bytes:
        """
        Send STARTTLS (and C{pipelined} in the same write) and shake hands.

        @return: The reply to STARTTLS.
        """
        client.send(b"STARTTLS\r\n" + pipelined)
        reply = client.reply()
        self.assertTrue(reply.startswith(b"220"), reply)
        context = ssl.create_default_context(cafile=os.path.join(CERTS, "ca.pem"))
        client.socket = context.wrap_socket(client.socket, server_hostname=LOOPBACK)
        return reply

    def test_openRelayFormsFromUntrusted(self) -> None:
        """
        The 16 forms of nmap's smtp-open-relay script from an untrusted
        client are all refused with 5xx.
        """
        self.relayAnswers = []
        test_proxy.UntrustedClientTests.test_openRelayFormsFromUntrustedClient(
            self  # type: ignore[arg-type]
        )
        self.relayed("open-relay forms (untrusted client)")

    def test_startTlsWithPipelinedCommands(self) -> None:
        """
        Commands sent in the clear behind STARTTLS are dropped: after the
        handshake the session starts afresh and none of them took effect.
        """
        client = self.session()
        injected = b"MAIL FROM:<s@evil.test>\r\nRCPT TO:<victim@victim.test>\r\n"
        starttls = self.startTls(client, injected)
        after = [
            client.command(b"RCPT TO:<victim@victim.test>"),
            client.command(b"EHLO pc.agents.example"),
            client.command(b"DATA"),
        ]
        self.assertEqual(codes(after), ["503 5.5.1", "250 AUTH", "503 5.5.1"])
        self.assertEqual(self.quiet(), [])
        self.outcome(
            "STARTTLS with pipelined commands",
            f"{codes([starttls])}, injected commands dropped; then {codes(after)}",
        )

    def test_authBadBase64AndBeforeTls(self) -> None:
        """
        AUTH before TLS gets 538 5.7.11; after TLS, bad base64 gets 501
        5.5.2 (8-bit 500 5.5.2), in the command and in a LOGIN step; relaying
        stays refused.
        """
        client = self.session()
        answers = [client.command(b"AUTH PLAIN AGFnZW50MQBzZWNyZXQ=")]
        self.startTls(client)
        client.command(b"EHLO pc.agents.example")
        for line in (b"AUTH PLAIN %%%", b"AUTH LOGIN", b"\xff==", b"AUTH PLAIN AG==="):
            answers.append(client.command(line))
        client.command(f"MAIL FROM:<{AGENT}>".encode())
        answers.append(client.command(f"RCPT TO:<{ELSEWHERE}>".encode()))
        expected = ["538 5.7.11", "501 5.5.2", "334 VXNlcm5hbWU6", "500 5.5.2"]
        self.assertEqual(codes(answers), expected + ["501 5.5.2", "550 5.7.1"])
        self.assertEqual(self.quiet(), [])
        self.outcome("AUTH with bad base64, and AUTH before TLS", f"{codes(answers)}")
