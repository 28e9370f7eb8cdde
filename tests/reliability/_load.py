# -*- test-case-name: tests.reliability.test_crash,tests.reliability.test_soak -*-
"""
Load for the reliability suite: test messages that carry their own id and
digest, and threads that send them to a running ace-mail through its proxy
and its API, keeping count of what ace-mail acknowledged.

Every loop here is bounded in count, and every address is 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import smtplib
import threading
import urllib.error
import urllib.request
import uuid
from collections import Counter
from typing import Any

from tests.e2e._harness import LOOPBACK, ProxyAceMail

LONG = os.environ.get("ACE_RELIABILITY_PROFILE") == "long"
AGENT = "agent@agents.example"
ELSEWHERE = "partner@elsewhere.example"
REFUSED = "contact refused at RCPT"


def testMessage(testId: str, sender: str, recipient: str, subject: str) -> bytes:
    """
    A message that names C{testId} in its C{X-Test-Id}, its subject and its
    body, and whose last line is a digest of the body lines before it, so
    that a truncated copy is seen. The proxy's reply rewrite keeps the
    subject and the body, so a customer's copy still names the id.
    """
    body = [f"reliability-id={testId};"]
    body += [f"line {n} " + "y" * 64 for n in range(24)]
    body += [".", "..a line that starts with dots"]
    digest = hashlib.sha256("\r\n".join(body).encode("ascii")).hexdigest()
    headers = [
        f"From: <{sender}>",
        f"To: <{recipient}>",
        f"Subject: {subject} {testId}",
        f"Message-ID: <{testId}@reliability.test>",
        f"X-Test-Id: {testId}",
    ]
    lines = headers + [""] + body + [f"digest {digest}"]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def api(aceMail: ProxyAceMail, method: str, path: str, body: Any = None) -> Any:
    """
    One request to ace-mail's API.

    @return: The parsed JSON answer.
    @raise OSError: If ace-mail cannot be reached or answers with an HTTP
        error, the status in the message.
    """
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(
        f"http://{LOOPBACK}:{aceMail.apiPort}{path}",
        data=data,
        method=method,
        headers={
            "Authorization": f"Bearer {aceMail.token}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        raise OSError(f"{method} {path} answered {e.code}") from e
    except ValueError as e:
        raise OSError(f"{method} {path} gave no whole JSON answer") from e


def counts(counter: Counter[str]) -> str:
    """
    A counter as a short sentence, such as C{"api 3, pass 2"}, or C{"none"}.
    """
    return ", ".join(f"{kind} {n}" for kind, n in sorted(counter.items())) or "none"


class Tally:
    """
    What the load sent and what ace-mail acknowledged, shared by its
    threads.

    @ivar sent: Every test id that was sent, acknowledged or not.
    @ivar expected: The recipient each acknowledged test id must reach.
    @ivar errors: How many operations failed, by the kind of failure.
    @ivar operations: How many operations were tried, by their kind.
    """

    def __init__(self) -> None:
        self.sent: set[str] = set()
        self.expected: dict[str, str] = {}
        self.errors: Counter[str] = Counter()
        self.operations: Counter[str] = Counter()
        self._lock = threading.Lock()

    def newId(self, kind: str) -> str:
        """
        A new test id, which names C{kind}, counted as sent.
        """
        testId = f"{kind}-{uuid.uuid4().hex[:12]}"
        with self._lock:
            self.sent.add(testId)
            self.operations[kind] += 1
        return testId

    def acknowledged(self, testId: str, recipient: str) -> None:
        """
        Note that ace-mail answered 250 or 202 for C{testId}, which must
        then reach C{recipient}.
        """
        with self._lock:
            self.expected[testId] = recipient

    def operation(self, kind: str) -> None:
        with self._lock:
            self.operations[kind] += 1

    def error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    def acknowledgedByKind(self) -> str:
        """
        How many messages were acknowledged, in all and by kind.
        """
        with self._lock:
            kinds = Counter(testId.split("-")[0] for testId in self.expected)
        return f"{sum(kinds.values())} ({counts(kinds)})"


class ContactPool:
    """
    The contacts that ace-mail made (answered 201), for replies and lookups.
    """

    def __init__(self) -> None:
        self._contacts: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, contact: dict[str, Any]) -> None:
        with self._lock:
            self._contacts.append(contact)

    def pick(self, rng: random.Random) -> dict[str, Any] | None:
        with self._lock:
            return rng.choice(self._contacts) if self._contacts else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._contacts)


class Worker(threading.Thread):
    """
    A thread that repeats one operation, with a pause after each, until it
    is stopped or has done C{limit} operations.
    """

    def __init__(
        self, aceMail: ProxyAceMail, tally: Tally, seed: int, pause: float, limit: int
    ) -> None:
        super().__init__(daemon=True)
        self.aceMail = aceMail
        self.tally = tally
        self.rng = random.Random(seed)
        self.pause = pause
        self.limit = limit
        self.stopping = threading.Event()

    def run(self) -> None:
        for _ in range(self.limit):
            if self.stopping.is_set():
                break
            try:
                self.once()
            except Exception as e:
                self.failed(e)
                self.stopping.wait(0.1)
            self.stopping.wait(self.pause)
        self.finished()

    def once(self) -> None:
        """
        Do one operation; raise if it fails, such as L{OSError} when
        ace-mail is down.
        """
        raise NotImplementedError()

    def failed(self, reason: Exception) -> None:
        """
        Count a failed operation by the kind of its exception.
        """
        self.tally.error(type(reason).__name__)

    def finished(self) -> None:
        """
        Called once the loop ends.
        """


class ProxyWorker(Worker):
    """
    An agent's mail client: over one connection to the proxy at a time, it
    sends replies to contacts from C{pool} (a C{replyShare} of its messages)
    and pass-through mail to a partner, and reconnects after a failure.
    """

    def __init__(self, *args: Any, pool: ContactPool, replyShare: float) -> None:
        super().__init__(*args)
        self.pool = pool
        self.replyShare = replyShare
        self.client: smtplib.SMTP | None = None

    def once(self) -> None:
        contact = self.pool.pick(self.rng)
        if contact is not None and self.rng.random() < self.replyShare:
            testId = self.tally.newId("reply")
            rcptTo, reachesAs = contact["address"], contact["customerAddress"]
        else:
            testId = self.tally.newId("pass")
            rcptTo = reachesAs = ELSEWHERE
        content = testMessage(testId, AGENT, rcptTo, "Re: your order")
        if self.client is None:
            self.client = smtplib.SMTP(LOOPBACK, self.aceMail.proxyPort, timeout=30)
            self.client.ehlo("agentpc.agents.example")
        try:
            self.client.sendmail(AGENT, [rcptTo], content)
        except smtplib.SMTPRecipientsRefused as e:
            [(code, _)] = e.recipients.values()
            self.tally.error(f"{REFUSED} with {code}")
            return
        self.tally.acknowledged(testId, reachesAs)

    def failed(self, reason: Exception) -> None:
        super().failed(reason)
        self.finished()

    def finished(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


class ApiWorker(Worker):
    """
    An application that sends mail through C{POST /v1/outgoing}.
    """

    recipient = "someone@example.net"

    def once(self) -> None:
        testId = self.tally.newId("api")
        content = testMessage(testId, "a@example.com", self.recipient, "Notice")
        body = {
            "from": "a@example.com",
            "to": [self.recipient],
            "message": content.decode("ascii"),
        }
        api(self.aceMail, "POST", "/v1/outgoing", body)
        self.tally.acknowledged(testId, self.recipient)


class ContactWorker(Worker):
    """
    The contact-centre software, making a contact for a new customer with
    C{POST /v1/contacts} each time; those made go into C{pool}.
    """

    def __init__(self, *args: Any, pool: ContactPool) -> None:
        super().__init__(*args)
        self.pool = pool

    def once(self) -> None:
        name = uuid.uuid4().hex[:10]
        address = f"c-{name}@customer.example"
        body = {
            "customer": f"Customer {name} <{address}>",
            "subject": "My order",
            "messageId": f"<{name}@customer.example>",
        }
        self.tally.operation("contact")
        contact = api(self.aceMail, "POST", "/v1/contacts", body)
        self.pool.add(dict(contact, customerAddress=address))
