# -*- test-case-name: tests.test_accounts_tls -*-
"""
The TLS settings of a connection to a POP3 account's server.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL, crypto
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    optionsForClientTLS,
    trustRootFromCertificates,
)
from zope.interface import implementer

from .._entrances import AccountConfig
from ._protocol import POP3Error

_BEGIN = b"-----BEGIN CERTIFICATE-----"


def clientTLSOptions(account: AccountConfig) -> IOpenSSLClientConnectionCreator:
    """
    @return: How to start TLS to the account's server: verifying its
        certificate for the account's host against the platform's
        authorities or those of C{caFile}, unless C{verifyCertificate} is
        off.
    @raise POP3Error: When C{caFile} cannot be read or holds no
        certificate.
    """
    if not account.verifyCertificate:
        return _Unverified(account.host)
    if account.caFile is None:
        return optionsForClientTLS(account.host)
    return optionsForClientTLS(account.host, trustRoot=_loadAuthorities(account))


def _loadAuthorities(account: AccountConfig) -> Any:
    try:
        with open(account.caFile or "", "rb") as f:
            pem = f.read()
    except OSError as e:
        raise POP3Error(
            f"account {account.name}: cannot read caFile {account.caFile}: {e.strerror}"
        ) from None
    blocks = [_BEGIN + block for block in pem.split(_BEGIN)[1:]]
    try:
        certificates = [Certificate.loadPEM(block) for block in blocks]
    except crypto.Error:
        certificates = []
    if not certificates or len(certificates) != len(blocks):
        raise POP3Error(
            f"account {account.name}: caFile {account.caFile} holds no readable"
            " PEM certificates"
        )
    return trustRootFromCertificates(certificates)


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """
    TLS that names the server (SNI) but takes any certificate, for
    accounts with C{verifyCertificate = false}.
    """

    def __init__(self, host: str) -> None:
        isAddress = isIPAddress(host) or isIPv6Address(host)
        self._serverName = None if isAddress else host.encode("idna")
        self._context = CertificateOptions().getContext()

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        if self._serverName is not None:
            connection.set_tlsext_host_name(self._serverName)
        return connection
