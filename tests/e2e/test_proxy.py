"""
End-to-end tests of the SMTP proxy: a real C{twistd -n ace-mail} with its
proxy on, an aiosmtpd sink as the real SMTP server behind it, contacts made
over the API, and real clients (smtplib, swaks and raw sockets) on
127.0.0.1.
"""

from __future__ import annotations

import email.policy
import os
import re
import shutil
import smtplib
import socket
import subprocess
import time
import uuid
from email.header import decode_header, make_header
from email.parser import BytesParser
from email.utils import getaddresses
from typing import Any, Sequence

import bcrypt
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.e2e._harness import (
    LOOPBACK,
    Delivery,
    ProxyAceMail,
    Sink,
    freePort,
    settled,
    waitFor,
)

AGENT = "agent@agents.example"
COLLEAGUE = "colleague@agents.example"
CUSTOMER = "Ann Customer <ann@customer.example>"
CUSTOMER_ADDRESS = "ann@customer.example"
ORIGINAL_ID = "<orig-1@customer.example>"
ENTRANCE_ADDRESS = "support@example.com"
ELSEWHERE = "friend@elsewhere.example"
RETENTION_HOURS = 0.002
CERTS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "certs")

# Bytes that a lax server takes for the end of DATA, though only
# <CR><LF>.<CR><LF> is.
SMUGGLING = [
    b"\n.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r\n\x00.\r\n",
    b"\r\n.\r\r\n",
]

# The MAIL FROM and RCPT TO of each test of nmap's smtp-open-relay script,
# with {domain} the relay target's domain, {server} the name in the
# server's greeting, {ip} its address and {user} the local part.
OPEN_RELAY = [
    ("<>", "<{user}@{domain}>"),
    ("<antispam@{domain}>", "<{user}@{domain}>"),
    ("<antispam@{server}>", "<{user}@{domain}>"),
    ("<antispam@[{ip}]>", "<{user}@{domain}>"),
    ("<antispam@[{ip}]>", "<{user}%{domain}@[{ip}]>"),
    ("<antispam@[{ip}]>", "<{user}%{domain}@{server}>"),
    ("<antispam@[{ip}]>", '<"{user}@{domain}">'),
    ("<antispam@[{ip}]>", '<"{user}%{domain}">'),
    ("<antispam@[{ip}]>", "<{user}@{domain}@[{ip}]>"),
    ("<antispam@[{ip}]>", '<"{user}@{domain}"@[{ip}]>'),
    ("<antispam@[{ip}]>", "<{user}@{domain}@{server}>"),
    ("<antispam@[{ip}]>", "<@[{ip}]:{user}@{domain}>"),
    ("<antispam@[{ip}]>", "<@{server}:{user}@{domain}>"),
    ("<antispam@[{ip}]>", "<{domain}!{user}>"),
    ("<antispam@[{ip}]>", "<{domain}!{user}@[{ip}]>"),
    ("<antispam@[{ip}]>", "<{domain}!{user}@{server}>"),
]


def agentReply(contactAddress: str, subject: str) -> bytes:
    """
    A reply as an agent's mail client sends it to a contact address: full
    of headers that name the agent, some in encoded words and folded, and
    with a colleague on Cc. The body names neither.
    """
    lines = [
        f"Return-Path: <{AGENT}>",
        "Received: from agentpc.agents.example (agentpc [10.1.2.3])",
        f"\tby mail.agents.example for <{AGENT}>; Thu, 3 Dec 2026 10:00:00 +0000",
        "DKIM-Signature: v=1; a=rsa-sha256; d=agents.example; s=s1;",
        f" i={AGENT}; h=from:to:subject; bh=YWJj; b=ZGVm",
        'From: "Smith, Agent" <Agent@Agents.Example>',
        f"Sender: {AGENT}",
        f"Reply-To: Agent Smith <{AGENT}>",
        f"To: Ann Customer via ACE <{contactAddress}>",
        f"Cc: Colleague <{COLLEAGUE}>",
        f"Subject: {subject}",
        "Date: Thu, 03 Dec 2026 10:00:00 +0000",
        f"Message-ID: <{uuid.uuid4().hex}@agents.example>",
        "In-Reply-To: <forwarded-1@ace.test>",
        "References: <forwarded-1@ace.test>",
        "X-Originating-IP: [10.1.2.3]",
        f"X-Sender: {AGENT}",
        "X-MS-Exchange-Organization-AuthAs: Internal",
        f"X-MS-Exchange-Organization-Originator: {AGENT}",
        f"Disposition-Notification-To: Agent Smith <{AGENT}>",
        f"Return-Receipt-To: {AGENT}",
        "X-Agent-Note: =?utf-8?B?cmVwbHkgYnkgYWdlbnRAYWdlbnRzLmV4YW1wbGU=?=",
        "X-Agent-Folded: written by",
        " =?iso-8859-1?q?AGENT=40agents=2Eexample?= from the agents' office",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        "Hello Ann,",
        "your order ships today. Grüße!",
        ".a line that starts with a dot",
    ]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def split(content: bytes) -> tuple[bytes, bytes]:
    """
    @return: The header block (with the CRLF of its last line) and the
        body of a message.
    """
    head, _, body = content.partition(b"\r\n\r\n")
    return head + b"\r\n", body


