"""
Tests for C{ace-mail-ctl} (L{ace_mail.ctl}) against an API in this process,
served on 127.0.0.1 (or a UNIX socket) by the real reactor while the command
runs in a thread, and for the queue endpoints it uses.
"""

from __future__ import annotations

import io
import json
import os
import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.server import Site
from twisted.web.static import Data

from ace_mail import ctl
from ace_mail._apiendpoint import ENDPOINT_FILE, AnnouncedEndpoint, apiUrl
from ace_mail.accounts import AccountStatus
from ace_mail.api import Api, rfc3339
from ace_mail.apicontacts import ContactEndpoints
from ace_mail.envelope import Envelope, Reply
from ace_mail.queue import Queue
from ace_mail.spool import Spool
from ace_mail.store import Contact, Entrance, SQLiteContactStore
from tests.test_queue import FakeDeliver
from tests.test_spool import runNow

TOKEN = "ctl-test-token"
MESSAGE = b"From: agent@example.com\r\nSubject: hi\r\n\r\nHi.\r\n"


def _noDelivery(contactId: str, agent: str) -> Deferred[str]:
    raise AssertionError("ace-mail-ctl never delivers")


class Ctl:
    """
    One API in this process, with a data directory that points at it.
    """

    def __init__(self, test: TestCase, listen: str) -> None:
        self.test = test
        self.dataDir = test.mktemp()
        os.makedirs(self.dataDir)
        with open(os.path.join(self.dataDir, "api-token"), "w") as f:
            f.write(TOKEN + "\n")
        self.deliver = FakeDeliver()
        self.queue = Queue(
            reactor,
            Spool.open(os.path.join(self.dataDir, "queue"), runNow),
            self.deliver,
            hostname="ace.example",
        )
        self.queue.startService()
        test.addCleanup(self.queue.stopService)
        self.store = SQLiteContactStore.open(os.path.join(self.dataDir, "c.sqlite3"))
        test.addCleanup(self.store.close)
        self.accounts: list[AccountStatus] = []
        contacts = ContactEndpoints(
            reactor,
            self.store,
            {"default": Entrance("default", "support@example.com", "Support")},
            entranceRoutes={"default": "outgoing"},
            rerouteName="ace.example",
            retentionSeconds=3600.0,
            messageSizeLimit=65536,
            enqueue=lambda envelope, message: self.queue.enqueue(envelope, message),
            deliver=_noDelivery,
            accounts=lambda: self.accounts,
        )
        api = Api(
            reactor,
            self.queue,
            TOKEN,
            heloName="ace.example",
            messageSizeLimit=65536,
            moreRoutes=contacts.routes(),
        )
        self.site = Site(api.resource())
        self.site.noisy = False
        self.endpoint = AnnouncedEndpoint(
            serverFromString(reactor, listen),
            os.path.join(self.dataDir, ENDPOINT_FILE),
            tls=False,
        )

    @inlineCallbacks
    def start(self) -> Any:
        port = yield self.endpoint.listen(self.site)
        self.test.addCleanup(port.stopListening)

    def run(self, *argv: str) -> Deferred[tuple[int, str, str]]:
        """
        Run C{ace-mail-ctl --dataDir DIR ARGV} in a thread.

        @return: Its exit status, output and error output.
        """

        def inThread() -> tuple[int, str, str]:
            out, err = io.StringIO(), io.StringIO()
            status = ctl.main(["--dataDir", self.dataDir, *argv], out, err)
            return status, out.getvalue(), err.getvalue()

        return deferToThread(inThread)

    def enqueue(self, recipients: tuple[str, ...] = ("b@example.net",)) -> str:
        queued = self.queue.enqueue(Envelope("agent@example.com", recipients), MESSAGE)
        return self.test.successResultOf(queued)  # type: ignore[no-any-return]

    def contact(self) -> Contact:
        made = self.store.create(
            entrance="default",
            customerAddress="ann@customer.example",
            customerName="Ann",
            subject="Help",
            messageId=None,
            references=(),
            externalId="ext-7",
            now=reactor.seconds(),  # type: ignore[attr-defined]
        )
        return self.test.successResultOf(made)  # type: ignore[no-any-return]


