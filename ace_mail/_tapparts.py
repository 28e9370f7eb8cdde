# -*- test-case-name: tests.test_tap -*-
"""
The parts that L{ace_mail.tap} builds from the settings: the contact store,
the routes of outgoing mail, the entrances and the SMTP proxy's listener.
"""

from __future__ import annotations

import os
from typing import Any, Sequence
from urllib.parse import unquote, urlsplit

from twisted.internet.endpoints import serverFromString
from twisted.internet.ssl import PrivateCertificate
from twisted.internet.threads import deferToThreadPool

from ace_mail._entrances import SmtpServerConfig
from ace_mail._parameters import maskPassword
from ace_mail._services import Listener
from ace_mail.config import Settings
from ace_mail.proxy import (
    CredentialsFileChecker,
    CredentialsFileError,
    ProxyFactory,
    ProxySettings,
)
from ace_mail.queue import Queue
from ace_mail.sender import Route, Server
from ace_mail.store import (
    ContactStoreError,
    Entrance,
    IContactStore,
    IIntakeStore,
    PostgresContactStore,
    SQLiteContactStore,
)


def openStore(location: str, dataDir: str, node: str) -> IIntakeStore:
    """
    Open the contact store that --store names: the SQLite file in the data
    directory, or a PostgreSQL database shared with other nodes.

    @param location: C{sqlite}, or a C{postgresql://} URI.
    @param node: This node's name, for its leases in a shared store.
    @raise SystemExit: With one sentence, never showing the password, when
        the store cannot be opened.
    """
    try:
        if location == "sqlite":
            return SQLiteContactStore.open(os.path.join(dataDir, "contacts.sqlite3"))
        return PostgresContactStore.open(
            location, node=node, originalsDirectory=os.path.join(dataDir, "originals")
        )
    except ContactStoreError as e:
        message = maskPassword(str(e))
        password = urlsplit(location).password
        for spelling in {password, unquote(password or "")} - {None, ""}:
            message = message.replace(str(spelling), "***")
        if location != "sqlite" and not message.startswith("--store"):
            message = f"--store: {message}"
        raise SystemExit(f"ace-mail: {message}") from None


def outgoingRoutes(settings: Settings) -> dict[str, Route]:
    """
    The routes of outgoing mail: C{outgoing} over servers 1 and 2, C{proxy}
    over smtpProxySmtpServer when it is set, and one for each entrance that
    has SMTP servers of its own.
    """
    outgoing = [
        SmtpServerConfig(
            settings["outgoingMailSmtpServer1"],
            settings["outgoingMailSmtpPort1"],
            settings["outgoingMailSmtpTls"],
            settings.outgoingMailSmtpUsername,
            settings.outgoingMailSmtpPassword,
        )
    ]
    if settings["outgoingMailSmtpServer2"] is not None:
        outgoing.append(
            SmtpServerConfig(
                settings["outgoingMailSmtpServer2"],
                settings["outgoingMailSmtpPort2"] or 25,
                settings["outgoingMailSmtpTls"],
                settings.outgoingMailSmtpUsername,
                settings.outgoingMailSmtpPassword,
            )
        )
    routes = {"outgoing": _route("outgoing", outgoing)}
    if settings["smtpProxySmtpServer"] is not None:
        real = SmtpServerConfig(
            settings["smtpProxySmtpServer"], settings["smtpProxySmtpPort"]
        )
        routes["proxy"] = _route("proxy", [real])
    for entrance in settings.entrances:
        if entrance.servers:
            routes[entrance.routeName] = _route(entrance.routeName, entrance.servers)
    return routes


def _route(name: str, servers: Sequence[SmtpServerConfig]) -> Route:
    return Route(
        name,
        tuple(
            Server(
                name=f"{name}/{number}",
                host=server.host,
                port=server.port,
                tls=server.tls,
                username=server.username,
                password=server.password,
            )
            for number, server in enumerate(servers, 1)
        ),
    )


def entranceMap(settings: Settings) -> dict[str, Entrance]:
    """
    @return: Each entrance as the store and the proxy know it, by name.
    """
    return {
        entrance.name: Entrance(entrance.name, entrance.address, entrance.displayName)
        for entrance in settings.entrances
    }


