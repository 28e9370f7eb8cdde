# -*- test-case-name: tests.test_config -*-
"""
ace-mail's settings: the ACE system parameters and the rest, from the command
line and a TOML file, checked before anything starts.
"""

from __future__ import annotations

from typing import Any, Mapping

from attrs import frozen

from ace_mail._configfile import ConfigError as ConfigError
from ace_mail._configfile import FileReader, readSecret
from ace_mail._entrances import EntranceConfig, readEntrances
from ace_mail._parameters import PARAMETERS, Parameter
from ace_mail.address import parseMailbox


@frozen
class DkimKey:
    """
    A DKIM signing key for one sending domain.

    @ivar domain: The domain of the From addresses it signs (the d= tag).
    @ivar selector: The selector under which the public key is published.
    @ivar privateKey: The PEM-encoded private key.
    """

    domain: str
    selector: str
    privateKey: bytes


@frozen
class Settings:
    """
    Every setting, checked, with the command line over the file over the
    defaults.

    @ivar values: Each parameter of L{PARAMETERS} by name, converted.
    @ivar apiToken: The API's bearer token from the file, or L{None} to use
        (and if needed create) the token file in the data directory.
    @ivar outgoingMailSmtpUsername: The user name for AUTH on servers 1 and
        2, or L{None}.
    @ivar outgoingMailSmtpPassword: Its password, or L{None}.
    @ivar dkimKeys: The DKIM keys, one per sending domain.
    @ivar entrances: Every entrance: C{default} from --entranceAddress, then
        the config file's C{[[entrance]]} tables.
    @ivar webhookSecret: The key that signs webhook notifications, or
        L{None} to send them unsigned.
    """

    values: Mapping[str, Any]
    apiToken: str | None = None
    outgoingMailSmtpUsername: str | None = None
    outgoingMailSmtpPassword: str | None = None
    dkimKeys: tuple[DkimKey, ...] = ()
    entrances: tuple[EntranceConfig, ...] = ()
    webhookSecret: str | None = None

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


def _readDkim(reader: FileReader, entries: Any) -> tuple[DkimKey, ...]:
    if not isinstance(entries, list):
        raise reader.fail(
            "dkim", "expected [[dkim]] tables with domain, selector and keyFile."
        )
    keys = []
    for entry in entries:
        for required in ("domain", "selector", "keyFile"):
            if not isinstance(entry.get(required), str) or not entry[required]:
                raise reader.fail(
                    "dkim",
                    f"each [[dkim]] table needs {required} as a non-empty string.",
                )
        unknown = set(entry) - {"domain", "selector", "keyFile"}
        if unknown:
            key = sorted(unknown)[0]
            raise reader.fail(
                key, "unknown key; expected domain, selector or keyFile.", "dkim"
            )
        try:
            with open(entry["keyFile"], "rb") as f:
                pem = f.read()
        except OSError as e:
            raise reader.fail(
                "keyFile", f"cannot read {entry['keyFile']}: {e.strerror}.", "dkim"
            ) from None
        if b"PRIVATE KEY" not in pem:
            raise reader.fail(
                "keyFile", f"{entry['keyFile']} is not a PEM private key.", "dkim"
            )
        keys.append(DkimKey(entry["domain"].lower(), entry["selector"], pem))
    return tuple(keys)


def load(
    commandLine: Mapping[str, str | None], configPath: str | None = None
) -> Settings:
    """
    Check and merge the settings.

    @param commandLine: Each parameter given on the command line, as text;
        parameters not given are absent or L{None}.
    @param configPath: The TOML file to read, if any.
    @raise ConfigError: When any setting is wrong.
    """
    values: dict[str, Any] = {p.name: p.default for p in PARAMETERS}
    extras: dict[str, Any] = {}
    if configPath is not None:
        values.update(_fromFile(FileReader(configPath), extras))
    for parameter in PARAMETERS:
        given = commandLine.get(parameter.name)
        if given is not None:
            values[parameter.name] = _convert(parameter, given, f"--{parameter.name}")
    entrances = _withDefaultEntrance(values, extras.pop("entrances", ()))
    _crossCheck(values, entrances)
    return Settings(values=values, entrances=entrances, **extras)


