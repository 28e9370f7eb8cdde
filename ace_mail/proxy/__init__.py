# -*- test-case-name: tests.test_proxy_server -*-
"""
The SMTP proxy: agents' replies to contact addresses go to the customers.

An agent answers a customer's email from their own mail client; the reply
is addressed to C{contactID@HOSTNAME} and reaches this proxy, which sends
the customer a copy from the entrance's address and relays any other
recipient unchanged. Only trusted networks and authenticated users may use
it.
"""

from ._auth import CredentialsFileChecker, CredentialsFileError, readCredentials
from ._factory import ProxyFactory
from ._policy import Refusal, RelayPolicy, checkRecipient
from ._server import ProxyProtocol
from ._settings import ProxySettings

__all__ = [
    "CredentialsFileChecker",
    "CredentialsFileError",
    "ProxyFactory",
    "ProxyProtocol",
    "ProxySettings",
    "Refusal",
    "RelayPolicy",
    "checkRecipient",
    "readCredentials",
]