class CommandTests(TestCase):
    """
    Each command prints an aligned table, or the API's JSON with C{--json}.
    """

    @inlineCallbacks
    def setUp(self) -> Any:
        self.ctl = Ctl(self, "tcp:0:interface=127.0.0.1")
        yield self.ctl.start()

    @inlineCallbacks
    def test_emptyQueue(self) -> Any:
        """
        An empty queue is one sentence.
        """
        status, out, err = yield self.ctl.run("queue")
        self.assertEqual((status, out, err), (0, "The queue is empty.\n", ""))

    @inlineCallbacks
    def test_queueTable(self) -> Any:
        """
        C{queue} lists each message on one row of aligned columns, its last
        error below it in parentheses, and a total, like C{mailq}.
        """
        first = self.ctl.enqueue(("b@example.net", "c@example.net"))
        self.ctl.deliver.calls[0].refuse(Reply(451, "4.2.0 mailbox busy"))
        second = self.ctl.enqueue()
        [one, two] = sorted(self.ctl.queue.list(), key=lambda e: e.queueId != first)
        status, out, err = yield self.ctl.run("queue")
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(
            lines[0].split(),
            ["QUEUE", "ID", "STATE", "SIZE", "TRIES", "ARRIVED", "NEXT", "TRY"]
            + ["ROUTE", "FROM", "TO"],
        )
        self.assertEqual(
            lines[1].split(),
            [first, "deferred", str(len(MESSAGE)), "1", rfc3339(one.created)]
            + [rfc3339(one.nextAttempt), "outgoing", "<agent@example.com>"]
            + ["b@example.net,", "c@example.net"],
        )
        self.assertEqual(lines[2], "  (451 4.2.0 mailbox busy)")
        self.assertEqual(lines[3].split()[:2], [second, "active"])
        self.assertEqual(lines[4], f"-- 2 messages, {2 * len(MESSAGE)} bytes.")
        self.assertEqual(len(lines), 5)
        for row, state in [(lines[1], "deferred"), (lines[3], "active")]:
            for column, value in [("STATE", state), ("FROM", "<agent@example.com>")]:
                self.assertTrue(row[lines[0].index(column) :].startswith(value), row)
            sizeEnd = lines[0].index("SIZE") + len("SIZE")
            self.assertTrue(row[:sizeEnd].endswith(f" {len(MESSAGE)}"), row)
        self.assertEqual(two.queueId, second)

    @inlineCallbacks
    def test_queueJson(self) -> Any:
        """
        C{--json queue} prints C{GET /v1/queue} as it is.
        """
        queueId = self.ctl.enqueue()
        status, out, err = yield self.ctl.run("--json", "queue")
        self.assertEqual((status, err), (0, ""))
        answer = json.loads(out)
        self.assertEqual([e["queueId"] for e in answer["queue"]], [queueId])
        self.assertEqual(answer["queue"][0]["state"], "active")

    @inlineCallbacks
    def test_retry(self) -> Any:
        """
        C{queue retry ID} makes a deferred message due now: it is handed to
        delivery again at once.
        """
        queueId = self.ctl.enqueue()
        self.ctl.deliver.calls[0].refuse(Reply(451, "4.2.0 busy"))
        status, out, err = yield self.ctl.run("queue", "retry", queueId)
        self.assertEqual(
            (status, out, err), (0, f"Message {queueId} will be tried now.\n", "")
        )
        self.assertEqual(len(self.ctl.deliver.calls), 2)
        status, out, err = yield self.ctl.run("queue", "retry", queueId, "--json")
        self.assertEqual(json.loads(out), {"queueId": queueId})

    @inlineCallbacks
    def test_delete(self) -> Any:
        """
        C{queue delete ID} drops a message; deleting it again is an error
        that says there is no such message.
        """
        queueId = self.ctl.enqueue()
        status, out, err = yield self.ctl.run("queue", "delete", queueId)
        self.assertEqual(
            (status, out, err),
            (0, f"Message {queueId} was deleted from the queue.\n", ""),
        )
        self.assertEqual(self.ctl.queue.list(), [])
        status, out, err = yield self.ctl.run("queue", "delete", queueId)
        self.assertEqual(
            (status, out, err),
            (1, "", f"ace-mail-ctl: no message {queueId} in the queue.\n"),
        )

    @inlineCallbacks
    def test_contact(self) -> Any:
        """
        C{contact ID} shows each field of the contact on its own line, the
        values lined up; C{--json} prints the API's answer.
        """
        contact = self.ctl.contact()
        status, out, err = yield self.ctl.run("contact", contact.id)
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(lines[0], f"id          {contact.id}")
        self.assertIn(f"address     {contact.id}@ace.example", lines)
        self.assertIn('customer    "Ann" <ann@customer.example>', lines)
        self.assertIn("state       open", lines)
        self.assertIn("ended       -", lines)
        self.assertIn("externalId  ext-7", lines)
        status, out, err = yield self.ctl.run("--json", "contact", contact.id)
        answer = json.loads(out)
        self.assertEqual((answer["id"], answer["state"]), (contact.id, "open"))

    @inlineCallbacks
    def test_contactEnd(self) -> Any:
        """
        C{contact end ID} ends the contact and shows it, ended, with the
        time it expires.
        """
        contact = self.ctl.contact()
        status, out, err = yield self.ctl.run("contact", "end", contact.id)
        self.assertEqual((status, err), (0, ""))
        self.assertIn("state       ended", out.splitlines())
        ended = self.successResultOf(self.ctl.store.get(contact.id))
        self.assertIsNotNone(ended.ended)
        self.assertIn(f"expires     {rfc3339(ended.ended + 3600)}", out.splitlines())

    @inlineCallbacks
    def test_unknownContact(self) -> Any:
        """
        An unknown contact is the API's sentence, with exit status 1.
        """
        status, out, err = yield self.ctl.run("contact", "a" * 20)
        self.assertEqual(
            (status, out, err),
            (1, "", f"ace-mail-ctl: no contact {'a' * 20} is known here.\n"),
        )

    @inlineCallbacks
    def test_accounts(self) -> Any:
        """
        C{accounts} shows one aligned row per POP3 account, numbers to the
        right and the last result at the end; with none, one sentence.
        """
        status, out, err = yield self.ctl.run("accounts")
        self.assertEqual(out, "No POP3 accounts are configured.\n")
        self.ctl.accounts = [
            AccountStatus(
                "support",
                lastPoll=1_800_000_000.0,
                lastResult="ok",
                messagesTaken=12,
                nextPoll=1_800_000_060.0,
            ),
            AccountStatus(
                "sales-long-name",
                polling=True,
                lastResult="the server refused the password",
                errors=3,
                consecutiveFailures=2,
            ),
        ]
        status, out, err = yield self.ctl.run("accounts")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(
            out.splitlines(),
            [
                "ACCOUNT          POLLING  LAST POLL             NEXT POLL             "
                "TAKEN  TOO LARGE  ERRORS  FAILING  LAST RESULT",
                "support          no       2027-01-15T08:00:00Z  2027-01-15T08:01:00Z  "
                "   12          0       0        0  ok",
                "sales-long-name  yes      -                     -                     "
                "    0          0       3        2  the server refused the password",
            ],
        )
        status, out, err = yield self.ctl.run("accounts", "--json")
        names = [account["name"] for account in json.loads(out)["accounts"]]
        self.assertEqual(names, ["support", "sales-long-name"])