def _withDefaultEntrance(
    values: dict[str, Any], entrances: tuple[EntranceConfig, ...]
) -> tuple[EntranceConfig, ...]:
    """
    Add the single-tenant entrance C{default} that --entranceAddress gives.
    """
    if values["entranceAddress"] is None:
        return entrances
    mailbox = parseMailbox(values["entranceAddress"])
    if mailbox is None:
        raise ConfigError(
            '--entranceAddress: expected an address such as "Support '
            f'<support@example.com>", got {values["entranceAddress"]!r}.'
        )
    if any(entrance.name == "default" for entrance in entrances):
        raise ConfigError(
            "--entranceAddress: the config file has an [[entrance]] named "
            '"default" already; give its address in one place only.'
        )
    default = EntranceConfig(name="default", address=mailbox[1], displayName=mailbox[0])
    return (default, *entrances)


def _fromFile(reader: FileReader, extras: dict[str, Any]) -> dict[str, Any]:
    known = {p.name: p for p in PARAMETERS}
    values: dict[str, Any] = {}
    for key, value in reader.data.items():
        if key in known:
            where = f"{reader.path}, line {reader.lineOf(key)}: {key}"
            values[key] = _convert(known[key], value, where)
        elif key == "entrance":
            extras["entrances"] = readEntrances(reader, value)
        elif key == "dkim":
            extras["dkimKeys"] = _readDkim(reader, value)
        elif key in ("apiToken", "apiTokenFile"):
            extras["apiToken"] = readSecret(reader, None, reader.data, "apiToken")
        elif key in ("webhookSecret", "webhookSecretFile"):
            extras["webhookSecret"] = readSecret(
                reader, None, reader.data, "webhookSecret"
            )
        elif key in ("outgoingMailSmtpUsername",):
            if not isinstance(value, str) or not value:
                raise reader.fail(key, "expected a non-empty string.")
            extras[key] = value
        elif key in ("outgoingMailSmtpPassword", "outgoingMailSmtpPasswordFile"):
            extras["outgoingMailSmtpPassword"] = readSecret(
                reader, None, reader.data, "outgoingMailSmtpPassword"
            )
        else:
            raise reader.fail(
                key,
                "unknown key; expected one of the parameters in "
                "`twistd ace-mail --help`, apiToken, outgoingMailSmtpUsername, "
                "outgoingMailSmtpPassword, webhookSecret, [[entrance]] or [[dkim]].",
            )
    if ("outgoingMailSmtpPassword" in extras) != ("outgoingMailSmtpUsername" in extras):
        raise reader.fail(
            "outgoingMailSmtpUsername",
            "give outgoingMailSmtpUsername and outgoingMailSmtpPassword together.",
        )
    return values


def _convert(parameter: Parameter, value: Any, where: str) -> Any:
    try:
        return parameter.convert(value)
    except ValueError as e:
        raise ConfigError(
            f"{where}: expected {parameter.expected}, got {parameter.show(value)}."
        ) from e


_PROXY_NEEDS = {
    "smtpProxyRerouteName": "the host name of contact addresses",
    "smtpProxySmtpServer": "the real SMTP server that replies are relayed through",
}


def _crossCheck(values: dict[str, Any], entrances: tuple[EntranceConfig, ...]) -> None:
    pairs = [("outgoingMailSmtpServer2", "outgoingMailSmtpPort2")]
    for server, port in pairs:
        if values[port] is not None and values[server] is None:
            raise ConfigError(
                f"--{port} is set but --{server} is not; give both or neither."
            )
    if (values["smtpProxyTlsCertificate"] is None) != (
        values["smtpProxyTlsKey"] is None
    ):
        raise ConfigError(
            "--smtpProxyTlsCertificate and --smtpProxyTlsKey go together; give both "
            "or neither."
        )
    if values["enableSmtpProxy"]:
        for needed in ("smtpProxyRerouteName", "smtpProxySmtpServer"):
            if values[needed] is None:
                raise ConfigError(
                    f"--enableSmtpProxy 1 needs --{needed}: {_PROXY_NEEDS[needed]}."
                )
        if not entrances:
            raise ConfigError(
                "--enableSmtpProxy 1 needs --entranceAddress (or [[entrance]] tables "
                "in the config file): the address customers see replies come from."
            )
    if values["webhookUrl"] is not None and values["store"] != "sqlite":
        raise ConfigError(
            "--webhookUrl cannot be used with a PostgreSQL --store yet: each node "
            "keeps its webhook notifications in its own SQLite file; leave out "
            "--webhookUrl, or use --store sqlite."
        )
    if values["maximalBackoffTime"] < values["minimalBackoffTime"]:
        raise ConfigError(
            "--maximalBackoffTime: expected at least --minimalBackoffTime "
            f"({values['minimalBackoffTime']:g} seconds), "
            f"got {values['maximalBackoffTime']:g} seconds."
        )
