"""
Disk faults: a real C{twistd -n ace-mail} whose data directory is a small
tmpfs that the test fills to the last byte, then frees.

While the disk is full every submission must be refused (503 from the API,
451 or 452 from the SMTP proxy), never acknowledged; once there is room,
new submissions are accepted and everything accepted before, during and
after is delivered, and nothing refused is.
"""

from __future__ import annotations

import errno
import os
import smtplib
import subprocess
import time
import uuid
from collections import Counter

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.e2e._harness import (
    LOOPBACK,
    ProxyAceMail,
    Sink,
    freePort,
    settled,
    waitFor,
)
from tests.reliability import _figures
from tests.reliability.faultproxy import arrivals

SECTION = "Disk faults"
TMPFS_SIZE = "8m"
EACH = 5


def bigMessage(testId: str) -> str:
    """
    A test message of about 20 KB, more than a memory page, so that it never
    fits in what is left of the last page of a spool file on a full tmpfs.
    """
    head = [
        "From: agent@example.com",
        "To: customer@example.net",
        f"Subject: disk fault {testId}",
        f"Message-ID: <{testId}@ace-mail.test>",
        f"X-Test-Id: {testId}",
    ]
    body = [f"line {n} " + "y" * 70 for n in range(260)]
    return "\r\n".join(head + [""] + body) + "\r\n"


def fill(directory: str) -> int:
    """
    Write a file in C{directory} until the file system has no room left.

    @return: How many bytes it took.
    """
    written = 0
    with open(os.path.join(directory, "filler"), "wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):
            while True:
                try:
                    written += f.write(b"\0" * size)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    return written


class DiskFullTests(SynchronousTestCase):
    """
    ace-mail on a data directory that runs out of room.
    """

    skip = _figures.SKIP

    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        self.dataDir = os.path.join(base, "data")
        os.makedirs(self.dataDir)
        self.mount()
        self.sink = Sink(freePort(), os.path.join(base, "sink"))
        self.addCleanup(self.sink.kill)
        self.aceMail = ProxyAceMail(
            self.dataDir, self.sink.port, os.path.join(base, "ace-mail.log")
        )
        self.addCleanup(self.aceMail.kill)
        self.prefix = uuid.uuid4().hex[:8]
        self.sent = 0

    def mount(self) -> None:
        """
        Mount a tmpfs of L{TMPFS_SIZE} on the data directory, or skip.
        """
        if os.geteuid() != 0:
            raise SkipTest(
                "the full-disk case mounts a small tmpfs, which needs root; "
                "run the suite as root (in a container) to include it"
            )
        command = ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}"]
        try:
            done = subprocess.run(
                command + ["tmpfs", self.dataDir], capture_output=True, timeout=10
            )
        except OSError as e:
            raise SkipTest(f"cannot run mount(8) for the full-disk case: {e}") from None
        if done.returncode != 0:
            raise SkipTest(
                f"cannot mount a tmpfs on {self.dataDir} for the full-disk case: "
                + done.stderr.decode("utf-8", "replace").strip()
            )
        self.addCleanup(subprocess.run, ["umount", "-l", self.dataDir], timeout=10)

    def nextId(self) -> str:
        """
        @return: A new test id.
        """
        self.sent += 1
        return f"{self.prefix}-{self.sent}"

    def viaApi(self, testId: str) -> int:
        """
        Submit one message through C{POST /v1/outgoing}.

        @return: The status of the answer.
        """
        body = {
            "from": "agent@example.com",
            "to": ["customer@example.net"],
            "message": bigMessage(testId),
        }
        status, _ = self.aceMail._request("POST", "/v1/outgoing", body)
        return status

    def viaProxy(self, testId: str) -> int:
        """
        Send one message through the SMTP proxy, passed through to a
        recipient that is not a contact.

        @return: The first reply that is not positive, or the final one.
        """
        with smtplib.SMTP(LOOPBACK, self.aceMail.proxyPort, timeout=30) as client:
            client.ehlo("agent.test")
            for code, _ in (
                client.mail("agent@example.com"),
                client.rcpt("customer@example.net"),
            ):
                if code != 250:
                    return code
            client.putcmd("data")
            code, _ = client.getreply()
            if code != 354:
                return code
            client.send(bigMessage(testId).encode("ascii") + b".\r\n")
            code, _ = client.getreply()
            return code

    def submit(self) -> tuple[dict[str, int], dict[str, int]]:
        """
        Submit L{EACH} messages through the API and L{EACH} through the
        proxy.

        @return: The answer to each, by test id, for the API and the proxy.
        """
        api = {self.nextId(): 0 for _ in range(EACH)}
        for testId in api:
            api[testId] = self.viaApi(testId)
        proxy = {self.nextId(): 0 for _ in range(EACH)}
        for testId in proxy:
            proxy[testId] = self.viaProxy(testId)
        return api, proxy

    def test_fullDiskRefusesThenRecovers(self) -> None:
        """
        With the data directory full, the API answers 503 and the proxy 451
        or 452, never 202 or 250, and ace-mail keeps running; once the room
        is back, new messages are accepted, and every message accepted
        before, during or after is delivered, and no refused one, not even
        after a restart (SIGKILL).
        """
        self.aceMail.start()
        before = self.submit()
        filled = fill(self.dataDir)
        full = self.submit()
        queued = self.aceMail.queue()
        os.remove(os.path.join(self.dataDir, "filler"))
        after = self.submit()
        self.sink.start()

        answers = [before, full, after]
        accepted = {
            t
            for api, proxy in answers
            for t, code in {**api, **proxy}.items()
            if code in (202, 250)
        }
        refused = {t for api, proxy in answers for t in {**api, **proxy}} - accepted
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if accepted <= {a.testId for a in arrivals([self.sink])}:
                break
            time.sleep(0.2)
        settled([self.sink], quiet=1.0, timeout=30)
        self.aceMail.kill()
        self.aceMail.start()
        waitFor("the queue to be empty", lambda: not self.aceMail.queue(), 30)
        settled([self.sink], quiet=1.0, timeout=30)
        found = arrivals([self.sink], bigMessage)
        copies = Counter(a.testId for a in found)
        lost = accepted - set(copies)
        delivered = set(copies) & refused

        command = f"ACE_RELIABILITY=1 python -m twisted.trial {self.id()}"
        _figures.record(
            SECTION,
            f"answers while the tmpfs of {TMPFS_SIZE} is full",
            f"API {dict(Counter(full[0].values()))}, "
            f"proxy {dict(Counter(full[1].values()))} "
            f"(a filler of {filled} bytes took the last byte)",
            command,
        )
        _figures.record(
            SECTION,
            "after the filler is removed",
            f"accepted {len(accepted)} ({2 * EACH} before the fill, "
            f"{2 * EACH} after), delivered {len(accepted) - len(lost)}, "
            f"lost {len(lost)}, refused yet delivered (after a restart too) "
            f"{len(delivered)}, "
            f"duplicates {sum(copies.values()) - len(copies)}",
            command,
        )

        log = self.aceMail.logTail()
        self.assertEqual(set(before[0].values()) | set(before[1].values()), {202, 250})
        self.assertEqual(set(full[0].values()), {503}, log)
        self.assertLessEqual(set(full[1].values()), {451, 452}, log)
        self.assertEqual(len(queued), 2 * EACH)
        self.assertEqual(set(after[0].values()) | set(after[1].values()), {202, 250})
        self.assertEqual(lost, set(), log)
        self.assertEqual(delivered, set())
        self.assertEqual(max(copies.values()), 1)
        self.assertTrue(all(a.whole for a in found))