PROXY_BACKLOG = 1024
"""
The listen backlog of the proxy unless its endpoint string gives one:
Twisted's default of 50 leaves a burst of connections waiting on SYN
retries for minutes.
"""


def withBacklog(listen: str) -> str:
    """
    @return: The endpoint string C{listen}, with L{PROXY_BACKLOG} added when
        it is a TCP or TLS endpoint that names no backlog.
    """
    kind = listen.split(":", 1)[0].lower()
    if kind in ("tcp", "tcp6", "ssl") and "backlog=" not in listen:
        return f"{listen}:backlog={PROXY_BACKLOG}"
    return listen


def proxyService(
    reactor: Any,
    settings: Settings,
    store: IContactStore,
    entrances: dict[str, Entrance],
    queue: Queue,
    heloName: str,
) -> Listener:
    """
    The SMTP proxy's listener, with TLS and AUTH when they are configured.
    """
    listen = settings["smtpProxyPort"]
    proxySettings = ProxySettings(
        rerouteName=settings["smtpProxyRerouteName"],
        heloName=heloName,
        retentionSeconds=settings["contactRetentionHours"] * 3600.0,
        trustedNetworks=settings["smtpProxyTrustedNetworks"],
        maxMessageSize=settings["messageSizeLimit"],
        maxRecipients=settings["smtpProxyMaxRecipients"],
        maxLineLength=settings["smtpProxyMaxLineLength"],
        idleTimeout=settings["smtpProxyIdleTimeout"],
        dataTimeout=settings["smtpProxyDataTimeout"],
        maxConnections=settings["smtpProxyMaxConnections"],
        maxConnectionsPerClient=settings["smtpProxyMaxConnectionsPerClient"],
        allowedSenderDomains={
            entrance.name: entrance.allowedSenderDomains
            for entrance in settings.entrances
            if entrance.allowedSenderDomains
        },
        entranceRoutes={
            entrance.name: entrance.routeName
            for entrance in settings.entrances
            if entrance.servers
        },
    )
    tlsContext = None
    if settings["smtpProxyTlsCertificate"] is not None:
        tlsContext = _serverTls(
            settings["smtpProxyTlsCertificate"], settings["smtpProxyTlsKey"]
        )
    checker = None
    if settings["smtpProxyCredentials"] is not None:
        try:
            checker = CredentialsFileChecker(
                settings["smtpProxyCredentials"],
                lambda f: deferToThreadPool(reactor, reactor.getThreadPool(), f),
            )
        except CredentialsFileError as e:
            raise SystemExit(f"ace-mail: --smtpProxyCredentials: {e}") from None
    factory = ProxyFactory(
        reactor,
        proxySettings,
        store,
        entrances,
        queue,
        tlsContext=tlsContext,
        checker=checker,
        implicitTls=listen.startswith("ssl:"),
    )
    try:
        endpoint = serverFromString(reactor, withBacklog(listen))
    except (ValueError, OSError) as e:
        raise SystemExit(
            f"ace-mail: --smtpProxyPort: cannot use {listen!r}: {e}."
        ) from None
    return Listener("SMTP proxy", listen, endpoint, factory)


def _serverTls(certificatePath: str, keyPath: str) -> Any:
    """
    Load the proxy's certificate and key for STARTTLS.
    """
    pems = []
    for option, path in (
        ("--smtpProxyTlsCertificate", certificatePath),
        ("--smtpProxyTlsKey", keyPath),
    ):
        try:
            with open(path, "rb") as f:
                pems.append(f.read())
        except OSError as e:
            raise SystemExit(
                f"ace-mail: {option}: cannot read {path}: {e.strerror}."
            ) from None
    try:
        certificate = PrivateCertificate.loadPEM(pems[0] + b"\n" + pems[1])
    except Exception as e:
        raise SystemExit(
            f"ace-mail: --smtpProxyTlsCertificate and --smtpProxyTlsKey: {certificatePath} "
            f"and {keyPath} are not a matching PEM certificate and key ({e})."
        ) from None
    return certificate.options()
