# -*- test-case-name: tests.test_sender -*-
"""
The settings of the outgoing sender: servers, routes and timeouts.
"""

from __future__ import annotations

from typing import Iterable

from attrs import field, frozen
from attrs.validators import in_

TLS_MODES = ("none", "opportunistic", "required", "implicit")


def _servers(servers: Iterable[Server]) -> tuple[Server, ...]:
    """
    Convert servers to a tuple; a typed converter, for mypy's attrs plugin.
    """
    return tuple(servers)


@frozen
class Server:
    """
    One upstream SMTP server that messages can be relayed through.

    @ivar name: The name the logs use, for example C{"outgoing/1"}.
    @ivar host: The host name or address to connect to.
    @ivar port: The TCP port to connect to.
    @ivar tls: C{"none"} never uses TLS; C{"opportunistic"} uses STARTTLS
        when the server offers it, without verifying the certificate;
        C{"required"} insists on STARTTLS and verifies the certificate;
        C{"implicit"} speaks TLS from the first byte (SMTPS, port 465) and
        verifies the certificate.
    @ivar username: The AUTH user name, or C{None} to send without AUTH.
    @ivar password: The AUTH password.
    """

    name: str
    host: str
    port: int
    tls: str = field(default="opportunistic", validator=in_(TLS_MODES))
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        """
        @return: The server's name and address, as the logs show it, for
            example C{"outgoing/1 smtp1.example.com:25"}.
        """
        return f"{self.name} {self.host}:{self.port}"


@frozen
class Route:
    """
    A named list of servers that share the work of one kind of mail.

    @ivar name: The route's name, for example C{"outgoing"}.
    @ivar servers: The servers, at least one; deliveries spread across the
        healthy ones and fail over to the others.
    """

    name: str
    servers: tuple[Server, ...] = field(converter=_servers)


@frozen
class Timeouts:
    """
    How long to wait, in seconds, for a connection and for each reply.

    The defaults are Postfix's (C{smtp_connect_timeout},
    C{smtp_helo_timeout} and so on).

    @ivar connect: For the TCP connection to be made.
    @ivar helo: For the greeting and for each reply to EHLO or HELO (and
        to AUTH).
    @ivar starttls: For the reply to STARTTLS.
    @ivar mail: For the reply to MAIL FROM.
    @ivar rcpt: For the reply to each RCPT TO.
    @ivar dataInit: For the reply to DATA.
    @ivar dataXfer: For the message content to make progress while it is
        being sent.
    @ivar dataDone: For the reply to the final ".".
    @ivar rset: For the reply to RSET.
    @ivar quit: For the reply to QUIT.
    """

    connect: float = 30
    helo: float = 300
    starttls: float = 300
    mail: float = 300
    rcpt: float = 300
    dataInit: float = 120
    dataXfer: float = 180
    dataDone: float = 600
    rset: float = 20
    quit: float = 300


@frozen
class ServerStatus:
    """
    A snapshot of one server's health and connections.

    @ivar name: The server's name.
    @ivar describe: The server's name and address.
    @ivar healthy: C{False} while the server is set aside after a failure.
    @ivar setAsideUntil: The reactor time when the server stops being set
        aside, or C{None} if it is not.
    @ivar openConnections: The connections open or being opened, busy or
        idle.
    @ivar idleConnections: The open connections waiting for a message.
    """

    name: str
    describe: str
    healthy: bool
    setAsideUntil: float | None
    openConnections: int
    idleConnections: int
