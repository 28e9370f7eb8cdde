# -*- test-case-name: tests.test_config -*-
"""
The table of ace-mail's parameters: each one's name, what it takes, its
default and its help, shared by the command line and the config file.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Callable
from urllib.parse import urlsplit

from attrs import frozen

_HOST = re.compile(
    r"^(?:\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]+|"
    r"(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*\.?)$"
)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def host(value: Any) -> str:
    """
    A host name or an IP address, as operators write them.
    """
    if not isinstance(value, str) or not _HOST.match(value.strip()):
        raise ValueError(value)
    return value.strip().strip("[]")


def domainName(value: Any) -> str:
    """
    A domain name as it stands in a mail address: lower case, without a
    trailing dot, and not an IP address.
    """
    name = host(value).rstrip(".").lower()
    if not name or ":" in name or name.replace(".", "").isdigit():
        raise ValueError(value)
    return name


def port(value: Any) -> int:
    """
    A TCP port, 1 to 65535.
    """
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise ValueError(value)
        value = int(value)
    if not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(value)
    return value


def flag(value: Any) -> bool:
    """
    ACE's 1 or 0 (true and false are taken too).
    """
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def duration(value: Any) -> float:
    """
    A time in seconds, or with a unit: 300, 300s, 5m, 1.5h, 5d, 1w.
    """
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(value)
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not seconds > 0:
        raise ValueError(value)
    return seconds


def count(value: Any) -> int:
    """
    A whole number of at least 1.
    """
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or value < 1:
        raise ValueError(value)
    return value


def endpoint(value: Any) -> str:
    """
    A Twisted server endpoint string such as tcp:8025:interface=127.0.0.1;
    a bare port number means tcp:PORT.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(value)
    text = value.strip()
    if text.isdigit():
        return f"tcp:{port(text)}"
    kind = text.split(":", 1)[0].lower()
    if kind not in ("tcp", "tcp6", "ssl", "unix", "systemd") or ":" not in text:
        raise ValueError(value)
    return text


def tlsMode(value: Any) -> str:
    """
    How the sender uses TLS with an SMTP server.
    """
    if value not in ("none", "opportunistic", "required", "implicit"):
        raise ValueError(value)
    return str(value)


def hours(value: Any) -> float:
    """
    A number of hours, fractions allowed, greater than zero.
    """
    if isinstance(value, bool):
        raise ValueError(value)
    number = float(value)
    if not number > 0 or number != number or number == float("inf"):
        raise ValueError(value)
    return number


def networks(value: Any) -> tuple[str, ...]:
    """
    IP networks, comma-separated on the command line or a list in the file.
    """
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError(value)
    return tuple(
        str(ipaddress.ip_network(str(item).strip(), strict=False)) for item in items
    )