class ErrorTests(TestCase):
    """
    Every error is one sentence on standard error with a non-zero exit.
    """

    @inlineCallbacks
    def setUp(self) -> Any:
        self.ctl = Ctl(self, "tcp:0:interface=127.0.0.1")
        yield self.ctl.start()

    @inlineCallbacks
    def test_wrongToken(self) -> Any:
        """
        A token the API refuses is named with where it came from.
        """
        status, out, err = yield self.ctl.run("--token", "nope", "queue")
        with open(os.path.join(self.ctl.dataDir, ENDPOINT_FILE)) as f:
            api = f.read().strip()
        self.assertEqual(
            (status, out, err),
            (
                1,
                "",
                f"ace-mail-ctl: the API at {api} refused the token from --token; "
                "give the right one with --token.\n",
            ),
        )

    @inlineCallbacks
    def test_notRunning(self) -> Any:
        """
        When nothing listens at the API's address, the sentence asks whether
        ace-mail runs.
        """
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = f"http://127.0.0.1:{s.getsockname()[1]}"
        status, out, err = yield self.ctl.run("--api", closed, "queue")
        self.assertEqual(
            (status, out, err),
            (
                1,
                "",
                f"ace-mail-ctl: cannot reach the API at {closed}; is "
                "ace-mail running?\n",
            ),
        )

    @inlineCallbacks
    def test_noDataDir(self) -> Any:
        """
        A data directory without the API's address says which file it
        looked for and what to give instead.
        """
        empty = self.mktemp()
        status, out, err = yield deferToThread(
            _runQuietly, ["--dataDir", empty, "queue"]
        )
        path = os.path.join(empty, ENDPOINT_FILE)
        self.assertEqual(status, 1)
        self.assertEqual(
            err,
            f"ace-mail-ctl: cannot read the API's address from {path} (No such "
            "file or directory); give ace-mail's --dataDir, or --api.\n",
        )

    @inlineCallbacks
    def test_notJson(self) -> Any:
        """
        An address that answers with something other than JSON is doubted.
        """
        page = Site(Data(b"<html>hello</html>", "text/html"))
        port = yield serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(page)
        self.addCleanup(port.stopListening)
        other = f"http://127.0.0.1:{port.getHost().port}"
        status, out, err = yield self.ctl.run("--api", other, "queue")
        self.assertEqual(
            (status, out, err),
            (
                1,
                "",
                f"ace-mail-ctl: the API at {other} answered 404 with something "
                "other than JSON; is --api the address of ace-mail's API?\n",
            ),
        )

    @inlineCallbacks
    def test_badApiAddress(self) -> Any:
        """
        An --api that is no URL is refused before any request.
        """
        status, out, err = yield self.ctl.run("--api", "127.0.0.1:8025", "queue")
        self.assertEqual(status, 1)
        self.assertEqual(
            err,
            "ace-mail-ctl: the API's address '127.0.0.1:8025' is not an http:// or "
            "https:// URL or unix:PATH; give one with --api.\n",
        )

    @inlineCallbacks
    def test_usage(self) -> Any:
        """
        A wrong command or option is one sentence and exit status 2.
        """
        cases = [
            (["queue", "flush"], "unknown command 'queue flush'"),
            (["contact"], "unknown command 'contact'"),
            (["--bogus", "queue"], "unrecognized arguments: --bogus"),
            ([], "the following arguments are required: command"),
            (["queue", "delete", "../v1/x"], "'../v1/x' is not a queue id"),
        ]
        for argv, sentence in cases:
            status, out, err = yield self.ctl.run(*argv)
            self.assertEqual(status, 2, argv)
            self.assertEqual(out, "")
            self.assertTrue(err.startswith(f"ace-mail-ctl: {sentence}"), err)
            self.assertEqual(err.count("\n"), 1, err)


