"""
Tests for the twistd plugin and L{ace_mail.tap}.
"""

from __future__ import annotations

import os
import stat
from typing import Any, Callable

from twisted.application.service import (
    IServiceCollection,
    IServiceMaker,
    MultiService,
)
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.plugin import getPlugins
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from ace_mail import _nodename, _tapparts, tap
from ace_mail._parameters import PARAMETERS
from ace_mail._services import Closing, ThreadPoolService
from ace_mail._tapparts import outgoingRoutes, withBacklog
from ace_mail.accounts import AccountPoller
from ace_mail.config import load
from ace_mail.envelope import Envelope
from ace_mail.queue import Queue
from ace_mail.spool import Spool
from ace_mail.store import (
    ContactStoreError,
    ILeases,
    PostgresContactStore,
    SQLiteContactStore,
)
from tests.pgharness import DSN_VARIABLE, isUri, schemaDsn


class PluginTests(SynchronousTestCase):
    """
    The C{ace-mail} twistd plugin.
    """

    def test_pluginFound(self) -> None:
        """
        twistd finds a plugin named C{ace-mail} that provides
        L{IServiceMaker} and points at L{ace_mail.tap}.
        """
        makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
        self.assertIn("ace-mail", makers)
        maker = makers["ace-mail"]
        self.assertTrue(verifyObject(IServiceMaker, maker))
        self.assertIs(maker.options, tap.Options)


