"""
End-to-end test of C{ace-mail-ctl}: the command, run as its own process,
finds a real C{twistd -n ace-mail} through the data directory alone, and
acts on its queue and contacts.
"""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e._harness import LOOPBACK, ProxyAceMail, _sourceRoot, freePort, waitFor


class CtlTests(SynchronousTestCase):
    """
    An operator's session with C{ace-mail-ctl}, with the SMTP server down so
    that mail waits in the queue.
    """

    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        self.ace = ProxyAceMail(
            os.path.join(base, "data"), freePort(), os.path.join(base, "ace-mail.log")
        )
        self.addCleanup(self.ace.kill)
        self.ace.start()

    def ctl(self, *argv: str) -> tuple[int, str, str]:
        """
        Run C{python -m ace_mail.ctl --dataDir DIR ARGV}.

        @return: Its exit status, output and error output.
        """
        env = dict(os.environ, PYTHONPATH=_sourceRoot())
        done = subprocess.run(
            [sys.executable, "-m", "ace_mail.ctl", "--dataDir", self.ace.dataDir]
            + list(argv),
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        return done.returncode, done.stdout, done.stderr

    def test_session(self) -> None:
        """
        The API's address is in the data directory; C{queue} lists a waiting
        message, C{queue retry} and C{queue delete} act on it, C{contact}
        and C{contact end} show and end a contact, C{accounts} says there
        are none, and once ace-mail stops, each command says it is not
        reachable.
        """
        with open(os.path.join(self.ace.dataDir, "api-endpoint")) as f:
            self.assertEqual(f.read(), f"http://{LOOPBACK}:{self.ace.apiPort}\n")
        self.assertEqual(self.ctl("queue"), (0, "The queue is empty.\n", ""))

        queueId = self.ace.submit("ctl-1")
        waitFor(
            "a failed attempt",
            lambda: any(e["attempts"] for e in self.ace.queue()),
            20,
        )
        status, out, err = self.ctl("queue")
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(lines[0].split()[:3], ["QUEUE", "ID", "STATE"])
        self.assertEqual(lines[1].split()[0], queueId)
        self.assertIn("<a@example.com>", lines[1])
        self.assertTrue(lines[-1].startswith("-- 1 message, "), lines[-1])

        self.assertEqual(
            self.ctl("queue", "retry", queueId),
            (0, f"Message {queueId} will be tried now.\n", ""),
        )
        self.assertEqual(
            self.ctl("queue", "delete", queueId),
            (0, f"Message {queueId} was deleted from the queue.\n", ""),
        )
        self.assertEqual(self.ace.queue(), [])

        contact = self.ace.createContact(
            "Ann <ann@customer.example>", "Help", "<h1@customer.example>"
        )
        status, out, err = self.ctl("contact", contact["id"])
        self.assertEqual((status, err), (0, ""))
        self.assertIn(f"address     {contact['address']}", out.splitlines())
        status, out, err = self.ctl("contact", "end", contact["id"])
        self.assertIn("state       ended", out.splitlines())
        self.assertEqual(
            self.ctl("accounts"), (0, "No POP3 accounts are configured.\n", "")
        )

        self.ace.stop()
        status, out, err = self.ctl("queue")
        self.assertEqual(
            (status, out, err),
            (
                1,
                "",
                f"ace-mail-ctl: cannot reach the API at http://{LOOPBACK}:"
                f"{self.ace.apiPort}; is ace-mail running?\n",
            ),
        )
