# -*- test-case-name: tests.test_tap -*-
"""
The twistd plugin's options and the one place where every part of ace-mail
is put together into a single service.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from functools import partial
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.threadpool import ThreadPool
from twisted.web.server import Site

from ace_mail import __version__
from ace_mail._apiendpoint import ENDPOINT_FILE, AnnouncedEndpoint
from ace_mail._nodename import NodeNameError, nodeName
from ace_mail._parameters import PARAMETERS, Parameter, maskPassword
from ace_mail._services import (
    AfterRecovery,
    Closing,
    Listener,
    ThreadPoolService,
    purgeService,
)
from ace_mail._tapparts import entranceMap, openStore, outgoingRoutes, proxyService
from ace_mail.accounts import AccountPoller, AccountStatus
from ace_mail.api import Api, LimitedRequest
from ace_mail.apicontacts import ContactEndpoints
from ace_mail.config import ConfigError, Settings, load
from ace_mail.dkim import Signer
from ace_mail.envelope import Envelope, MessageSource, Outcome, Reply
from ace_mail.intake import Intake
from ace_mail.metrics import Metrics
from ace_mail.pages import Monitor
from ace_mail.queue import Queue
from ace_mail.sender import Sender, Timeouts
from ace_mail.spool import Spool, SpoolLocked
from ace_mail.store import ContactStoreError, ILeases, SQLiteWebhookOutbox
from ace_mail.webhook import Notifier, bounceRecorder, openOutbox

_log = Logger()


def _helpWithDefault(parameter: Parameter) -> str:
    text, default = parameter.help, parameter.default
    if default is None or default is False:
        return text
    if default is True:
        return f"{text} [default: 1]"
    if isinstance(default, tuple):
        return f"{text} [default: {','.join(default)}]"
    if isinstance(default, float):
        unit = "h" if parameter.name.endswith("Hours") else "s"
        return f"{text} [default: {default:g}{unit}]"
    return f"{text} [default: {default}]"


class Options(usage.Options):
    """
    The command line of C{twistd ace-mail}.
    """

    synopsis = "[options]"
    longdesc = (
        "ace-mail is the mail server of the ACE contact centre. Every ACE system "
        "parameter is an option of the same name; each may also be set in the "
        "TOML file given with --config, and the command line wins over the file. "
        "Times take a unit: 30s, 5m, 1.5h, 5d."
    )
    optParameters = [
        [
            "config",
            None,
            None,
            "A TOML file with any of these parameters, plus apiToken, credentials and [[dkim]] keys.",
        ]
    ] + [[p.name, None, None, _helpWithDefault(p)] for p in PARAMETERS]

    def opt_version(self) -> None:
        """
        Print the version of ace-mail and exit.
        """
        print(f"ace-mail {__version__}")
        sys.exit(0)

    def parseOptions(self, options: Any = None) -> None:
        """
        Parse and check the options; a mistake ends the program with one
        sentence instead of the whole help text.
        """
        try:
            super().parseOptions(options)
        except ConfigError as e:
            raise SystemExit(f"twistd ace-mail: {e}") from None
        except usage.UsageError as e:
            raise SystemExit(
                f"twistd ace-mail: {e}; see `twistd ace-mail --help`."
            ) from None

    def postOptions(self) -> None:
        commandLine = {p.name: self[p.name] for p in PARAMETERS}
        self.settings = load(commandLine, self["config"])


def _apiToken(settings: Settings, dataDir: str) -> str:
    """
    The API's bearer token: the one configured, or the one in the data
    directory, made on the first start.
    """
    if settings.apiToken is not None:
        return settings.apiToken
    path = os.path.join(dataDir, "api-token")
    try:
        with open(path, encoding="ascii") as f:
            token = f.read().strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token + "\n")
        f.flush()
        os.fsync(f.fileno())
    _log.info("Wrote a new API token to {path}", path=path)
    return token


def _prepareDataDir(path: str) -> str:
    path = os.path.abspath(path)
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        probe = os.path.join(path, ".writable")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise SystemExit(
            f"ace-mail: --dataDir: cannot use {path} as the data directory: "
            f"{e.strerror or e}."
        ) from None
    return path


def _incomingDir(dataDir: str) -> str:
    """
    The directory where POP3 messages are written while they are fetched.
    """
    path = os.path.join(dataDir, "incoming")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _nodeName(dataDir: str) -> str:
    try:
        return nodeName(dataDir)
    except NodeNameError as e:
        raise SystemExit(f"ace-mail: {e}") from None


def _openOutbox(
    settings: Settings, dataDir: str, top: MultiService
) -> SQLiteWebhookOutbox | None:
    """
    The webhook's outbox, in the SQLite store; a PostgreSQL store has none,
    as the settings refuse a webhook with it.
    """
    if settings["store"] != "sqlite":
        return None
    try:
        outbox = openOutbox(
            os.path.join(dataDir, "contacts.sqlite3"), settings["webhookUrl"]
        )
    except ContactStoreError as e:
        raise SystemExit(f"ace-mail: {e}") from None
    Closing(outbox.close).setServiceParent(top)
    return outbox


def makeService(options: Options, reactor: Any = None) -> IService:
    """
    Build ace-mail from its checked options.

    @param options: The parsed L{Options}; C{options.settings} holds them.
    @param reactor: The reactor to use; the global one when L{None}.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    settings: Settings = options.settings
    dataDir = _prepareDataDir(settings["dataDir"])
    heloName = settings["heloName"] or socket.getfqdn()
    top = MultiService()

    pool = ThreadPool(minthreads=1, maxthreads=1, name="ace-mail-spool")
    try:
        spool = Spool.open(
            os.path.join(dataDir, "queue"), partial(deferToThreadPool, reactor, pool)
        )
    except SpoolLocked:
        raise SystemExit(
            f"ace-mail: --dataDir: {dataDir} is in use by another running ace-mail; "
            "give each process its own data directory."
        ) from None
    ThreadPoolService(pool, spool.close).setServiceParent(top)
    node = _nodeName(dataDir)
    sender = Sender(
        reactor,
        heloName=heloName,
        timeouts=Timeouts(
            connect=settings["smtpConnectTimeout"],
            helo=settings["smtpHeloTimeout"],
            starttls=settings["smtpHeloTimeout"],
            mail=settings["smtpMailTimeout"],
            rcpt=settings["smtpRcptTimeout"],
            dataInit=settings["smtpDataInitTimeout"],
            dataXfer=settings["smtpDataXferTimeout"],
            dataDone=settings["smtpDataDoneTimeout"],
        ),
        connectionsPerServer=settings["smtpConnectionsPerServer"],
        setAside=settings["serverSetAsideTime"],
    )
    Closing(sender.stop).setServiceParent(top)
    routes = outgoingRoutes(settings)

    def deliver(
        envelope: Envelope, message: MessageSource, queueId: str
    ) -> Deferred[Outcome]:
        route = routes.get(envelope.route)
        if route is None:
            reply = Reply(451, f"4.3.5 route {envelope.route!r} is not configured")
            return succeed(
                Outcome("", reply, refused={r: reply for r in envelope.recipients})
            )
        return sender.send(route, envelope, message, queueId)

    signer = Signer(settings.dkimKeys) if settings.dkimKeys else None
    store = openStore(settings["store"], dataDir, node)
    Closing(store.close).setServiceParent(top)
    webhookUrl = settings["webhookUrl"]
    outbox = _openOutbox(settings, dataDir, top)
    metrics = Metrics(reactor)
    queue = Queue(
        reactor,
        spool,
        deliver,
        minimalBackoff=settings["minimalBackoffTime"],
        maximalBackoff=settings["maximalBackoffTime"],
        lifetime=settings["maximalQueueLifetime"],
        concurrency=settings["deliveryConcurrency"],
        hostname=heloName,
        signer=signer.sign if signer is not None else None,
        onBounce=bounceRecorder(reactor, outbox) if outbox and webhookUrl else None,
        onAttempt=metrics.attempted,
    )
    queue.setServiceParent(top)
    metrics.watchQueue(queue, routes)

    retention = settings["contactRetentionHours"] * 3600.0
    purgeService(reactor, store, retention).setServiceParent(top)
    entrances = entranceMap(settings)
    rerouteName = settings["smtpProxyRerouteName"] or heloName
    proxy = None
    if settings["enableSmtpProxy"]:
        proxy = proxyService(reactor, settings, store, entrances, queue, heloName)
        proxy.setServiceParent(top)
        metrics.watchProxy(proxy.factory)
    intake = Intake(
        reactor=reactor,
        store=store,
        queue=queue,
        entrances=settings.entrances,
        rerouteName=rerouteName,
        incomingDir=_incomingDir(dataDir),
        answerLimit=settings["autoAnswerLimit"],
        answerWindow=settings["autoAnswerWindow"],
        retention=retention,
        onTaken=metrics.taken,
    )
    pollers = AfterRecovery("the intake of POP3 mail", intake.recover)
    accountPollers = [
        AccountPoller(
            reactor,
            account,
            intake,
            leases=store if ILeases.providedBy(store) else None,
            leaseSeconds=settings["accountLease"],
        )
        for entrance in settings.entrances
        for account in entrance.accounts
    ]
    for poller in accountPollers:
        poller.setServiceParent(pollers)
    pollers.setServiceParent(top)
    metrics.watchAccounts(accountPollers)

    def accountStatus() -> list[AccountStatus]:
        return [poller.status() for poller in accountPollers]

    contacts = ContactEndpoints(
        reactor,
        store,
        entrances,
        entranceRoutes={e.name: e.routeName for e in settings.entrances},
        rerouteName=rerouteName,
        retentionSeconds=retention,
        messageSizeLimit=settings["messageSizeLimit"],
        enqueue=queue.enqueue,
        deliver=intake.deliver,
        accounts=accountStatus,
    )
    if outbox is not None and webhookUrl is not None:
        Notifier(
            reactor,
            outbox,
            webhookUrl,
            showContact=contacts.show,
            secret=settings.webhookSecret,
        ).setServiceParent(top)
    token = _apiToken(settings, dataDir)
    api = Api(
        reactor,
        queue,
        token,
        heloName=heloName,
        messageSizeLimit=settings["messageSizeLimit"],
        moreRoutes=contacts.routes(),
    )
    monitor = Monitor(
        reactor,
        metrics,
        queue=queue,
        sender=sender,
        routes=routes,
        store=store,
        retention=retention,
        accounts=accountStatus,
        token=token,
        tokenPath=os.path.join(dataDir, "api-token"),
        hostname=heloName,
        node=node,
    )
    site = Site(monitor.resource(api.resource()))
    monitor.addListener("API", site)
    if proxy is not None:
        monitor.addListener("SMTP proxy", proxy.factory)
    site.requestFactory = LimitedRequest.withLimit(
        2 * settings["messageSizeLimit"] + 65536
    )
    site.noisy = False
    try:
        endpoint = AnnouncedEndpoint(
            serverFromString(reactor, settings["api"]),
            os.path.join(dataDir, ENDPOINT_FILE),
            tls=settings["api"].startswith("ssl:"),
        )
    except (ValueError, OSError) as e:
        raise SystemExit(
            f"ace-mail: --api: cannot use {settings['api']!r}: {e}."
        ) from None
    Listener("API", settings["api"], endpoint, site).setServiceParent(top)
    _log.info(
        "ace-mail {version} starting as node {node}: data in {dataDir}, contacts "
        "in {store}, API on {api}, outgoing via {servers}",
        version=__version__,
        node=node,
        dataDir=dataDir,
        store=maskPassword(settings["store"]),
        api=settings["api"],
        servers=", ".join(s.describe() for s in routes["outgoing"].servers),
    )
    return top