class OptionsTests(SynchronousTestCase):
    """
    L{tap.Options}.
    """

    def parse(self, *argv: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(list(argv))
        return options

    def test_everyAceParameterIsAnOption(self) -> None:
        """
        Each system parameter on ACE's manual page is an option with exactly
        its name, and --help explains it.
        """
        help = str(tap.Options())
        for name in (
            "enableSmtpProxy",
            "smtpProxySmtpServer",
            "smtpProxySmtpPort",
            "smtpProxyPort",
            "smtpProxyRerouteName",
            "outgoingMailSmtpServer1",
            "outgoingMailSmtpPort1",
            "outgoingMailSmtpServer2",
            "outgoingMailSmtpPort2",
            "config",
            "dataDir",
        ):
            self.assertIn(f"--{name}=", help)
        self.assertIn("ACE: SMTP server 2", help)

    def test_helpShowsDefaults(self) -> None:
        """
        The help gives each default that exists.
        """
        help = " ".join(str(tap.Options()).split())
        self.assertIn("[default: 4000s]", help)
        self.assertIn("[default: 120h]", help)

    def test_badValueIsOneSentence(self) -> None:
        """
        A bad value ends the program with one line naming the option, and
        not with the help text or a traceback.
        """
        with self.assertRaises(SystemExit) as caught:
            self.parse("--outgoingMailSmtpPort1", "0")
        message = str(caught.exception.code)
        self.assertIn("--outgoingMailSmtpPort1", message)
        self.assertIn("1 to 65535", message)
        self.assertNotIn("\n", message)

    def test_unknownOption(self) -> None:
        """
        An unknown option is named in one line that points at --help.
        """
        with self.assertRaises(SystemExit) as caught:
            self.parse("--outgoingMailSmtpServer3", "x")
        message = str(caught.exception.code)
        self.assertIn("outgoingMailSmtpServer3", message)
        self.assertIn("--help", message)
        self.assertNotIn("\n", message)

    def test_badConfigFile(self) -> None:
        """
        A config file error ends the program with its file and line.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("outgoingMailSmtpPort1 = 70000\n")
        with self.assertRaises(SystemExit) as caught:
            self.parse("--config", path)
        self.assertIn(
            f"{path}, line 1: outgoingMailSmtpPort1", str(caught.exception.code)
        )

    def test_parametersHaveHelp(self) -> None:
        """
        No parameter goes without an explanation.
        """
        for parameter in PARAMETERS:
            self.assertTrue(parameter.help.strip(), parameter.name)


class MakeServiceTests(SynchronousTestCase):
    """
    L{tap.makeService}.
    """

    def make(self, *argv: str) -> tuple[object, str]:
        dataDir = self.mktemp()
        options = tap.Options()
        options.parseOptions(["--dataDir", dataDir, "--api", "tcp:0", *argv])
        service = tap.makeService(options, reactor=MemoryReactorClock())
        return service, dataDir

    def test_apiTokenWritten(self) -> None:
        """
        Without a configured token, one is written to the data directory,
        readable by its owner only, and kept across starts.
        """
        _, dataDir = self.make()
        path = os.path.join(dataDir, "api-token")
        mode = stat.S_IMODE(os.stat(path).st_mode)
        self.assertEqual(mode, 0o600)
        with open(path) as f:
            first = f.read()
        self.assertGreater(len(first.strip()), 30)
        self.assertEqual(tap._apiToken(load({}), dataDir), first.strip())

    def test_dataDirInUse(self) -> None:
        """
        A second ace-mail on the same data directory is refused with one
        sentence, so two processes never share one queue.
        """
        _, dataDir = self.make()
        options = tap.Options()
        options.parseOptions(["--dataDir", dataDir, "--api", "tcp:0"])
        with self.assertRaises(SystemExit) as caught:
            tap.makeService(options, reactor=MemoryReactorClock())
        self.assertIn("in use by another running ace-mail", str(caught.exception.code))

    def test_services(self) -> None:
        """
        The service holds the queue and a listener for the API.
        """
        service, _ = self.make()
        self.assertTrue(IServiceCollection.providedBy(service))
        kinds = {type(s).__name__ for s in service}  # type: ignore[attr-defined]
        self.assertIn("Queue", kinds)
        self.assertIn("Listener", kinds)
        listeners = [s.what for s in service if type(s).__name__ == "Listener"]  # type: ignore[attr-defined]
        self.assertEqual(listeners, ["API"])

    def test_proxyListensOnlyWhenEnabled(self) -> None:
        """
        With --enableSmtpProxy 1 there is a listener for the SMTP proxy
        beside the API's; with 0 (the default) there is none.
        """
        service, _ = self.make(
            "--enableSmtpProxy",
            "1",
            "--smtpProxyPort",
            "tcp:0",
            "--smtpProxyRerouteName",
            "ace.example.com",
            "--smtpProxySmtpServer",
            "smtp.example.com",
            "--entranceAddress",
            "Support <support@example.com>",
        )
        listeners = [s.what for s in service if type(s).__name__ == "Listener"]  # type: ignore[attr-defined]
        self.assertEqual(sorted(listeners), ["API", "SMTP proxy"])

    def test_unusableDataDir(self) -> None:
        """
        A data directory that cannot be created ends start-up with one
        sentence naming --dataDir.
        """
        parent = self.mktemp()
        with open(parent, "w"):
            pass
        options = tap.Options()
        options.parseOptions(["--dataDir", os.path.join(parent, "sub")])
        with self.assertRaises(SystemExit) as caught:
            tap.makeService(options, reactor=MemoryReactorClock())
        self.assertIn("--dataDir", str(caught.exception.code))


class DocumentationTests(SynchronousTestCase):
    """
    The operator's page of parameters stays true to the code.
    """

    def test_everyParameterDocumented(self) -> None:
        """
        docs/parameters.rst names every parameter and its default.
        """
        path = os.path.join(os.path.dirname(__file__), "..", "docs", "parameters.rst")
        with open(path, encoding="utf-8") as f:
            page = f.read()
        for parameter in PARAMETERS:
            self.assertIn(f"``{parameter.name}``", page)


class RoutesTests(SynchronousTestCase):
    """
    L{ace_mail._tapparts.outgoingRoutes}: which servers each route uses.
    """

    def test_routes(self) -> None:
        """
        Servers 1 and 2 make C{outgoing}, smtpProxySmtpServer makes
        C{proxy}, and an entrance with servers of its own gets its route.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(
                '[[entrance]]\nname = "acme"\naddress = "s@acme.example"\n'
                '[[entrance.smtp]]\nhost = "smtp.acme.example"\nport = 587\n'
            )
        settings = load(
            {
                "outgoingMailSmtpServer1": "a.example",
                "outgoingMailSmtpServer2": "b.example",
                "outgoingMailSmtpPort2": "2525",
                "smtpProxySmtpServer": "real.example",
            },
            path,
        )
        routes = outgoingRoutes(settings)
        described = {
            name: [s.describe() for s in route.servers]
            for name, route in routes.items()
        }
        self.assertEqual(
            described,
            {
                "outgoing": ["outgoing/1 a.example:25", "outgoing/2 b.example:2525"],
                "proxy": ["proxy/1 real.example:25"],
                "entrance/acme": ["entrance/acme/1 smtp.acme.example:587"],
            },
        )


class _HeldPool:
    """
    Stands in for the spool's L{ThreadPool}: it holds each job until the test
    runs it, and like a stopped L{ThreadPool} it drops work handed to it after
    L{stop}.
    """

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[[], Any], Deferred[Any]]] = []
        self.stopped = False

    def start(self) -> None:
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True

    def run(self, work: Callable[[], Any]) -> Deferred[Any]:
        done: Deferred[Any] = Deferred()
        if not self.stopped:
            self.jobs.append((work, done))
        return done

    def runAll(self) -> None:
        while self.jobs:
            work, done = self.jobs.pop(0)
            maybeDeferred(work).chainDeferred(done)


