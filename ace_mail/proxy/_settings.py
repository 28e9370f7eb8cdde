# -*- test-case-name: tests.test_proxy_server -*-
"""
The settings of the SMTP proxy, as one frozen value.
"""

from __future__ import annotations

from typing import Mapping

from attrs import field, frozen


@frozen(kw_only=True)
class ProxySettings:
    """
    How the SMTP proxy listens, whom it serves and what it accepts.

    @ivar rerouteName: The host name in C{contactID@HOSTNAME} (the ACE
        parameter smtpProxyRerouteName); compared without regard to case.
    @ivar heloName: The name the proxy gives in its greeting and EHLO reply.
    @ivar route: The queue route that replies and pass-through mail leave on.
    @ivar retentionSeconds: How long after a contact was ended replies to it
        are still accepted.
    @ivar trustedNetworks: The client networks that may send without
        authenticating, as L{ipaddress} network strings.
    @ivar maxMessageSize: The SIZE advertised and enforced, in bytes.
    @ivar maxRecipients: The most recipients one message may have.
    @ivar maxLineLength: The longest line of a message, in bytes including
        the CRLF (RFC 5321 says 1000).
    @ivar idleTimeout: Seconds of silence allowed between commands.
    @ivar dataTimeout: Seconds of silence allowed inside DATA.
    @ivar maxConnections: The most connections served at once.
    @ivar maxConnectionsPerClient: The most connections from one client
        address served at once.
    @ivar allowedSenderDomains: For each entrance name, the MAIL FROM domains
        that may answer its contacts; an entrance not named here, or named
        with no domains, accepts any sender.
    @ivar entranceRoutes: For each entrance with SMTP servers of its own,
        the route its customers' copies leave on instead of C{route}.
    """

    rerouteName: str
    heloName: str
    route: str = "proxy"
    retentionSeconds: float = 120 * 3600
    trustedNetworks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    maxMessageSize: int = 10240000
    maxRecipients: int = 100
    maxLineLength: int = 1000
    idleTimeout: float = 300
    dataTimeout: float = 600
    maxConnections: int = 200
    maxConnectionsPerClient: int = 20
    allowedSenderDomains: Mapping[str, tuple[str, ...]] = field(factory=dict)
    entranceRoutes: Mapping[str, str] = field(factory=dict)
