# -*- test-case-name: tests.test_ctl -*-
"""
The API's listening endpoint, which tells C{ace-mail-ctl} where to find it.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from zope.interface import implementer

_log = Logger()

ENDPOINT_FILE = "api-endpoint"
"""
The file in the data directory that holds the API's URL, such as
C{http://127.0.0.1:8025}, or C{unix:/path} for a UNIX socket.
"""


def apiUrl(address: Any, tls: bool) -> str | None:
    """
    @return: The URL at which a client on this host reaches a listening
        address: a wildcard address becomes the loopback one.  L{None} for
        an address of another kind.
    """
    if isinstance(address, UNIXAddress) and address.name is not None:
        name = address.name
        return "unix:" + (name.decode("utf-8") if isinstance(name, bytes) else name)
    if isinstance(address, IPv4Address):
        host = "127.0.0.1" if address.host in ("0.0.0.0", "") else address.host
    elif isinstance(address, IPv6Address):
        host = "[::1]" if address.host in ("::", "") else f"[{address.host}]"
    else:
        return None
    scheme = "https" if tls else "http"
    return f"{scheme}://{host}:{address.port}"


@implementer(IStreamServerEndpoint)
class AnnouncedEndpoint:
    """
    A server endpoint that, once it listens, writes its URL to a file.
    """

    def __init__(self, endpoint: IStreamServerEndpoint, path: str, tls: bool) -> None:
        """
        @param endpoint: The endpoint that listens.
        @param path: The file to write, replaced whole.
        @param tls: Whether the endpoint speaks TLS.
        """
        self._endpoint = endpoint
        self._path = path
        self._tls = tls

    def listen(self, protocolFactory: Any) -> Deferred[IListeningPort]:
        listening: Deferred[IListeningPort] = self._endpoint.listen(protocolFactory)
        return listening.addCallback(self._announce)

    def _announce(self, port: IListeningPort) -> IListeningPort:
        url = apiUrl(port.getHost(), self._tls)
        if url is None:
            _log.info(
                "The API listens on {address}, which ace-mail-ctl cannot use; give "
                "it --api",
                address=port.getHost(),
            )
            return port
        partial = self._path + ".new"
        with open(partial, "w", encoding="utf-8") as f:
            f.write(url + "\n")
        os.replace(partial, self._path)
        return port