class SpoolThreadTests(SynchronousTestCase):
    """
    The spool's thread outlives the spool.
    """

    def test_stopUnderLoad(self) -> None:
        """
        When ace-mail stops while a group commit runs and more messages wait
        for the next one, the thread is kept until the spool has written
        them and closed: the stop ends, and every waiting add is answered.
        """
        pool = _HeldPool()
        spool = Spool.open(self.mktemp(), pool.run)
        top = MultiService()
        ThreadPoolService(pool, spool.close).setServiceParent(top)
        Queue(
            Clock(), spool, lambda *args: Deferred(), hostname="test"
        ).setServiceParent(top)
        top.startService()
        envelope = Envelope("agent@example.com", ["a@example.net"])
        message = b"Subject: hi\r\n\r\nhello\r\n"
        adds = [spool.add(envelope, message, 1.0) for n in range(3)]
        stopped = top.stopService()
        pool.runAll()
        self.successResultOf(stopped)
        self.assertTrue(pool.stopped)
        for added in adds:
            self.successResultOf(added)


class BacklogTests(SynchronousTestCase):
    """
    L{ace_mail._tapparts.withBacklog}.
    """

    def test_added(self) -> None:
        """
        A TCP or TLS endpoint without a backlog gets the proxy's; one that
        names its own, or a UNIX socket, is left alone.
        """
        self.assertEqual(withBacklog("tcp:25"), "tcp:25:backlog=1024")
        self.assertEqual(
            withBacklog("tcp:2525:interface=127.0.0.1"),
            "tcp:2525:interface=127.0.0.1:backlog=1024",
        )
        self.assertEqual(withBacklog("tcp:25:backlog=10"), "tcp:25:backlog=10")
        self.assertEqual(withBacklog("unix:/run/ace.sock"), "unix:/run/ace.sock")


class NodeNameTests(SynchronousTestCase):
    """
    L{ace_mail._nodename.nodeName}: each node's name, kept in its data
    directory.
    """

    def test_createdOnceAndKept(self) -> None:
        """
        The first start writes the host's name and six random hex digits to
        C{node-name}, fsync'd with its directory; later starts read it.
        """
        dataDir = self.mktemp()
        os.makedirs(dataDir)
        synced: list[tuple[int, int]] = []
        realFsync = os.fsync

        def fsync(fd: int) -> None:
            synced.append((os.fstat(fd).st_dev, os.fstat(fd).st_ino))
            realFsync(fd)

        self.patch(_nodename.os, "fsync", fsync)
        self.patch(_nodename.socket, "gethostname", lambda: "mx_1.example")
        name = _nodename.nodeName(dataDir)

        self.assertRegex(name, r"^mx-1\.example-[0-9a-f]{6}$")
        path = os.path.join(dataDir, "node-name")
        with open(path) as f:
            self.assertEqual(f.read(), f"{name}\n")
        for written in (path, dataDir):
            self.assertIn((os.stat(written).st_dev, os.stat(written).st_ino), synced)
        self.assertEqual(sorted(os.listdir(dataDir)), ["node-name"])
        self.assertEqual(_nodename.nodeName(dataDir), name)

    def test_garbledRefused(self) -> None:
        """
        An empty file, or one that holds no name, stops start-up with a
        sentence naming the file.
        """
        for content in (b"", b"\n", b"two words\n", b"\xff\xfe\x00node\n"):
            dataDir = self.mktemp()
            os.makedirs(dataDir)
            path = os.path.join(dataDir, "node-name")
            with open(path, "wb") as f:
                f.write(content)
            with self.assertRaises(_nodename.NodeNameError) as caught:
                _nodename.nodeName(dataDir)
            message = str(caught.exception)
            self.assertIn(f"{path}: expected one line with this node's name", message)
            self.assertNotIn("\n", message)

    def test_garbledStopsStartUp(self) -> None:
        """
        C{twistd ace-mail} does not start with a garbled node-name file.
        """
        dataDir = self.mktemp()
        os.makedirs(dataDir)
        with open(os.path.join(dataDir, "node-name"), "w") as f:
            f.write("!\n")
        options = tap.Options()
        options.parseOptions(["--dataDir", dataDir, "--api", "tcp:0"])
        with self.assertRaises(SystemExit) as caught:
            tap.makeService(options, reactor=MemoryReactorClock())
        self.assertIn("node-name: expected one line", str(caught.exception.code))