def apiUrlOf(ctl: Ctl) -> str:
    with open(os.path.join(ctl.dataDir, ENDPOINT_FILE)) as f:
        return f.read().strip()


def _runQuietly(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return ctl.main(argv, out, err), out.getvalue(), err.getvalue()


class UnixSocketTests(TestCase):
    """
    An API on a UNIX socket is found and reached through the data directory.
    """

    @inlineCallbacks
    def test_queueOverUnixSocket(self) -> Any:
        """
        The API's file names the socket as C{unix:PATH}, and C{queue} works
        over it.
        """
        path = os.path.abspath(self.mktemp())
        self.ctl = Ctl(self, f"unix:{path}")
        yield self.ctl.start()
        self.assertEqual(apiUrlOf(self.ctl), f"unix:{path}")
        queueId = self.ctl.enqueue()
        status, out, err = yield self.ctl.run("queue")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out.splitlines()[1].split()[0], queueId)


class ApiUrlTests(SynchronousTestCase):
    """
    The URL that ace-mail writes for C{ace-mail-ctl}.
    """

    def test_addresses(self) -> None:
        """
        A wildcard address becomes the loopback one, IPv6 hosts are
        bracketed, TLS is https, and a UNIX socket is C{unix:PATH}.
        """
        cases = [
            (IPv4Address("TCP", "127.0.0.1", 8025), False, "http://127.0.0.1:8025"),
            (IPv4Address("TCP", "0.0.0.0", 8025), True, "https://127.0.0.1:8025"),
            (IPv4Address("TCP", "10.1.2.3", 80), False, "http://10.1.2.3:80"),
            (IPv6Address("TCP", "::", 8025), False, "http://[::1]:8025"),
            (IPv6Address("TCP", "fe80::1", 8025), False, "http://[fe80::1]:8025"),
            (UNIXAddress("/run/ace/api.sock"), False, "unix:/run/ace/api.sock"),
            (UNIXAddress(b"/run/ace/api.sock"), False, "unix:/run/ace/api.sock"),
            (object(), False, None),
        ]
        for address, tls, url in cases:
            self.assertEqual(apiUrl(address, tls), url, address)


