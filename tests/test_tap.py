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
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from ace_mail import tap
from ace_mail._parameters import PARAMETERS
from ace_mail._services import ThreadPoolService
from ace_mail._tapparts import outgoingRoutes, withBacklog
from ace_mail.config import load
from ace_mail.envelope import Envelope
from ace_mail.queue import Queue
from ace_mail.spool import Spool


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
