# -*- test-case-name: tests.test_config_entrances -*-
"""
The entrances of a multi-tenant installation, their SMTP servers and their
POP3 accounts, as the config file's C{[[entrance]]} tables give them.
"""

from __future__ import annotations

import string
from typing import Any, Callable

from attrs import frozen

from ace_mail import _parameters as kinds
from ace_mail._configfile import ConfigError, FileReader, readSecret
from ace_mail.address import isMailbox, parseMailbox

PLACEHOLDERS = frozenset(
    {"contactId", "customerName", "customerAddress", "subject", "entranceName"}
)


@frozen
class SmtpServerConfig:
    """
    One of an entrance's own outgoing SMTP servers.
    """

    host: str
    port: int
    tls: str = "opportunistic"
    username: str | None = None
    password: str | None = None


@frozen
class AccountConfig:
    """
    One POP3 mailbox that ace-mail empties into contacts.

    @ivar name: Unique over all entrances; it names the account in logs,
        status and the intake records.
    @ivar tls: C{"implicit"} (port 995), C{"starttls"} (STLS) or C{"none"}.
    @ivar apop: Log in with APOP instead of USER/PASS; never chosen merely
        because the server's greeting offers a challenge.
    @ivar keepOnServer: Leave each message on the server (its UIDL is
        remembered) instead of deleting it once it is safe.
    @ivar timeout: Seconds allowed for every step of a poll.
    """

    name: str
    entrance: str
    host: str
    port: int
    tls: str
    username: str
    password: str
    verifyCertificate: bool = True
    caFile: str | None = None
    apop: bool = False
    pollInterval: float = 60.0
    keepOnServer: bool = False
    maxMessageSize: int = 26214400
    timeout: float = 60.0


@frozen
class EntranceConfig:
    """
    The address customers see, and how its mail comes and goes.

    @ivar servers: The entrance's own outgoing SMTP servers; when empty, the
        route C{outgoing} (servers 1 and 2) serves it.
    @ivar autoAnswerText: The automatic answer's text, or L{None} for none.
    @ivar agentMailbox: A mailbox that gets the physical email of every new
        contact, for sites without ACE's router.
    """

    name: str
    address: str
    displayName: str
    servers: tuple[SmtpServerConfig, ...] = ()
    autoAnswerSubject: str = "Re: {subject} [#{contactId}]"
    autoAnswerText: str | None = None
    agentMailbox: str | None = None
    allowedSenderDomains: tuple[str, ...] = ()
    accounts: tuple[AccountConfig, ...] = ()

    @property
    def routeName(self) -> str:
        """
        @return: The queue route of the entrance's outgoing mail.
        """
        return f"entrance/{self.name}" if self.servers else "outgoing"


class _Table:
    """
    One table of the file, whose complaints name its keys' lines.
    """

    def __init__(
        self, reader: FileReader, name: str, index: int, data: Any, known: set[str]
    ) -> None:
        self.reader = reader
        self.name = name
        self.index = index
        if not isinstance(data, dict):
            raise reader.fail(name, "expected a table.", None)
        self.data = data
        for key in data:
            if key not in known:
                raise self.fail(
                    key, f"unknown key; expected one of {', '.join(sorted(known))}."
                )

    def fail(self, key: str, message: str) -> ConfigError:
        return self.reader.fail(key, message, self.name, self.index)

    def get(
        self, key: str, convert: Callable[[Any], Any], expected: str, default: Any
    ) -> Any:
        if key not in self.data:
            if default is _REQUIRED:
                raise self.fail(key, f"missing; expected {expected}.")
            return default
        try:
            return convert(self.data[key])
        except (ValueError, TypeError):
            raise self.fail(
                key, f"expected {expected}, got {self.data[key]!r}."
            ) from None

    def secret(self, key: str, required: bool) -> str | None:
        value = readSecret(self.reader, self.name, self.data, key, self.index)
        if value is None and required:
            raise self.fail(key, f"missing; expected {key} or {key}File.")
        return value


