"""
Fuzzing with hypothesis, in process: SMTP command sequences against the
proxy's protocol, random MIME messages through the reply rewrite, and random
POP3 responses against the POP3 client.

The deterministic profile C{ace-mail} of L{tests} runs by default; set
C{ACE_RELIABILITY_PROFILE=long} for many more examples.
"""

from __future__ import annotations

import email.policy
import os
import re
from email.header import decode_header, make_header
from email.parser import BytesParser
from typing import Any, Iterator

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.task import Clock
from twisted.logger import LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from ace_mail.accounts import AccountPoller
from ace_mail.proxy._session import HARD_LINE_LIMIT
from ace_mail.rewrite import RewriteError, headerLeaks, rewriteReply
from tests.pop3fakes import (
    FakeIntake,
    MemoryMailbox,
    MemoryNetwork,
    ServerScript,
    makeAccount,
)
from tests.proxyfakes import (
    ENDED_ID,
    ENTRANCE,
    HOST,
    OPEN_ID,
    REPLY,
    UNKNOWN_ID,
    Client,
    contact,
    makeFactory,
)
from tests.reliability._figures import SKIP, record
from tests.strategies import agentAddresses, chunked, hidingHeaderLines, messageBytes

LONG = os.environ.get("ACE_RELIABILITY_PROFILE") == "long"
EXAMPLES = {"proxy": 1000, "rewrite": 600, "pop3": 600}
if LONG:
    EXAMPLES = {name: count * 25 for name, count in EXAMPLES.items()}
COMMAND = "ACE_RELIABILITY=1 python -m twisted.trial tests.reliability.test_fuzz"
_REPLY_LINE = re.compile(rb"^([2-5][0-9][0-9])([ -])([\x20-\x7e]*)$")
_LOCAL_PART = re.escape("abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+/=?^_`{|}~.-")


class _FuzzTestCase(SynchronousTestCase):
    """
    Counts the examples run and watches the log for failures.
    """

    skip = SKIP
    target = ""

    def setUp(self) -> None:
        self.examples = 0
        self.failures: list[LogEvent] = []
        globalLogPublisher.addObserver(self.observe)
        self.addCleanup(globalLogPublisher.removeObserver, self.observe)

    def observe(self, event: LogEvent) -> None:
        if "log_failure" in event:
            self.failures.append(event)

    def tearDown(self) -> None:
        record("Fuzzing", f"examples run: {self.target}", self.examples, COMMAND)

    def assertNothingLogged(self) -> None:
        failures, self.failures = self.failures, []
        self.assertEqual([e["log_failure"].getTraceback() for e in failures], [])


COMMANDS = [
    b"EHLO c.example",
    b"HELO c.example",
    b"EHLO",
    b"MAIL FROM:<agent@agents.example.org>",
    b"MAIL FROM:<> BODY=8BITMIME SIZE=100",
    b"MAIL FROM:<a@b.example> SIZE=99999999999",
    b"MAIL FROM:<a@b.example> SMTPUTF8",
    b"RCPT TO:<" + OPEN_ID.encode() + b"@" + HOST.encode() + b">",
    b"RCPT TO:<" + ENDED_ID.encode() + b"@" + HOST.encode() + b">",
    b"RCPT TO:<" + UNKNOWN_ID.encode() + b"@" + HOST.encode() + b">",
    b'RCPT TO:<"x@y.example"@' + HOST.encode() + b">",
    b"RCPT TO:<colleague@agents.example.org>",
    b"RCPT TO:<@relay.example:victim@victim.example>",
    b"DATA",
    REPLY + b".",
    b"RSET",
    b"NOOP",
    b"VRFY someone",
    b"HELP",
    b"STARTTLS",
    b"AUTH PLAIN AGFsaWNlAHMzY3JldA==",
    b"AUTH PLAIN AGFsaWNlAHdyb25n",
    b"AUTH LOGIN",
    b"YWxpY2U=",
    b"*",
    b"=",
    b".",
    b"QUIT",
]