def withoutReceived(content: bytes) -> bytes:
    """
    @return: The message without its Received fields, folded lines and all.
    """
    head, body = split(content)
    fields = re.split(rb"\r\n(?![ \t])", head[:-2])
    kept = [f for f in fields if not f.lower().startswith(b"received:")]
    return b"\r\n".join(kept) + b"\r\n\r\n" + body


def revealed(content: bytes, address: str) -> list[str]:
    """
    @return: Where C{address} shows in a message, in any letter case: in its
        raw bytes, or in a header once unfolded and decoded.
    """
    needle = address.lower()
    places = ["raw bytes"] if needle.encode() in content.lower() else []
    message = BytesParser(policy=email.policy.default).parsebytes(content)
    for name, value in message.raw_items():
        unfolded = re.sub(r"\r?\n[ \t]", " ", str(value))
        decoded = str(make_header(decode_header(unfolded)))
        parsed = str(message.get(name, ""))
        if any(needle in text.lower() for text in (unfolded, decoded, parsed)):
            places.append(name)
    return places


def headerAddresses(content: bytes, name: str) -> list[tuple[str, str]]:
    """
    @return: The display names and addresses of every C{name} header.
    """
    message = BytesParser(policy=email.policy.default).parsebytes(content)
    return getaddresses([str(v) for v in message.get_all(name, [])])


def header(content: bytes, name: str) -> str:
    """
    @return: The decoded value of the first C{name} header, or C{""}.
    """
    message = BytesParser(policy=email.policy.default).parsebytes(content)
    return str(message.get(name, ""))


def bareNewlines(content: bytes) -> bool:
    """
    @return: Whether a CR or an LF shows anywhere but in a CRLF.
    """
    return b"\r" in content.replace(b"\r\n", b"") or b"\n" in content.replace(
        b"\r\n", b""
    )


class RawClient:
    """
    An SMTP client over a plain socket, for bytes no library would send.
    """

    def __init__(self, port: int) -> None:
        self.socket = socket.create_connection((LOOPBACK, port), timeout=10)
        self.buffer = b""

    def close(self) -> None:
        self.socket.close()

    def send(self, data: bytes) -> None:
        self.socket.sendall(data)

    def reply(self) -> bytes:
        """
        Read one whole reply, all its lines, within the socket's timeout.

        @return: The reply, or C{b""} if the connection closed first.
        """
        lines = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.socket.recv(65536)
                if not chunk:
                    return b"".join(lines)
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            lines.append(line + b"\r\n")
            if line[3:4] != b"-":
                return b"".join(lines)

    def command(self, line: bytes) -> bytes:
        self.send(line + b"\r\n")
        return self.reply()


