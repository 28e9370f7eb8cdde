"""
Hostile servers against a real C{twistd -n ace-mail}: a malicious POP3
server for its accounts and a malicious SMTP server for its sender, both
written here with asyncio on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import ssl
import threading
import time
from typing import Any, Awaitable, Callable

from attrs import field, frozen
from twisted.trial.unittest import SynchronousTestCase

from tests.e2e._harness import LOOPBACK, AceMail, Sink, freePort, received, waitFor
from tests.e2e._pop3harness import CERTS, AccountAceMail
from tests.reliability._figures import SKIP, record

COMMAND = (
    "ACE_RELIABILITY=1 python -m twisted.trial tests.reliability.test_hostile_servers"
)
SILENT = b""
MESSAGE = b"From: c@customer.example\r\nSubject: hi\r\n\r\nhello\r\n.\r\n"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class LoopThread:
    """
    An asyncio loop in a thread of its own, serving on 127.0.0.1.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: list[asyncio.Server] = []

    def serve(self, port: int, handler: Handler) -> None:
        start = asyncio.start_server(handler, LOOPBACK, port, reuse_address=True)
        server = asyncio.run_coroutine_threadsafe(start, self.loop).result(10)
        self.servers.append(server)

    def stop(self) -> None:
        """
        Close every server and its connections, then end the loop; once
        ended, do nothing.
        """
        if not self.thread.is_alive():
            return

        async def close() -> None:
            for server in self.servers:
                server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def residentMegabytes(pid: int) -> float:
    """
    @return: The resident set size of process C{pid}, in MB.
    """
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        line = next(line for line in f if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@frozen
class POP3Case:
    """
    How the malicious POP3 server departs from a good one for one account.

    @ivar expected: What the account's last result must contain.
    @ivar greeting: Sent instead of the usual greeting.
    @ivar answers: For a verb, the bytes sent instead of its answer
        (L{SILENT}: none at all).
    @ivar account: More TOML lines for the account.
    """

    expected: str
    greeting: bytes = b"+OK hostile POP3 ready <1.2@pop.test>\r\n"
    answers: dict[bytes, bytes] = field(factory=dict)
    account: tuple[str, ...] = ()


def uidl(line: bytes) -> dict[bytes, bytes]:
    return {b"UIDL": b"+OK\r\n" + line + b"\r\n.\r\n"}


POP3_CASES = {
    "uidl-index-999999999999": POP3Case(
        "listed '999999999999 abc' in UIDL", answers=uidl(b"999999999999 abc")
    ),
    "uidl-index-0": POP3Case("listed '0 abc' in UIDL", answers=uidl(b"0 abc")),
    "uidl-index-negative": POP3Case("listed '-1 abc' in UIDL", answers=uidl(b"-1 abc")),
    "uid-with-spaces": POP3Case("unique-id 'a b c'", answers=uidl(b"1 a b c")),
    "uid-with-nul": POP3Case("unique-id 'a?b'", answers=uidl(b"1 a\0b")),
    "uid-with-slash": POP3Case("unique-id '../x/y'", answers=uidl(b"1 ../x/y")),
    "uid-with-dotdot": POP3Case("unique-id 'a..b'", answers=uidl(b"1 a..b")),
    "uid-of-71-chars": POP3Case("unique-id 'uuuu", answers=uidl(b"1 " + b"u" * 71)),
    "listing-without-end": POP3Case(
        "did not answer UIDL within 3 seconds", answers={b"UIDL": b"+OK\r\n1 a\r\n"}
    ),
    "listing-ended-by-lf-dot-lf": POP3Case(
        "did not answer UIDL within 3 seconds", answers={b"UIDL": b"+OK\n1 a\n.\n"}
    ),
    "10-mb-single-line": POP3Case(
        "sent a line longer than 8192 bytes", greeting=b"+OK " + b"x" * 10_000_000
    ),
    "silence-after-greeting": POP3Case(
        "did not answer CAPA within 3 seconds", answers={b"CAPA": SILENT}
    ),
    "huge-apop-banner": POP3Case(
        "sent a line longer than 8192 bytes",
        greeting=b"+OK <" + b"a" * 1_000_000 + b"@pop.test>\r\n",
        account=("apop = true",),
    ),
    "apop-challenge-of-5000-chars": POP3Case(
        "offers no APOP challenge",
        greeting=b"+OK <" + b"a" * 5000 + b"@pop.test>\r\n",
        account=("apop = true",),
    ),
    "lines-injected-after-stls": POP3Case(
        "ok",
        answers={
            b"STLS": b"+OK go\r\n+OK 1 10\r\n-ERR injected\r\n.\r\n",
            b"STAT": b"+OK 0 0\r\n",
            b"UIDL": b"+OK\r\n.\r\n",
            b"LIST": b"+OK\r\n.\r\n",
        },
        account=('tls = "starttls"', f'caFile = "{os.path.join(CERTS, "ca.pem")}"'),
    ),
}


class MaliciousPOP3:
    """
    A POP3 server that follows one L{POP3Case} on each of its ports, with
    one message whose unique-id is C{abc}, and remembers the commands it got
    over TLS.
    """

    def __init__(self, case: POP3Case) -> None:
        self.case = case
        self.overTls: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: Any) -> None:
        tls = False
        answers = {
            b"CAPA": b"+OK\r\nUSER\r\nUIDL\r\nSTLS\r\n.\r\n",
            b"STAT": b"+OK 1 %d\r\n" % len(MESSAGE),
            b"UIDL": b"+OK\r\n1 abc\r\n.\r\n",
            b"LIST": b"+OK\r\n1 %d\r\n.\r\n" % len(MESSAGE),
            b"RETR": b"+OK\r\n" + MESSAGE,
        }
        answers.update(self.case.answers)
        try:
            writer.write(self.case.greeting)
            await writer.drain()
            while line := await reader.readline():
                verb = line.split(b" ")[0].strip().upper()
                if tls:
                    self.overTls.append(verb)
                writer.write(answers.get(verb, b"+OK\r\n"))
                await writer.drain()
                if verb == b"STLS":
                    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                    pem = os.path.join(CERTS, "server.pem")
                    context.load_cert_chain(pem, os.path.join(CERTS, "server.key"))
                    await writer.start_tls(context)
                    tls = True
                if verb == b"QUIT":
                    break
        except (OSError, ssl.SSLError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


def accountsConfig(ports: dict[str, int]) -> str:
    """
    @return: A config file with one entrance whose accounts are the POP3
        cases, each on its own port.
    """
    lines = ["[[entrance]]", 'name = "acme"', 'address = "Support <s@acme.test>"']
    for name, port in ports.items():
        case = POP3_CASES[name]
        lines += ["[[entrance.account]]", f'name = "{name}"', f'host = "{LOOPBACK}"']
        lines += [f"port = {port}", 'username = "u"', 'password = "p"']
        lines += ['pollInterval = "1s"', 'timeout = "3s"', *case.account]
        if not any(line.startswith("tls") for line in case.account):
            lines += ['tls = "none"', "allowPlaintext = true"]
    return "\n".join(lines) + "\n"


class HostilePOP3ServerTests(SynchronousTestCase):
    """
    One ace-mail polling one account on each malicious POP3 server.
    """

    skip = SKIP

    def test_eachPollFailsCleanly(self) -> None:
        """
        Every hostile answer ends its poll within the account's timeout with
        a sentence in C{GET /v1/accounts} (the injected lines are ignored
        and that poll succeeds); ace-mail logs no traceback, stays small and
        makes no contact.
        """
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        loop = LoopThread()
        self.addCleanup(loop.stop)
        servers = {name: MaliciousPOP3(case) for name, case in POP3_CASES.items()}
        ports = {name: freePort() for name in POP3_CASES}
        for name, server in servers.items():
            loop.serve(ports[name], server.handle)
        config = os.path.join(base, "ace-mail.toml")
        with open(config, "w", encoding="utf-8") as f:
            f.write(accountsConfig(ports))
        sink = Sink(freePort(), os.path.join(base, "sink"))
        self.addCleanup(sink.kill)
        sink.start()
        log = os.path.join(base, "ace-mail.log")
        aceMail = AccountAceMail(os.path.join(base, "data"), sink.port, log, config)
        self.addCleanup(aceMail.kill)
        aceMail.start()

        started = time.monotonic()
        waitFor(
            "every account to have a result",
            lambda: all(a["lastResult"] for a in aceMail.accounts().values()),
            30,
        )
        seconds = time.monotonic() - started
        accounts = aceMail.accounts()
        assert aceMail.process is not None
        rss = residentMegabytes(aceMail.process.pid)
        for name, case in POP3_CASES.items():
            result = accounts[name]["lastResult"]
            self.assertIn(case.expected, result, name)
            ok = case.expected == "ok"
            self.assertEqual(accounts[name]["errors"] == 0, ok, accounts[name])
            record("Hostile servers", f"POP3: {name}", result[:160], COMMAND)
        self.assertIn(b"CAPA", servers["lines-injected-after-stls"].overTls)
        self.assertEqual(aceMail.contacts(), [])
        self.assertIsNone(aceMail.process.poll())
        self.assertLess(rss, 400)
        with open(log, encoding="utf-8", errors="replace") as f:
            self.assertNotIn("Traceback", f.read())
        record(
            "Hostile servers",
            "POP3: every case",
            f"{len(POP3_CASES)} cases ended in {seconds:.1f} s; 0 contacts; "
            f"ace-mail RSS {rss:.0f} MB; no traceback",
            COMMAND,
        )


def endless(line: bytes) -> Callable[[int], bytes]:
    return lambda n: line * 1000


SMTP_CASES: dict[str, tuple[bytes, Callable[[int], bytes] | None]] = {
    "10 MB reply line": (b"220 " + b"x" * 10_000_000 + b"\r\n", None),
    "multi-line reply without end": (b"220-ready\r\n220-still\r\n", None),
    "garbage": (
        b"\r\n".join(random.Random(7).randbytes(50) for _ in range(4000)),
        None,
    ),
    "replies before commands": (
        b"220 hi\r\n250 hello\r\n250 ok\r\n250 ok\r\n354 go\r\n250 queued\r\n",
        None,
    ),
    "endless stream of continuation lines": (
        b"",
        endless(b"220-" + b"y" * 70 + b"\r\n"),
    ),
}


class MaliciousSMTP:
    """
    An SMTP server that sends the bytes of its current case at connect,
    then, for an endless case, more for as long as the client reads.
    """

    case = "garbage"

    async def handle(self, reader: asyncio.StreamReader, writer: Any) -> None:
        first, more = SMTP_CASES[self.case]
        try:
            writer.write(first)
            await writer.drain()
            for n in range(10_000_000):
                if more is None:
                    await reader.read(65536)
                    break
                writer.write(more(n))
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


class TimedAceMail(AceMail):
    """
    ace-mail with timeouts of 10 s for its sender's replies.
    """

    def commandLine(self) -> list[str]:
        names = ["Helo", "Mail", "Rcpt", "DataInit", "DataDone"]
        options = [[f"--smtp{name}Timeout", "10"] for name in names]
        return super().commandLine() + sum(options, [])


class HostileSMTPServerTests(SynchronousTestCase):
    """
    ace-mail's sender against a malicious SMTP server, then a real one.
    """

    skip = SKIP

    def test_deferredNotLostAndSmall(self) -> None:
        """
        For each hostile server, a message sent through the API is deferred
        with a reason; ace-mail stays up and its RSS bounded; once a real
        server takes the port, every message arrives exactly once.
        """
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        port = freePort()
        loop = LoopThread()
        self.addCleanup(loop.stop)
        server = MaliciousSMTP()
        loop.serve(port, server.handle)
        log = os.path.join(base, "ace-mail.log")
        aceMail = TimedAceMail(os.path.join(base, "data"), port, port, log)
        self.addCleanup(aceMail.kill)
        aceMail.start()
        assert aceMail.process is not None
        pid = aceMail.process.pid
        startRss = residentMegabytes(pid)

        for number, case in enumerate(SMTP_CASES):
            server.case = case
            queueId = aceMail.submit(f"hostile-{number}")
            peak = startRss
            deadline = time.monotonic() + 30
            entry: dict[str, Any] = {}
            while time.monotonic() < deadline:
                peak = max(peak, residentMegabytes(pid))
                entry = {e["queueId"]: e for e in aceMail.queue()}[queueId]
                if entry["attempts"] >= 1 and entry["lastError"]:
                    break
                time.sleep(0.2)
            self.assertTrue(entry["lastError"], (case, entry))
            self.assertIsNone(aceMail.process.poll(), aceMail.logTail())
            self.assertLess(peak - startRss, 100, case)
            record(
                "Hostile servers",
                f"SMTP: {case}",
                f"deferred after {entry['attempts']} attempts "
                f"({re.sub(r'[^ -~]', '?', entry['lastError'])[:100]}); peak RSS {peak:.0f} MB "
                f"(start {startRss:.0f} MB)",
                COMMAND,
            )

        loop.stop()
        sink = Sink(port, os.path.join(base, "sink"))
        self.addCleanup(sink.kill)
        sink.start()
        waitFor("the queue to empty", lambda: not aceMail.queue(), 60)
        copies = received([sink])
        self.assertEqual(copies, {f"hostile-{n}": 1 for n in range(len(SMTP_CASES))})
        with open(log, encoding="utf-8", errors="replace") as f:
            self.assertNotIn("Traceback", f.read())
        record(
            "Hostile servers",
            "SMTP: after the hostile servers",
            f"{len(copies)} messages deferred, then each delivered once; lost: 0",
            COMMAND,
        )
