# -*- test-case-name: tests.e2e.test_scaleout -*-
"""
Several ace-mail nodes for the end-to-end tests of scale-out: each a real
C{twistd -n ace-mail} with its own data directory, all sharing one store,
one config file (one entrance with one POP3 account) and one sink, and the
PostgreSQL server they share, which a test may stop and start.

Every wait here is bounded in time, and every address is 127.0.0.1.
"""

from __future__ import annotations

import os
import shlex
import smtplib
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Sequence

import psycopg
from twisted.trial.unittest import SynchronousTestCase

from tests.e2e._harness import LOOPBACK, waitFor
from tests.e2e._pop3harness import AccountAceMail
from tests.pgharness import CONTROL_VARIABLE, _unavailable, testDsn

ACCOUNT = "acme-pop"
"""
The name of the POP3 account in L{accountConfig
<tests.e2e._pop3harness.accountConfig>}'s config file.
"""


class Node(AccountAceMail):
    """
    One ace-mail node: its proxy, its API and its POP3 account, its own data
    directory and log under C{base/label}, and the store given.

    @ivar label: What the test calls the node, such as C{"A"}.
    """

    def __init__(
        self,
        label: str,
        base: str,
        sinkPort: int,
        configPath: str,
        store: str,
        options: Sequence[str] = (),
    ) -> None:
        """
        @param store: The value of C{--store}.
        @param options: More options for the command line, such as
            C{["--accountLease", "4s"]}.
        """
        folder = os.path.join(base, label)
        os.makedirs(folder, exist_ok=True)
        super().__init__(
            os.path.join(folder, "data"),
            sinkPort,
            os.path.join(folder, "ace-mail.log"),
            configPath,
            ["--store", store] + list(options),
        )
        self.label = label

    def nodeName(self) -> str:
        """
        @return: The name the node gave itself in its data directory.
        """
        with open(os.path.join(self.dataDir, "node-name"), encoding="utf-8") as f:
            return f.read().strip()

    def account(self) -> dict[str, Any]:
        """
        @return: The status of the POP3 account, from C{GET /v1/accounts}.
        """
        return self.accounts()[ACCOUNT]

    def taken(self) -> int:
        """
        @return: How many messages this node's intake took from the account
            since it started.
        """
        count: int = self.account()["messagesTaken"]
        return count

    def lease(self) -> str | None:
        """
        @return: What the node says of the account's lease: who holds it,
            or why this node does not know.
        """
        lease: str | None = self.account()["lease"]
        return lease

    def holdsLease(self) -> bool:
        """
        @return: Whether the node says it holds the account's lease.
        """
        return self.lease() == f"held by this node, {self.nodeName()}"

    def running(self) -> bool:
        """
        @return: Whether the node's process is alive.
        """
        return self.process is not None and self.process.poll() is None


def startTogether(nodes: Iterable[Node]) -> None:
    """
    Start nodes at the same moment, each in a thread, and wait until all of
    them listen (at most 30 s each, in parallel).

    @raise AssertionError: If one of them exits at start.
    """
    nodes = list(nodes)
    with ThreadPoolExecutor(len(nodes)) as pool:
        for started in [pool.submit(node.start) for node in nodes]:
            started.result(timeout=60)


def logTails(nodes: Iterable[Node], lines: int = 25) -> str:
    """
    @return: The last lines of each node's log, for failure messages.
    """
    return "\n".join(
        f"node {node.label}'s log ends with:\n{node.logTail(lines)}" for node in nodes
    )


def smtpClient(node: Node) -> smtplib.SMTP:
    """
    @return: An smtplib client connected to a node's proxy, that has said
        EHLO. The caller closes it.
    """
    client = smtplib.SMTP(LOOPBACK, node.proxyPort, timeout=30)
    client.ehlo("agentpc.agents.example")
    return client


def send(node: Node, mailFrom: str, recipient: str, content: bytes) -> dict[str, Any]:
    """
    Send one message through a node's proxy, on a new connection.

    @return: The recipients the proxy refused, as smtplib's C{sendmail}
        gives them.
    @raise smtplib.SMTPException: If the proxy refuses the message.
    """
    client = smtpClient(node)
    try:
        refused: dict[str, Any] = client.sendmail(mailFrom, [recipient], content)
        client.quit()
        return refused
    finally:
        client.close()


def rcptReply(node: Node, mailFrom: str, address: str) -> tuple[int, str]:
    """
    Ask a node's proxy to take mail for C{address}, on a new connection,
    then say RSET and QUIT.

    @return: The reply code and text to RCPT TO.
    """
    client = smtpClient(node)
    try:
        code, _ = client.mail(mailFrom)
        if code != 250:
            raise AssertionError(f"node {node.label} answered MAIL FROM with {code}")
        code, text = client.rcpt(address)
        client.rset()
        client.quit()
        return code, text.decode("ascii", "replace")
    finally:
        client.close()


class PostgresControl:
    """
    Stops and starts the test PostgreSQL server with the command in
    C{ACE_MAIL_TEST_POSTGRES_CTL}, which takes C{stop} or C{start} as its
    last argument (such as C{pg_ctlcluster 15 main}).
    """

    def __init__(self, command: Sequence[str], dsn: str) -> None:
        """
        @param command: The command, without C{stop} or C{start}.
        @param dsn: The address of a database on the server.
        """
        self.command = list(command)
        self.dsn = dsn

    @classmethod
    def fromEnvironment(cls, testCase: SynchronousTestCase) -> PostgresControl:
        """
        @return: The control that C{ACE_MAIL_TEST_POSTGRES_CTL} names, for
            the server of the test database.
        @raise SkipTest: When that variable or C{ACE_MAIL_TEST_POSTGRES} is
            unset, unless C{ACE_MAIL_REQUIRE_POSTGRES} is C{1}, which fails
            the test instead.
        """
        dsn = testDsn(testCase)
        command = os.environ.get(CONTROL_VARIABLE, "").strip()
        if not command:
            _unavailable(
                testCase,
                f"this test stops and starts the PostgreSQL server: set"
                f" {CONTROL_VARIABLE} to a command that does so with a last"
                " argument of stop or start (such as"
                f' {CONTROL_VARIABLE}="pg_ctlcluster 15 main") to run it.',
            )
        return cls(shlex.split(command), dsn)

    def reachable(self) -> bool:
        """
        @return: Whether the server answers a query within two seconds.
        """
        try:
            with psycopg.connect(self.dsn, connect_timeout=2) as connection:
                connection.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def _run(self, action: str) -> None:
        done = subprocess.run(
            self.command + [action],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode("utf-8", "replace")
            raise AssertionError(
                f"{shlex.join(self.command + [action])} exited with"
                f" {done.returncode}:\n{output}"
            )

    def stop(self) -> None:
        """
        Stop the server and wait (at most 30 s) until it refuses queries.
        """
        self._run("stop")
        waitFor("PostgreSQL to stop", lambda: not self.reachable(), 30)

    def start(self) -> None:
        """
        Start the server and wait (at most 60 s) until it answers queries.
        """
        self._run("start")
        waitFor("PostgreSQL to answer after its start", self.reachable, 60)

    def ensureRunning(self) -> None:
        """
        Start the server unless it answers queries already; for a test's
        cleanup, so that a failed test leaves the server running.
        """
        if not self.reachable():
            self.start()


def pause(until: float) -> None:
    """
    Sleep until C{time.monotonic()} reaches C{until}, at most 60 s.
    """
    time.sleep(min(60.0, max(0.0, until - time.monotonic())))