class _ProxyTestCase(SynchronousTestCase):
    """
    Starts a sink and an ace-mail with its proxy, and checks what the sink
    got.
    """

    options: Sequence[str] = ()

    def setUp(self) -> None:
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.sink = Sink(freePort(), os.path.join(self.base, "sink"))
        self.aceMail = ProxyAceMail(
            os.path.join(self.base, "data"),
            self.sink.port,
            os.path.join(self.base, "ace-mail.log"),
            list(self.options) + self.moreOptions(),
        )
        self.addCleanup(self.sink.kill)
        self.addCleanup(self.aceMail.kill)
        self.sink.start()
        self.aceMail.start()

    def moreOptions(self) -> list[str]:
        """
        Options that need the test's folder.
        """
        return []

    def newContact(self) -> dict[str, Any]:
        """
        Make a contact for the customer's email C{ORIGINAL_ID}.
        """
        return self.aceMail.createContact(CUSTOMER, "My order", ORIGINAL_ID)

    def client(self) -> smtplib.SMTP:
        """
        An smtplib client connected to the proxy, that has said EHLO.
        """
        client = smtplib.SMTP(LOOPBACK, self.aceMail.proxyPort, timeout=30)
        self.addCleanup(client.close)
        client.ehlo("agentpc.agents.example")
        return client

    def waitFor(self, what: str, condition: Any, timeout: float) -> None:
        """
        L{waitFor}, with the tail of ace-mail's log in the failure.
        """
        try:
            waitFor(what, condition, timeout)
        except AssertionError as e:
            self.fail(f"{e}\nace-mail's log ends with:\n{self.aceMail.logTail()}")

    def deliveriesTo(self, address: str, count: int = 1) -> list[Delivery]:
        """
        Wait (at most 30 s) until the sink holds C{count} messages for
        C{address}.

        @return: Those messages.
        """
        self.waitFor(
            f"{count} messages for {address} at the sink",
            lambda: len(self.sentTo(address)) >= count,
            30,
        )
        return self.sentTo(address)

    def sentTo(self, address: str) -> list[Delivery]:
        return [d for d in self.sink.deliveries() if address in d.recipients]

    def quiet(self) -> list[Delivery]:
        """
        Wait (at most 30 s) until ace-mail's queue is empty and the sink
        takes no more.

        @return: Everything the sink holds.
        """
        self.waitFor("ace-mail's queue to empty", lambda: not self.aceMail.queue(), 30)
        settled([self.sink], quiet=0.5, timeout=10)
        return self.sink.deliveries()

    def tryRelay(self, mailFrom: str, rcptTo: str) -> str:
        """
        Send one message with this exact MAIL FROM and RCPT TO, on a new
        connection, going on to DATA only if the recipient is accepted.

        @return: The first reply that refused, such as C{"RCPT 553 ..."}, or
            C{""} when the message was accepted.
        """
        client = self.client()
        try:
            for verb, line in [
                ("MAIL", f"MAIL FROM:{mailFrom}"),
                ("RCPT", f"RCPT TO:{rcptTo}"),
            ]:
                code, text = client.docmd(line)
                if code != 250:
                    return f"{verb} {code} {text.decode('ascii', 'replace')}"
            try:
                client.data(b"Subject: relay test\r\n\r\nrelayed\r\n")
            except smtplib.SMTPResponseException as e:
                return f"DATA {e.smtp_code} {e.smtp_error!r}"
            return ""
        finally:
            client.close()

    def assertNoneRelays(self, tries: list[tuple[str, str]]) -> None:
        """
        Each MAIL FROM and RCPT TO is refused with a 5xx, and the sink gets
        nothing.
        """
        answers = [(f, t, self.tryRelay(f, t)) for f, t in tries]
        relayed = [
            (f, t, a) for f, t, a in answers if not a.startswith(("MAIL 5", "RCPT 5"))
        ]
        self.assertEqual(relayed, [], "\n".join(f"{f} {t}: {a}" for f, t, a in answers))
        self.assertEqual(self.quiet(), [])