_ACCOUNT = """
[[entrance]]
name = "acme"
address = "support@acme.example"

  [[entrance.account]]
  name = "acme-pop"
  host = "127.0.0.1"
  tls = "none"
  allowPlaintext = true
  username = "support"
  password = "secret"
"""


@implementer(ILeases)
class _LeasingStore(SQLiteContactStore):
    """
    A SQLite store that also keeps leases, as PostgreSQL's does.
    """

    node = "unset"
    holds: list[tuple[str, float]]

    def holdLease(self, name: str, seconds: float) -> Deferred[bool]:
        self.holds.append((name, seconds))
        return succeed(True)

    def releaseLease(self, name: str) -> Deferred[None]:
        return succeed(None)


class StoreChoiceTests(SynchronousTestCase):
    """
    C{--store}: which contact store a node opens, and what it does with it.
    """

    def make(self, *argv: str) -> tuple[Any, str]:
        dataDir = self.mktemp()
        config = self.mktemp()
        with open(config, "w") as f:
            f.write(_ACCOUNT)
        options = tap.Options()
        options.parseOptions(
            ["--dataDir", dataDir, "--api", "tcp:0", "--config", config, *argv]
        )
        return tap.makeService(options, reactor=MemoryReactorClock()), dataDir

    def pollers(self, service: Any) -> list[AccountPoller]:
        return [
            poller
            for part in service
            if isinstance(part, MultiService)
            for poller in part
            if isinstance(poller, AccountPoller)
        ]

    def test_sqliteHasNoLeases(self) -> None:
        """
        With SQLite, the default, the node polls its accounts without
        leases, and its node name is made all the same.
        """
        service, dataDir = self.make()
        [poller] = self.pollers(service)
        self.assertIsNone(poller.status().lease)
        self.assertTrue(os.path.exists(os.path.join(dataDir, "contacts.sqlite3")))
        self.assertTrue(os.path.exists(os.path.join(dataDir, "node-name")))

    def test_postgresqlOpened(self) -> None:
        """
        A PostgreSQL URI opens the shared store with this node's name and
        the originals directory in the data directory; its pollers hold
        leases in it; the start is logged with the node and without the
        password; no SQLite file is made.
        """
        opened: list[tuple[str, str, str]] = []
        stores: list[_LeasingStore] = []
        elsewhere = self.mktemp()
        os.makedirs(elsewhere)

        def open_(dsn: str, *, node: str, originalsDirectory: str) -> _LeasingStore:
            opened.append((dsn, node, originalsDirectory))
            store = _LeasingStore.open(os.path.join(elsewhere, "c.sqlite3"))
            store.node = node
            store.holds = []
            stores.append(store)
            return store

        self.patch(_tapparts.PostgresContactStore, "open", open_)
        uri = "postgresql://ace:hunter2@127.0.0.1:5432/ace"
        with capturedLogs() as events:
            service, dataDir = self.make("--store", uri, "--accountLease", "40s")

        with open(os.path.join(dataDir, "node-name")) as f:
            node = f.read().strip()
        originals = os.path.join(os.path.abspath(dataDir), "originals")
        self.assertEqual(opened, [(uri, node, originals)])
        [poller] = self.pollers(service)
        self.assertEqual(
            poller.status().lease, "not held yet: waiting for the store's first answer"
        )
        poller.startService()
        self.assertEqual(poller.status().lease, f"held by this node, {node}")
        self.assertEqual(stores[0].holds, [("account:acme-pop", 40.0)])
        self.successResultOf(poller.stopService())
        self.assertFalse(os.path.exists(os.path.join(dataDir, "contacts.sqlite3")))
        [started] = [
            formatEvent(e) for e in events if "starting as node" in formatEvent(e)
        ]
        self.assertIn(f"starting as node {node}:", started)
        self.assertIn("contacts in postgresql://ace:***@127.0.0.1:5432/ace,", started)
        self.assertNotIn("hunter2", "".join(formatEvent(e) for e in events))

    def test_unreachableHidesPassword(self) -> None:
        """
        A PostgreSQL that cannot be reached stops start-up with one
        sentence that names --store and not the password.
        """
        with self.assertRaises(SystemExit) as caught:
            self.make("--store", "postgresql://ace:hunter2@127.0.0.1:1/ace")
        message = str(caught.exception.code)
        self.assertTrue(message.startswith("ace-mail: --store: "), message)
        self.assertIn("127.0.0.1:1", message)
        self.assertNotIn("hunter2", message)
        self.assertNotIn("\n", message)

    def test_badOptionHidesPassword(self) -> None:
        """
        A URI that libpq refuses is a start-up error naming --store, once,
        without the password.
        """
        with self.assertRaises(SystemExit) as caught:
            self.make("--store", "postgresql://ace:hunter2@127.0.0.1/ace?bogus=1")
        message = str(caught.exception.code)
        self.assertEqual(message.count("--store"), 1, message)
        self.assertNotIn("hunter2", message)

    def test_errorMessagePasswordMasked(self) -> None:
        """
        Should a store's complaint quote the password, start-up still does
        not show it.
        """

        def open_(dsn: str, **kwargs: Any) -> None:
            raise ContactStoreError(f"cannot log in to {dsn} with h%nter2 (h%nter2)")

        self.patch(_tapparts.PostgresContactStore, "open", open_)
        with self.assertRaises(SystemExit) as caught:
            self.make("--store", "postgresql://ace:h%25nter2@127.0.0.1/ace")
        message = str(caught.exception.code)
        self.assertNotIn("nter2", message)
        self.assertIn(
            "--store: cannot log in to postgresql://ace:***@127.0.0.1/ace", message
        )

    def test_webhookRefused(self) -> None:
        """
        The command line refuses --webhookUrl with a PostgreSQL store.
        """
        with self.assertRaises(SystemExit) as caught:
            tap.Options().parseOptions(
                [
                    "--store",
                    "postgresql://ace:hunter2@127.0.0.1/ace",
                    "--webhookUrl",
                    "https://ace.example/hook",
                ]
            )
        message = str(caught.exception.code)
        self.assertIn("--webhookUrl cannot be used with a PostgreSQL --store", message)
        self.assertNotIn("hunter2", message)

    def test_realPostgresql(self) -> None:
        """
        With a real PostgreSQL, C{--store} opens the shared store, which
        keeps leases, so that the node's pollers hold their accounts' leases
        in it.
        """
        dsn = schemaDsn(self)
        if not isUri(dsn):
            raise SkipTest(f"--store takes a URI; {DSN_VARIABLE} is not one.")
        service, dataDir = self.make("--store", dsn)
        [store] = [
            part.close.__self__
            for part in service
            if isinstance(part, Closing)
            and isinstance(getattr(part.close, "__self__", None), PostgresContactStore)
        ]
        self.addCleanup(store.close)
        with open(os.path.join(dataDir, "node-name")) as f:
            self.assertEqual(store.node, f.read().strip())
        [poller] = self.pollers(service)
        self.assertEqual(
            poller.status().lease, "not held yet: waiting for the store's first answer"
        )
        self.assertFalse(os.path.exists(os.path.join(dataDir, "contacts.sqlite3")))