_REQUIRED = object()


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(value)
    return value


def _template(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(value)
    for _, name, _, _ in string.Formatter().parse(value):
        if name is not None and name not in PLACEHOLDERS:
            raise ValueError(value)
    return value


def _domains(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(value)
    return tuple(kinds.host(v).lower() for v in value)


_TEMPLATE = "a text whose placeholders are among " + ", ".join(
    "{" + p + "}" for p in sorted(PLACEHOLDERS)
)
_ENTRANCE_KEYS = {
    "name",
    "address",
    "agentMailbox",
    "allowedSenderDomains",
    "autoAnswerSubject",
    "autoAnswerText",
    "autoAnswerTextFile",
    "smtp",
    "account",
}
_SMTP_KEYS = {"host", "port", "tls", "username", "password", "passwordFile"}
_ACCOUNT_KEYS = {
    "name",
    "host",
    "port",
    "tls",
    "allowPlaintext",
    "verifyCertificate",
    "caFile",
    "username",
    "password",
    "passwordFile",
    "apop",
    "pollInterval",
    "keepOnServer",
    "maxMessageSize",
    "timeout",
}


def readEntrances(reader: FileReader, tables: Any) -> tuple[EntranceConfig, ...]:
    """
    Check the C{[[entrance]]} tables of a config file.

    @raise ConfigError: Naming the file, line and key of the first mistake.
    """
    if not isinstance(tables, list):
        raise reader.fail("entrance", "expected [[entrance]] tables.")
    counters = {"smtp": 0, "account": 0}
    entrances: list[EntranceConfig] = []
    for index, data in enumerate(tables):
        entrances.append(_readEntrance(reader, index, data, counters))
    _checkUnique(reader, entrances)
    return tuple(entrances)


def _readEntrance(
    reader: FileReader, index: int, data: Any, counters: dict[str, int]
) -> EntranceConfig:
    table = _Table(reader, "entrance", index, data, _ENTRANCE_KEYS)
    name = table.get("name", kinds.text, "a name such as acme", _REQUIRED)
    mailbox = table.get(
        "address", _mailbox, 'an address such as "Acme <s@acme.example>"', _REQUIRED
    )
    agent = table.get("agentMailbox", _plainAddress, "a mail address", None)
    text = table.get("autoAnswerText", _template, _TEMPLATE, None)
    textFile = table.get("autoAnswerTextFile", kinds.path, "a file path", None)
    if text is not None and textFile is not None:
        raise table.fail(
            "autoAnswerTextFile", "give autoAnswerText or autoAnswerTextFile, not both."
        )
    if textFile is not None:
        text = _readTemplateFile(table, textFile)
    servers = []
    for server in _subtables(table, "smtp"):
        servers.append(_readServer(reader, counters["smtp"], server))
        counters["smtp"] += 1
    accounts = []
    for account in _subtables(table, "account"):
        accounts.append(_readAccount(reader, counters["account"], account, name))
        counters["account"] += 1
    return EntranceConfig(
        name=name,
        address=mailbox[1],
        displayName=mailbox[0],
        servers=tuple(servers),
        autoAnswerSubject=table.get(
            "autoAnswerSubject", _template, _TEMPLATE, "Re: {subject} [#{contactId}]"
        ),
        autoAnswerText=text,
        agentMailbox=agent,
        allowedSenderDomains=table.get(
            "allowedSenderDomains", _domains, "a list of domain names", ()
        ),
        accounts=tuple(accounts),
    )


def _subtables(table: _Table, key: str) -> list[Any]:
    value = table.data.get(key, [])
    if not isinstance(value, list):
        raise table.fail(key, f"expected [[entrance.{key}]] tables.")
    return value


def _readTemplateFile(table: _Table, path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return _template(f.read())
    except (OSError, UnicodeDecodeError) as e:
        raise table.fail("autoAnswerTextFile", f"cannot read {path}: {e}.") from None
    except ValueError:
        raise table.fail(
            "autoAnswerTextFile", f"{path} must hold {_TEMPLATE}."
        ) from None


def _mailbox(value: Any) -> tuple[str, str]:
    mailbox = parseMailbox(value) if isinstance(value, str) else None
    if mailbox is None:
        raise ValueError(value)
    return mailbox


def _plainAddress(value: Any) -> str:
    if not isinstance(value, str) or not isMailbox(value):
        raise ValueError(value)
    return value


def _readServer(reader: FileReader, index: int, data: Any) -> SmtpServerConfig:
    table = _Table(reader, "entrance.smtp", index, data, _SMTP_KEYS)
    username = table.get("username", kinds.text, "a user name", None)
    password = table.secret("password", required=username is not None)
    if password is not None and username is None:
        raise table.fail("username", "missing; a password needs a username.")
    return SmtpServerConfig(
        host=table.get("host", kinds.host, "a host name or an IP address", _REQUIRED),
        port=table.get("port", kinds.port, "a port number from 1 to 65535", 25),
        tls=table.get(
            "tls",
            kinds.tlsMode,
            "none, opportunistic, required or implicit",
            "opportunistic",
        ),
        username=username,
        password=password,
    )


def _readAccount(
    reader: FileReader, index: int, data: Any, entrance: str
) -> AccountConfig:
    table = _Table(reader, "entrance.account", index, data, _ACCOUNT_KEYS)
    tls = table.get("tls", _popTls, "implicit, starttls or none", "implicit")
    if tls == "none" and not table.get(
        "allowPlaintext", _boolean, "true or false", False
    ):
        raise table.fail(
            "tls",
            "plain POP3 sends the password in clear text; set allowPlaintext = true "
            'to allow it, or use "implicit" or "starttls".',
        )
    seconds = "a time such as 30s, 5m or 1h"
    return AccountConfig(
        name=table.get(
            "name", kinds.text, "a name unique over all accounts", _REQUIRED
        ),
        entrance=entrance,
        host=table.get("host", kinds.host, "a host name or an IP address", _REQUIRED),
        port=table.get(
            "port",
            kinds.port,
            "a port number from 1 to 65535",
            995 if tls == "implicit" else 110,
        ),
        tls=tls,
        username=table.get("username", kinds.text, "a user name", _REQUIRED),
        password=table.secret("password", required=True) or "",
        verifyCertificate=table.get(
            "verifyCertificate", _boolean, "true or false", True
        ),
        caFile=table.get("caFile", kinds.path, "the path of a PEM file", None),
        apop=table.get("apop", _boolean, "true or false", False),
        pollInterval=table.get("pollInterval", kinds.duration, seconds, 60.0),
        keepOnServer=table.get("keepOnServer", _boolean, "true or false", False),
        maxMessageSize=table.get(
            "maxMessageSize", kinds.count, "a size in bytes", 26214400
        ),
        timeout=table.get("timeout", kinds.duration, seconds, 60.0),
    )


def _popTls(value: Any) -> str:
    if value not in ("implicit", "starttls", "none"):
        raise ValueError(value)
    return str(value)


def _checkUnique(reader: FileReader, entrances: list[EntranceConfig]) -> None:
    names: set[str] = set()
    accounts: set[str] = set()
    accountIndex = 0
    for index, entrance in enumerate(entrances):
        if entrance.name in names:
            raise reader.fail(
                "name", f"a second entrance named {entrance.name!r}.", "entrance", index
            )
        names.add(entrance.name)
        for account in entrance.accounts:
            if account.name in accounts:
                raise reader.fail(
                    "name",
                    f"a second account named {account.name!r}.",
                    "entrance.account",
                    accountIndex,
                )
            accounts.add(account.name)
            accountIndex += 1