class TrustedClientTests(_ProxyTestCase):
    """
    The proxy as the company's mail server or an agent on a trusted network
    uses it: from 127.0.0.1, trusted by default.
    """

    options = ["--contactRetentionHours", str(RETENTION_HOURS)]

    def test_replyReachesCustomerWithoutAgent(self) -> None:
        """
        A reply to a contact address reaches the customer from the entrance's
        address, threaded under the customer's email, and shows neither the
        agent's address nor the colleague's anywhere; the colleague on Cc
        gets the agent's message unchanged.
        """
        contact = self.newContact()
        self.assertEqual(contact["address"], f"{contact['id']}@ace.test")
        sent = agentReply(contact["address"], "Re: My order")
        hidden = {"X-Agent-Note", "X-Agent-Folded", "DKIM-Signature", "From"}
        self.assertLessEqual(hidden, set(revealed(sent, AGENT)))
        client = self.client()
        refused = client.sendmail(
            AGENT, [contact["address"], COLLEAGUE], sent, ["BODY=8BITMIME"]
        )
        self.assertEqual(refused, {})

        [copy] = self.deliveriesTo(CUSTOMER_ADDRESS)
        [colleagues] = self.deliveriesTo(COLLEAGUE)
        self.assertEqual(len(self.quiet()), 2)
        self.assertEqual(copy.recipients, (CUSTOMER_ADDRESS,))
        self.assertEqual(copy.mailFrom, ENTRANCE_ADDRESS)
        entrance = [("Support", ENTRANCE_ADDRESS)]
        self.assertEqual(headerAddresses(copy.content, "From"), entrance)
        self.assertEqual(headerAddresses(copy.content, "Reply-To"), entrance)
        customer = [("Ann Customer", CUSTOMER_ADDRESS)]
        self.assertEqual(headerAddresses(copy.content, "To"), customer)
        self.assertEqual(headerAddresses(copy.content, "Cc"), [])
        self.assertIn(ORIGINAL_ID, header(copy.content, "In-Reply-To"))
        self.assertIn(ORIGINAL_ID, header(copy.content, "References"))
        self.assertEqual(header(copy.content, "Subject"), "Re: My order")
        self.assertEqual(split(copy.content)[1], split(sent)[1])
        self.assertEqual(revealed(copy.content, AGENT), [])
        self.assertEqual(revealed(copy.content, COLLEAGUE), [])

        self.assertEqual(colleagues.recipients, (COLLEAGUE,))
        self.assertEqual(colleagues.mailFrom, AGENT)
        self.assertEqual(withoutReceived(colleagues.content), withoutReceived(sent))

    def test_replyWithinRetentionThenRefused(self) -> None:
        """
        A reply to a contact ended just now is delivered; once the retention
        has passed, RCPT gets 550 5.1.1 and nothing more reaches the sink.
        """
        contact = self.newContact()
        self.assertEqual(self.aceMail.endContact(contact["id"])["state"], "ended")
        expiry = time.monotonic() + RETENTION_HOURS * 3600
        client = self.client()
        self.assertEqual(
            client.sendmail(
                AGENT, [contact["address"]], agentReply(contact["address"], "Re: ended")
            ),
            {},
        )
        client.quit()
        self.deliveriesTo(CUSTOMER_ADDRESS)

        time.sleep(max(0.0, expiry + 1.5 - time.monotonic()))
        late = self.client()
        self.assertEqual(late.mail(AGENT)[0], 250)
        code, text = late.rcpt(contact["address"])
        self.assertEqual((code, text[:5]), (550, b"5.1.1"), text)
        self.assertEqual(len(self.quiet()), 1)

    def test_aceAgentFlow(self) -> None:
        """
        What ACE Agent does with one contact, over the API and the proxy: make
        it, deliver it to the agent's mailbox, answer it from the agent's
        client, end it, answer again within the retention (delivered) and
        after it (refused at RCPT).
        """
        contact = self.newContact()
        status, queued = self.aceMail._request(
            "POST", f"/v1/contacts/{contact['id']}/deliver", {"agent": AGENT}
        )
        self.assertEqual(status, 202, queued)
        [physical] = self.deliveriesTo(AGENT)
        self.assertIn(f"<{contact['address']}>".encode(), physical.content)

        def reply(subject: str) -> None:
            client = self.client()
            message = agentReply(contact["address"], subject)
            self.assertEqual(client.sendmail(AGENT, [contact["address"]], message), {})
            client.quit()

        reply("Re: first answer")
        self.deliveriesTo(CUSTOMER_ADDRESS, 1)
        self.assertEqual(self.aceMail.endContact(contact["id"])["state"], "ended")
        expiry = time.monotonic() + RETENTION_HOURS * 3600
        reply("Re: second answer")
        copies = self.deliveriesTo(CUSTOMER_ADDRESS, 2)
        self.assertEqual({c.mailFrom for c in copies}, {ENTRANCE_ADDRESS})
        for copy in copies:
            self.assertNotIn(AGENT.encode(), copy.content.lower())

        time.sleep(max(0.0, expiry + 1.5 - time.monotonic()))
        late = self.client()
        self.assertEqual(late.mail(AGENT)[0], 250)
        code, text = late.rcpt(contact["address"])
        self.assertEqual((code, text[:5]), (550, b"5.1.1"), text)
        self.assertEqual(len(self.sentTo(CUSTOMER_ADDRESS)), 2)

    def test_unknownContactRefused(self) -> None:
        """
        A reply to a contact address that names no contact gets 550 5.1.1
        at RCPT, and nothing reaches the sink.
        """
        client = self.client()
        self.assertEqual(client.mail(AGENT)[0], 250)
        code, text = client.rcpt("abcdefghijklmnopqrst@ace.test")
        self.assertEqual((code, text[:5]), (550, b"5.1.1"), text)
        self.assertEqual(self.quiet(), [])

    def test_passThroughUnchanged(self) -> None:
        """
        Mail from a trusted client to an address that is not a contact
        address goes to the sink with its envelope as given and its headers
        (Received aside) and body byte for byte as sent.
        """
        lines = [
            f"From: Agent Smith <{AGENT}>",
            f"To: <{ELSEWHERE}>",
            "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= from the agents",
            "X-Whatever:  two  spaces,\ta tab,",
            "\tand a folded line",
            "",
            ".. two dots",
            ".",
            "x" * 990,
            "Ünïcode bödy",
            "",
            "last line",
        ]
        sent = ("\r\n".join(lines) + "\r\n").encode("utf-8")
        client = self.client()
        self.assertEqual(
            client.sendmail(AGENT, [ELSEWHERE], sent, ["BODY=8BITMIME"]), {}
        )

        [delivery] = self.deliveriesTo(ELSEWHERE)
        self.assertEqual(
            (delivery.mailFrom, delivery.recipients), (AGENT, (ELSEWHERE,))
        )
        self.assertEqual(withoutReceived(delivery.content), withoutReceived(sent))
        self.assertEqual(len(self.quiet()), 1)

    def test_smugglingBattery(self) -> None:
        """
        None of the lax end-of-data sequences inside DATA, followed by the
        commands of a second message and the real end, gets that second
        message to the sink; what does reach it has no bare CR or LF.
        """
        answers = []
        for number, sequence in enumerate(SMUGGLING):
            client = RawClient(self.aceMail.proxyPort)
            self.addCleanup(client.close)
            replies = [client.reply(), client.command(b"EHLO agentpc.agents.example")]
            replies.append(client.command(f"MAIL FROM:<{AGENT}>".encode()))
            replies.append(client.command(f"RCPT TO:<{ELSEWHERE}>".encode()))
            replies.append(client.command(b"DATA"))
            first = f"Subject: first {number}\r\n\r\nfirst message".encode()
            second = (
                b"MAIL FROM:<smuggler@evil.example>\r\n"
                b"RCPT TO:<victim@victim.example>\r\nDATA\r\n"
                b"Subject: smuggled\r\nX-Smuggled: yes\r\n\r\nsmuggled"
            )
            client.send(first + sequence + second + b"\r\n.\r\n")
            replies.append(client.reply())
            replies.append(client.command(b"QUIT"))
            answers.append((sequence, replies))
            if replies[-2].startswith(b"250"):
                self.deliveriesTo(ELSEWHERE, len(self.sentTo(ELSEWHERE)) + 1)

        report = "\n".join(f"{s!r}: {r!r}" for s, r in answers)
        deliveries = self.quiet()
        for delivery in deliveries:
            self.assertEqual(delivery.recipients, (ELSEWHERE,), report)
            self.assertTrue(delivery.content.startswith(b"Subject: first "), report)
            self.assertFalse(bareNewlines(delivery.content), delivery.content)
        for _, replies in answers:
            self.assertEqual(len(replies), 7, report)
            self.assertTrue(replies[-2][:1] in (b"2", b"5"), report)
            self.assertTrue(replies[-1].startswith(b"221"), report)

    def test_openRelayFormsInsideContactAddress(self) -> None:
        """
        Every form of nmap's smtp-open-relay script, hidden in the local
        part of a contact address, and each of its routing forms built
        around a real contact id and the reroute name, is refused at RCPT,
        even from a trusted client; nothing reaches the sink.
        """
        contactId = self.newContact()["id"]
        names = {"server": "ace.test", "ip": LOOPBACK, "domain": "nmap.scanme.org"}
        tries = []
        for mailFrom, rcptTo in OPEN_RELAY:
            form = rcptTo.format(user="relaytest", **names)[1:-1]
            quoted = form.replace("\\", "\\\\").replace('"', '\\"')
            tries.append((mailFrom.format(**names), f'<"{quoted}"@ace.test>'))
            around = rcptTo.format(user=contactId, **names)
            if around != f"<{contactId}@nmap.scanme.org>":
                tries.append((mailFrom.format(**names), around))
        self.assertEqual(len(tries), 28)
        self.assertNoneRelays(tries)