@st.composite
def sessions(draw: st.DrawFn) -> list[tuple[bytes, float]]:
    """
    @return: The input of one SMTP session, cut into reads, each with the
        seconds to let pass after it.
    """
    line = st.one_of(
        st.sampled_from(COMMANDS),
        messageBytes(),
        st.binary(max_size=80),
        st.sampled_from([510, 511, 600, 13000, 70000]).map(
            lambda n: b"NOOP " + b"x" * n
        ),
    )
    ending = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b""])
    lines = draw(st.lists(st.tuples(line, ending), max_size=30))
    reads = draw(chunked(st.just(b"".join(a + b for a, b in lines))))
    waits = st.sampled_from([0.0, 0.0, 0.0, 1.0, 301.0, 601.0])
    return [(read, draw(waits)) for read in reads]


def replyLines(output: bytes) -> Iterator[tuple[bytes, bytes, bytes]]:
    """
    @return: The code, separator and text of each line written.
    @raise AssertionError: When the output does not end with CRLF or a line
        is not a reply line.
    """
    assert output.endswith(b"\r\n") or not output, output[-200:]
    for line in output.split(b"\r\n")[:-1]:
        found = _REPLY_LINE.match(line)
        assert found is not None and len(line) <= 510, line
        yield found.group(1), found.group(2), found.group(3)


class ProxyFuzzTests(_FuzzTestCase):
    """
    Random SMTP sessions against the proxy's protocol over a string
    transport.
    """

    target = "SMTP sessions against the proxy"

    @settings(max_examples=EXAMPLES["proxy"])
    @given(sessions(), st.booleans())
    def test_sessions(self, reads: list[tuple[bytes, float]], trusted: bool) -> None:
        """
        Whatever a client sends, the proxy raises and logs no failure, keeps
        at most one overlong line of input, and writes only well-formed
        replies: three digits, a space or hyphen, printable text, CRLF, and
        one code through each multi-line reply.
        """
        self.examples += 1
        factory = makeFactory(
            tlsContext=object(),
            checker=InMemoryUsernamePasswordDatabaseDontUse(alice=b"s3cret"),
            maxRecipients=5,
            maxMessageSize=5000,
        )
        client = Client(factory, host="127.0.0.1" if trusted else "198.51.100.7")
        output = client.transport.value()
        for read, wait in reads:
            client.protocol.dataReceived(read)
            factory.clock.advance(wait)
            # The session's own buffer: what it holds of unhandled input.
            held = len(client.protocol._buffer)
            self.assertTrue(client.protocol.closing or held <= HARD_LINE_LIMIT, held)
            reader = client.protocol._reader
            self.assertLessEqual(len(reader._partial) if reader else 0, 1000)
        output = client.transport.value()
        code = None
        for number, separator, _ in replyLines(output):
            self.assertIn(code, (None, number))
            code = number if separator == b"-" else None
        self.assertIsNone(code)
        self.assertNothingLogged()


