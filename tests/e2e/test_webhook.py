"""
End-to-end tests of the webhook: a real C{twistd -n ace-mail} notifies a real
HTTP receiver (C{webhookreceiver.py}) on 127.0.0.1 of each contact made over
the API, through the receiver's outage and through a crash of ace-mail.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e._harness import LOOPBACK, ProxyAceMail, freePort, waitFor

RECEIVER_SCRIPT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "webhookreceiver.py"
)
SECRET = "e2e-webhook-secret"


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1):
            return True
    except OSError:
        return False


class Receiver:
    """
    The webhook receiver in its own process, so that it can be down.
    """

    def __init__(self, port: int, path: str) -> None:
        self.port = port
        self.path = path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """
        Start it and wait (at most 20 s) until it listens.
        """
        self.process = subprocess.Popen(
            [sys.executable, RECEIVER_SCRIPT, "--port", str(self.port)]
            + ["--file", self.path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        process = self.process
        waitFor(
            f"the webhook receiver on port {self.port}",
            lambda: process.poll() is not None or _listening(self.port),
            20,
        )
        if process.poll() is not None:
            raise AssertionError(f"the webhook receiver on port {self.port} exited")

    def kill(self) -> None:
        """
        Kill it with SIGKILL and reap it.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def received(self) -> list[dict[str, Any]]:
        """
        The requests it has kept so far, in order.
        """
        if not os.path.exists(self.path):
            return []
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.endswith("\n")]


class WebhookTests(SynchronousTestCase):
    """
    ACE's router hears of every contact, in order, whatever is down.
    """

    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        self.receiver = Receiver(freePort(), os.path.join(base, "received.jsonl"))
        self.addCleanup(self.receiver.kill)
        config = os.path.join(base, "ace-mail.toml")
        with open(config, "w", encoding="utf-8") as f:
            f.write(f'webhookSecret = "{SECRET}"\n')
        url = f"http://{LOOPBACK}:{self.receiver.port}/ace/hook"
        self.ace = ProxyAceMail(
            os.path.join(base, "data"),
            freePort(),
            os.path.join(base, "ace-mail.log"),
            ["--webhookUrl", url, "--config", config],
        )
        self.addCleanup(self.ace.kill)

    def createContacts(self, first: int, count: int) -> list[dict[str, Any]]:
        return [
            self.ace.createContact(
                f"Customer {n} <c{n}@customer.example>",
                f"Question {n}",
                f"<q{n}@customer.example>",
            )
            for n in range(first, first + count)
        ]

    def waitForFailure(self) -> None:
        """
        Wait until ace-mail has logged that the receiver did not take a
        notification, so that the outage is real.
        """

        def failed() -> bool:
            with open(self.ace.logPath, encoding="utf-8", errors="replace") as f:
                return "not taken by" in f.read()

        waitFor("ace-mail to find the webhook receiver down", failed, 20)

    def assertNotified(self, contacts: list[dict[str, Any]]) -> None:
        """
        Wait (at most 40 s, the backoff included) for the receiver to hold
        one notification per contact, then check them: in order, signed,
        each with its own id and the contact as the API shows it.
        """
        waitFor(
            f"{len(contacts)} notifications",
            lambda: len(self.receiver.received()) >= len(contacts),
            40,
        )
        received = self.receiver.received()
        documents = [json.loads(request["body"]) for request in received]
        self.assertEqual(
            [document["contact"]["id"] for document in documents],
            [contact["id"] for contact in contacts],
        )
        self.assertEqual([d["contact"] for d in documents], contacts)
        self.assertEqual({d["event"] for d in documents}, {"contact.created"})
        self.assertEqual(len({d["id"] for d in documents}), len(contacts))
        for request, document in zip(received, documents, strict=True):
            self.assertEqual(request["path"], "/ace/hook")
            self.assertEqual(request["headers"]["content-type"], "application/json")
            self.assertEqual(request["headers"]["x-ace-mail-event-id"], document["id"])
            digest = hmac.new(
                SECRET.encode(), request["body"].encode(), hashlib.sha256
            ).hexdigest()
            self.assertEqual(
                request["headers"]["x-ace-mail-signature"], f"sha256={digest}"
            )

    def test_receiverDownThenUp(self) -> None:
        """
        Contacts made while the receiver is down are all notified, in the
        order they were made, once it comes up.
        """
        self.ace.start()
        contacts = self.createContacts(1, 5)
        self.waitForFailure()
        self.assertEqual(self.receiver.received(), [])
        self.receiver.start()
        self.assertNotified(contacts)

    def test_survivesKill(self) -> None:
        """
        Notifications still waiting when ace-mail is killed are sent after
        it starts again, before the ones of contacts made after the
        restart.
        """
        self.ace.start()
        before = self.createContacts(1, 3)
        self.waitForFailure()
        self.ace.kill()
        self.ace.start()
        after = self.createContacts(4, 2)
        self.receiver.start()
        self.assertNotified(before + after)