def serverCertificate(folder: str) -> tuple[str, str]:
    """
    The test certificate and key for 127.0.0.1: those in C{tests/certs},
    or, when they are missing, a self-signed pair made with openssl in
    C{folder}.
    """
    certificate = os.path.join(CERTS, "server.pem")
    key = os.path.join(CERTS, "server.key")
    if os.path.exists(certificate) and os.path.exists(key):
        return certificate, key
    certificate = os.path.join(folder, "server.pem")
    key = os.path.join(folder, "server.key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        + ["-keyout", key, "-out", certificate, "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return certificate, key


class UntrustedClientTests(_ProxyTestCase):
    """
    The proxy as an agent's mail client out on the internet uses it: only
    192.0.2.0/24 is trusted, so 127.0.0.1 is not, and it must log in over
    STARTTLS to send anything.
    """

    options = ["--smtpProxyTrustedNetworks", "192.0.2.0/24"]
    user = "agent1"
    password = "correct horse battery staple"

    def moreOptions(self) -> list[str]:
        certificate, key = serverCertificate(self.base)
        credentials = os.path.join(self.base, "credentials")
        hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(4))
        with open(credentials, "w", encoding="ascii") as f:
            f.write(f"{self.user}:{hashed.decode('ascii')}\n")
        return [
            "--smtpProxyTlsCertificate",
            certificate,
            "--smtpProxyTlsKey",
            key,
            "--smtpProxyCredentials",
            credentials,
        ]

    def test_untrustedClientRefused(self) -> None:
        """
        A client that is neither trusted nor logged in gets a 5xx with a
        reason at RCPT for an external address and for a contact address,
        is not offered AUTH before TLS, and nothing reaches the sink.
        """
        contact = self.newContact()
        client = self.client()
        self.assertTrue(client.has_extn("starttls"))
        self.assertFalse(client.has_extn("auth"))
        self.assertEqual(client.mail(AGENT)[0], 250)
        for address in (ELSEWHERE, contact["address"]):
            code, text = client.rcpt(address)
            self.assertEqual(code // 100, 5, text)
            self.assertGreater(len(text), 10)
        self.assertNotEqual(client.docmd("DATA")[0], 354)
        self.assertEqual(self.quiet(), [])

    def test_authenticatedClientOverStartTls(self) -> None:
        """
        A client that logs in with AUTH PLAIN after STARTTLS (swaks, as an
        agent's mail client would) may reply to a contact, and the customer
        gets the rewritten reply.
        """
        swaks = shutil.which("swaks")
        if swaks is None:
            raise SkipTest("swaks is not installed; .ci/run installs it")
        contact = self.newContact()
        reply = agentReply(contact["address"], "Re: My order")
        command = [swaks, "--server", f"{LOOPBACK}:{self.aceMail.proxyPort}"]
        command += ["--tls", "--auth", "PLAIN", "--auth-user", self.user]
        command += ["--auth-password", self.password, "--timeout", "30"]
        command += ["--helo", "agentpc.agents.example", "--from", AGENT]
        command += ["--to", contact["address"], "--data", "-"]
        done = subprocess.run(command, input=reply, capture_output=True, timeout=60)
        transcript = (done.stdout + done.stderr).decode("utf-8", "replace")
        self.assertEqual(done.returncode, 0, transcript)
        self.assertIn("235 2.7.0", transcript)

        [copy] = self.deliveriesTo(CUSTOMER_ADDRESS)
        self.assertEqual(copy.mailFrom, ENTRANCE_ADDRESS)
        entrance = [("Support", ENTRANCE_ADDRESS)]
        self.assertEqual(headerAddresses(copy.content, "From"), entrance)
        self.assertEqual(revealed(copy.content, AGENT), [])
        self.assertEqual(revealed(copy.content, self.user), [])
        self.assertEqual(len(self.quiet()), 1)

    def test_openRelayFormsFromUntrustedClient(self) -> None:
        """
        None of the 16 MAIL FROM and RCPT TO pairs of nmap's smtp-open-relay
        script relays from an untrusted client: each is refused with a 5xx
        and nothing reaches the sink.
        """
        names = {"server": "ace.test", "ip": LOOPBACK, "domain": "nmap.scanme.org"}
        tries = [
            (mailFrom.format(**names), rcptTo.format(user="relaytest", **names))
            for mailFrom, rcptTo in OPEN_RELAY
        ]
        self.assertEqual(len(set(tries)), 16)
        self.assertNoneRelays(tries)