def path(value: Any) -> str:
    """
    The path of a file; that it can be read is checked when it is used.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(value)
    return value.strip()


def url(value: Any) -> str:
    """
    An http:// or https:// URL with a host.
    """
    if not isinstance(value, str):
        raise ValueError(value)
    parsed = urlsplit(value.strip())
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(value)
    if any(c.isspace() for c in value.strip()):
        raise ValueError(value)
    return value.strip()


_URI_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/?#@]*:)[^\s]*@")
_PASSWORD_OPTION = re.compile(r"(?i)\b(password\s*=\s*)('[^']*'|[^\s&]*)")


def maskPassword(text: str) -> str:
    """
    @return: C{text} with the password of every URI in it, and every
        C{password=} option, replaced by C{***}.
    """
    return _PASSWORD_OPTION.sub(r"\1***", _URI_PASSWORD.sub(r"\1***@", text))


def store(value: Any) -> str:
    """
    Where the contacts are kept: C{sqlite} (a file in the data directory),
    or the URI of a PostgreSQL database.
    """
    if not isinstance(value, str):
        raise ValueError(value)
    uri = value.strip()
    if uri == "sqlite":
        return uri
    parsed = urlsplit(uri)
    if parsed.scheme not in ("postgresql", "postgres"):
        raise ValueError(value)
    if any(c.isspace() for c in uri) or parsed.fragment:
        raise ValueError(value)
    return uri


def _maskedRepr(value: Any) -> str:
    return repr(maskPassword(value)) if isinstance(value, str) else repr(value)


def text(value: Any) -> str:
    """
    Any non-empty text on one line.
    """
    if not isinstance(value, str) or not value.strip() or "\n" in value:
        raise ValueError(value)
    return value.strip()


@frozen
class Parameter:
    """
    One setting.

    @ivar name: Its name: the ACE system parameter's name where there is one.
    @ivar convert: Checks and converts a value from the command line (text)
        or the file (any TOML value); raises L{ValueError} when it is wrong.
    @ivar expected: What a good value looks like, for error messages.
    @ivar default: Its value when given nowhere; L{None} means unset.
    @ivar help: What it does, in an operator's terms.
    @ivar show: Shows a wrong value in an error message.
    """

    name: str
    convert: Callable[[Any], Any]
    expected: str
    default: Any
    help: str
    show: Callable[[Any], str] = repr


_PORT = "a port number from 1 to 65535"
_HOST_EXPECTED = "a host name or an IP address"
_SECONDS = "a time such as 30, 30s, 5m, 1.5h or 5d, greater than zero"


def _timeout(name: str, default: float, what: str) -> Parameter:
    return Parameter(
        name, duration, _SECONDS, default, f"Seconds to wait {what} before giving up."
    )


PARAMETERS: tuple[Parameter, ...] = (
    Parameter(
        "dataDir",
        text,
        "a directory path",
        "ace-mail-data",
        "Directory for the queue, the API token and other state.",
    ),
    Parameter(
        "api",
        endpoint,
        "a Twisted endpoint string such as tcp:8025:interface=127.0.0.1",
        "tcp:8025:interface=127.0.0.1",
        "Where the HTTP API for ACE listens (a Twisted endpoint string).",
    ),
    Parameter(
        "webhookUrl",
        url,
        "an http:// or https:// URL",
        None,
        "Where ace-mail POSTs a JSON notification of each new contact and each "
        "bounce, one at a time and in order, until the receiver answers 2xx.",
    ),
    Parameter(
        "store",
        store,
        "sqlite or a URI such as postgresql://user:password@host:5432/database",
        "sqlite",
        "Where the contacts are kept: sqlite (a file in dataDir, for one node) "
        "or the URI of a PostgreSQL database that several ace-mail nodes share.",
        show=_maskedRepr,
    ),
    Parameter(
        "accountLease",
        duration,
        _SECONDS,
        60.0,
        "With a PostgreSQL store: how long a node's claim on a POP3 account "
        "lasts; when a node dies, another takes its accounts over after this.",
    ),
    Parameter(
        "heloName",
        host,
        _HOST_EXPECTED,
        None,
        "The name ace-mail gives in EHLO and in bounces (default: this host's name).",
    ),
    Parameter(
        "enableSmtpProxy",
        flag,
        "1 or 0",
        False,
        "ACE: 1 to run the SMTP proxy that carries agents' replies to customers.",
    ),
    Parameter(
        "smtpProxySmtpServer",
        host,
        _HOST_EXPECTED,
        None,
        "ACE: the real SMTP server that the proxy relays agents' replies through.",
    ),
    Parameter(
        "smtpProxySmtpPort", port, _PORT, 25, "ACE: the port of smtpProxySmtpServer."
    ),
    Parameter(
        "smtpProxyPort",
        endpoint,
        "a port number from 1 to 65535 or a Twisted endpoint string",
        "tcp:25",
        "ACE: where the SMTP proxy listens: a port, or an endpoint such as "
        "tcp:2525:interface=10.0.0.5.",
    ),
    Parameter(
        "smtpProxyRerouteName",
        domainName,
        "a domain name such as ace.example.com (not an IP address)",
        None,
        "ACE: the host name in contact addresses (contactID@HOSTNAME) that the "
        "company's mail server routes to this proxy.",
    ),
    Parameter(
        "outgoingMailSmtpServer1",
        host,
        _HOST_EXPECTED,
        "localhost",
        "ACE: SMTP server 1 for all outgoing mail.",
    ),
    Parameter(
        "outgoingMailSmtpPort1", port, _PORT, 25, "ACE: the port of SMTP server 1."
    ),
    Parameter(
        "outgoingMailSmtpServer2",
        host,
        _HOST_EXPECTED,
        None,
        "ACE: SMTP server 2; when set, mail is spread over both servers and each "
        "takes over when the other fails.",
    ),
    Parameter(
        "outgoingMailSmtpPort2",
        port,
        _PORT,
        None,
        "ACE: the port of SMTP server 2 (default 25).",
    ),
    Parameter(
        "outgoingMailSmtpTls",
        tlsMode,
        "none, opportunistic, required or implicit",
        "opportunistic",
        "TLS to servers 1 and 2: opportunistic uses STARTTLS when offered; "
        "required insists on it and verifies the certificate; implicit is TLS "
        "from the first byte (port 465).",
    ),
    Parameter(
        "minimalBackoffTime",
        duration,
        _SECONDS,
        300.0,
        "Wait before the first retry of a deferred message; doubles per attempt.",
    ),
    Parameter(
        "maximalBackoffTime",
        duration,
        _SECONDS,
        4000.0,
        "The longest wait between two retries of a deferred message.",
    ),
    Parameter(
        "maximalQueueLifetime",
        duration,
        _SECONDS,
        5 * 86400.0,
        "How long a message may wait in the queue before it is bounced.",
    ),
    Parameter(
        "serverSetAsideTime",
        duration,
        _SECONDS,
        60.0,
        "How long an SMTP server that failed is tried last instead of first.",
    ),
    Parameter(
        "smtpConnectionsPerServer",
        count,
        "a whole number of at least 1",
        10,
        "The most connections open to one SMTP server at a time.",
    ),
    Parameter(
        "deliveryConcurrency",
        count,
        "a whole number of at least 1",
        40,
        "The most messages being delivered at a time.",
    ),
    Parameter(
        "messageSizeLimit",
        count,
        "a size in bytes of at least 1",
        10240000,
        "The largest message accepted, in bytes.",
    ),
    Parameter(
        "entranceAddress",
        text,
        'an address such as "Support <support@example.com>"',
        None,
        "The address customers see as the sender of every reply: the default "
        "entrance of a single-tenant (standard) solution.",
    ),
    Parameter(
        "contactRetentionHours",
        hours,
        "a number of hours greater than zero",
        120.0,
        "How long after a contact is ended replies to it still reach the customer.",
    ),
    Parameter(
        "smtpProxyTrustedNetworks",
        networks,
        "IP networks such as 127.0.0.0/8,10.1.0.0/16",
        ("127.0.0.0/8", "::1/128"),
        "Clients that may send through the proxy without logging in: the company "
        "SMTP server that routes smtpProxyRerouteName here, and agents' hosts.",
    ),
    Parameter(
        "smtpProxyTlsCertificate",
        path,
        "the path of a PEM certificate file",
        None,
        "Certificate (with its chain) for STARTTLS on the proxy.",
    ),
    Parameter(
        "smtpProxyTlsKey",
        path,
        "the path of a PEM private key file",
        None,
        "Private key for smtpProxyTlsCertificate.",
    ),
    Parameter(
        "smtpProxyCredentials",
        path,
        "the path of a credentials file",
        None,
        "File of user:bcrypt-hash lines; its users may log in (after STARTTLS) "
        "and send from anywhere.",
    ),
    Parameter(
        "smtpProxyMaxRecipients",
        count,
        "a whole number of at least 1",
        100,
        "The most recipients of one message at the proxy.",
    ),
    Parameter(
        "smtpProxyMaxLineLength",
        count,
        "a length in bytes of at least 1",
        1000,
        "The longest line of a message at the proxy, with its CRLF (RFC 5321 "
        "says 1000); a longer line refuses the message at the end of DATA.",
    ),
    Parameter(
        "smtpProxyMaxConnections",
        count,
        "a whole number of at least 1",
        200,
        "The most SMTP sessions at the proxy at a time.",
    ),
    Parameter(
        "smtpProxyMaxConnectionsPerClient",
        count,
        "a whole number of at least 1",
        20,
        "The most SMTP sessions at the proxy from one IP address.",
    ),
    Parameter(
        "autoAnswerLimit",
        count,
        "a whole number of at least 1",
        3,
        "The most automatic answers one sender address gets per autoAnswerWindow.",
    ),
    Parameter(
        "autoAnswerWindow",
        duration,
        _SECONDS,
        86400.0,
        "The time window of autoAnswerLimit.",
    ),
    _timeout("smtpProxyIdleTimeout", 300.0, "for a proxy client's next command"),
    _timeout(
        "smtpProxyDataTimeout", 600.0, "for more message data from a proxy client"
    ),
    _timeout("smtpConnectTimeout", 30.0, "for a TCP connection to an SMTP server"),
    _timeout("smtpHeloTimeout", 300.0, "for the greeting and the reply to EHLO"),
    _timeout("smtpMailTimeout", 300.0, "for the reply to MAIL FROM"),
    _timeout("smtpRcptTimeout", 300.0, "for the reply to RCPT TO"),
    _timeout("smtpDataInitTimeout", 120.0, "for the reply to DATA"),
    _timeout("smtpDataXferTimeout", 180.0, "for the server to take more message data"),
    _timeout("smtpDataDoneTimeout", 600.0, "for the reply to the final dot"),
)