class QueueEndpointTests(SynchronousTestCase):
    """
    C{POST /v1/queue/ID/retry} and C{DELETE /v1/queue/ID}, which
    C{ace-mail-ctl} uses.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.deliver = FakeDeliver()
        self.queue = Queue(
            self.clock,
            Spool.open(self.mktemp(), runNow),
            self.deliver,
            hostname="ace.example",
        )
        self.queue.startService()
        self.addCleanup(self.queue.stopService)
        api = Api(
            self.clock, self.queue, TOKEN, heloName="ace.example", messageSizeLimit=4096
        )
        self.site = Site(api.resource(), reactor=self.clock)
        queued = self.queue.enqueue(
            Envelope("a@example.com", ("b@example.net",)), MESSAGE
        )
        self.queueId: str = self.successResultOf(queued)
        self.deliver.calls[0].refuse(Reply(451, "4.2.0 busy"))

    def request(self, method: str, path: str, token: str = TOKEN) -> tuple[int, Any]:
        head = f"{method} {path} HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n"
        protocol = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(head.encode())
        response = transport.value()
        status = int(response.split(b" ", 2)[1])
        return status, json.loads(response.partition(b"\r\n\r\n")[2])

    def test_retry(self) -> None:
        """
        Retrying a deferred message answers 202 with its queue id and hands
        it to delivery at once.
        """
        path = f"/v1/queue/{self.queueId}/retry"
        self.assertEqual(self.request("POST", path), (202, {"queueId": self.queueId}))
        self.assertEqual(len(self.deliver.calls), 2)

    def test_delete(self) -> None:
        """
        Deleting a message answers 200 and removes it from the queue.
        """
        self.assertEqual(
            self.request("DELETE", f"/v1/queue/{self.queueId}"),
            (200, {"queueId": self.queueId, "deleted": True}),
        )
        self.assertIsNone(self.queue.get(self.queueId))

    def test_unknown(self) -> None:
        """
        An unknown queue id is 404 with the API's error shape, for both.
        """
        error = {"code": "notFound", "message": "no message abc in the queue"}
        for method, path in [
            ("POST", "/v1/queue/abc/retry"),
            ("DELETE", "/v1/queue/abc"),
        ]:
            self.assertEqual(self.request(method, path), (404, {"error": error}))

    def test_unauthorized(self) -> None:
        """
        Without the token neither acts: 401, and the message stays.
        """
        for method, path in [
            ("POST", f"/v1/queue/{self.queueId}/retry"),
            ("DELETE", f"/v1/queue/{self.queueId}"),
        ]:
            status, body = self.request(method, path, token="wrong")
            self.assertEqual((status, body["error"]["code"]), (401, "unauthorized"))
        self.assertEqual(len(self.deliver.calls), 1)
        self.assertIsNotNone(self.queue.get(self.queueId))