@st.composite
def mimeMessages(draw: st.DrawFn) -> tuple[bytes, bytes, str]:
    """
    @return: An agent's reply as a random MIME message, its body, and the
        agent's address, hidden in its headers in many forms.
    """
    agent = draw(agentAddresses())
    boundary = draw(st.sampled_from(["b1", "==x==", agent, f"=_{agent}", "a'b c"]))
    # A lone surrogate cannot be encoded in a message at all: leave it out.
    text = st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
        max_size=40,
    )
    headers = [f"From: {draw(text)!r} <{agent}>\r\n"]
    headers += draw(hidingHeaderLines(agent))
    headers.append(f"Subject: {draw(text)}\r\n")
    headers.append(f"X-Random: {draw(text)}\r\n")
    kind = draw(st.sampled_from(["plain", "multipart", "broken"]))
    if kind == "plain":
        headers.append('Content-Type: text/plain; charset="utf-8"\r\n')
        body = draw(messageBytes())
    else:
        headers.append(f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n')
        parts = draw(st.lists(messageBytes(), max_size=4))
        body = b"".join(
            b"--"
            + boundary.encode()
            + b"\r\nContent-Type: "
            + draw(
                st.sampled_from([b"text/plain", b"text/html; charset=x", b"image/png"])
            )
            + b"\r\n\r\n"
            + part
            + b"\r\n"
            for part in parts
        )
        if kind == "multipart":
            body += b"--" + boundary.encode() + b"--\r\n"
    headers.append(draw(st.sampled_from(["MIME-Version: 1.0\r\n", ""])))
    order = draw(st.permutations(headers))
    head = "".join(order).encode("utf-8")
    return head + b"\r\n" + body, body, agent


def shownIn(head: bytes, agent: str) -> list[str]:
    """
    @return: Where the header block C{head} shows C{agent} as an address (not
        as the end of a longer local part, as L{headerLeaks} reads it): in
        its raw bytes, or in a header once unfolded, decoded or parsed.
    """
    pattern = re.compile(rf"(?<![{_LOCAL_PART}]){re.escape(agent)}", re.IGNORECASE)
    raw = head.decode("utf-8", "replace")
    places = ["raw bytes"] if pattern.search(raw) else []
    message = BytesParser(policy=email.policy.default).parsebytes(head)
    for name, value in message.raw_items():
        unfolded = re.sub(r"\r?\n[ \t]", " ", str(value))
        decoded = str(make_header(decode_header(unfolded)))
        parsed = str(message.get(name, ""))
        if any(pattern.search(text) for text in (unfolded, decoded, parsed)):
            places.append(name)
    return places


class RewriteFuzzTests(_FuzzTestCase):
    """
    Random MIME messages through L{rewriteReply}.
    """

    target = "MIME messages through the rewrite"

    @settings(max_examples=EXAMPLES["rewrite"])
    @given(mimeMessages())
    def test_rewrite(self, drawn: tuple[bytes, bytes, str]) -> None:
        """
        Each message is either refused with L{RewriteError} or rewritten
        into a copy whose headers parse and show the agent's address in no
        form (by L{headerLeaks} and once decoded), over the same body.
        """
        self.examples += 1
        message, body, agent = drawn
        try:
            copy = rewriteReply(message, contact(OPEN_ID), ENTRANCE, hide=[agent])
        except RewriteError:
            return
        head, _, copiedBody = copy.partition(b"\r\n\r\n")
        self.assertEqual(copiedBody, body)
        self.assertFalse(headerLeaks(copy, agent))
        self.assertEqual(shownIn(head + b"\r\n\r\n", agent), [])


@st.composite
def pop3Scripts(draw: st.DrawFn) -> ServerScript:
    """
    @return: A script for the fake POP3 server: a random greeting and
        random answers to some commands.
    """
    pieces = st.sampled_from(
        [
            b"+OK",
            b"-ERR",
            b" ",
            b"\r\n",
            b".",
            b"\r\n.\r\n",
            b"\n",
            b"1",
            b"2",
            b"999999999999",
            b"-1",
            b"uid-1",
            b"..",
            b"/",
            b"\0",
            b"<a@b>",
            b"x" * 9000,
        ]
    )
    response = st.lists(st.one_of(pieces, st.binary(max_size=20)), max_size=12)
    verbs = st.sampled_from(
        [
            b"CAPA",
            b"USER",
            b"PASS",
            b"APOP",
            b"STAT",
            b"UIDL",
            b"LIST",
            b"RETR",
            b"DELE",
            b"QUIT",
        ]
    )
    raw = draw(st.dictionaries(verbs, response.map(b"".join), max_size=4))
    greeting = draw(st.one_of(st.none(), response.map(b"".join)))
    return ServerScript(greeting=greeting, raw=raw)


class POP3FuzzTests(_FuzzTestCase):
    """
    Random POP3 responses against the POP3 client.
    """

    target = "POP3 responses against the POP3 client"

    @settings(max_examples=EXAMPLES["pop3"])
    @given(pop3Scripts(), st.booleans())
    def test_poll(self, script: ServerScript, apop: bool) -> None:
        """
        Whatever the server answers, the poll ends within the account's
        timeout or two, with C{"ok"} or a sentence, never an internal
        error, and nothing is logged as a failure.
        """
        self.examples += 1
        clock = Clock()
        events: list[Any] = []
        mailbox = MemoryMailbox([("uid-1", b"Subject: one\n\nfirst\n")], events)
        network = MemoryNetwork(clock, mailbox, script)
        intake = FakeIntake(self.mktemp(), events)
        account = makeAccount(apop=apop)
        poller = AccountPoller(
            clock, account, intake, endpointFactory=network.endpointFor
        )
        done = poller.pollNow()
        for _ in range(3):
            network.flush()
            clock.advance(account.timeout)
        network.flush()
        self.successResultOf(done)
        status = poller.status()
        self.assertFalse(status.polling)
        self.assertNotIn("internal error", status.lastResult or "")
        self.assertTrue(status.lastResult)
        self.assertNothingLogged()
