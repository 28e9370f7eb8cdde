# -*- test-case-name: tests.test_config -*-
"""
ace-mail's settings: the ACE system parameters and the rest, from the command
line and a TOML file, checked before anything starts.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any, Mapping

from attrs import frozen

from ace_mail._parameters import PARAMETERS, Parameter
from ace_mail.address import parseMailbox


class ConfigError(Exception):
    """
    A setting is wrong; the message is one sentence an operator can act on.
    """


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
    """

    values: Mapping[str, Any]
    apiToken: str | None = None
    outgoingMailSmtpUsername: str | None = None
    outgoingMailSmtpPassword: str | None = None
    dkimKeys: tuple[DkimKey, ...] = ()

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


_SECRETS = ("apiToken", "outgoingMailSmtpUsername", "outgoingMailSmtpPassword")


class _FileReader:
    """
    Reads one TOML config file and names its lines in every complaint.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            with open(path, "rb") as f:
                raw = f.read()
            self.text = raw.decode("utf-8")
        except OSError as e:
            raise ConfigError(
                f"--config: cannot read the config file {path}: " f"{e.strerror or e}."
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(
                f"{path}: the config file is not UTF-8 text; expected a TOML file."
            ) from None
        try:
            self.data = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as e:
            where = re.search(r"\(at line (\d+), column \d+\)", str(e))
            what = str(e).split(" (at ")[0]
            line = f", line {where.group(1)}" if where else ""
            raise ConfigError(
                f"{path}{line}: TOML syntax error ({what}); "
                "expected key = value lines and [table] headers."
            ) from None

    def lineOf(self, key: str, table: str | None = None) -> int:
        """
        @return: The number of the line that sets C{key} (inside C{table}
            when given), or 1 when it cannot be found.
        """
        inTable = table is None
        keyLine = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
        tableLine = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*$")
        for number, line in enumerate(self.text.splitlines(), 1):
            header = tableLine.match(line)
            if header:
                inTable = header.group(1) == table
            elif inTable and keyLine.match(line):
                return number
        return 1

    def fail(self, key: str, message: str, table: str | None = None) -> ConfigError:
        name = f"{table}.{key}" if table else key
        return ConfigError(
            f"{self.path}, line {self.lineOf(key, table)}: {name}: {message}"
        )


def _readSecret(
    reader: _FileReader, table: str | None, entry: Mapping[str, Any], key: str
) -> str | None:
    """
    Take a secret given inline as C{key} or as a path in C{key + "File"}.
    """
    inline = entry.get(key)
    path = entry.get(key + "File")
    if inline is not None and path is not None:
        raise reader.fail(
            key + "File", f"give either {key} or {key}File, not both.", table
        )
    if inline is not None:
        if not isinstance(inline, str) or not inline:
            raise reader.fail(key, "expected a non-empty string.", table)
        return inline
    if path is None:
        return None
    if not isinstance(path, str):
        raise reader.fail(
            key + "File", "expected the path of a file as a string.", table
        )
    try:
        with open(path, encoding="utf-8") as f:
            secret = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise reader.fail(key + "File", f"cannot read {path}: {e}.", table) from None
    if not secret:
        raise reader.fail(key + "File", f"the file {path} is empty.", table)
    return secret


def _readDkim(reader: _FileReader, entries: Any) -> tuple[DkimKey, ...]:
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
        values.update(_fromFile(_FileReader(configPath), extras))
    for parameter in PARAMETERS:
        given = commandLine.get(parameter.name)
        if given is not None:
            values[parameter.name] = _convert(parameter, given, f"--{parameter.name}")
    _crossCheck(values)
    return Settings(values=values, **extras)


def _fromFile(reader: _FileReader, extras: dict[str, Any]) -> dict[str, Any]:
    known = {p.name: p for p in PARAMETERS}
    values: dict[str, Any] = {}
    for key, value in reader.data.items():
        if key in known:
            where = f"{reader.path}, line {reader.lineOf(key)}: {key}"
            values[key] = _convert(known[key], value, where)
        elif key == "dkim":
            extras["dkimKeys"] = _readDkim(reader, value)
        elif key in ("apiToken", "apiTokenFile"):
            extras["apiToken"] = _readSecret(reader, None, reader.data, "apiToken")
        elif key in ("outgoingMailSmtpUsername",):
            if not isinstance(value, str) or not value:
                raise reader.fail(key, "expected a non-empty string.")
            extras[key] = value
        elif key in ("outgoingMailSmtpPassword", "outgoingMailSmtpPasswordFile"):
            extras["outgoingMailSmtpPassword"] = _readSecret(
                reader, None, reader.data, "outgoingMailSmtpPassword"
            )
        else:
            raise reader.fail(
                key,
                "unknown key; expected one of the parameters in "
                "`twistd ace-mail --help`, apiToken, outgoingMailSmtpUsername, "
                "outgoingMailSmtpPassword or [[dkim]].",
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
            f"{where}: expected {parameter.expected}, got {value!r}."
        ) from e


_PROXY_NEEDS = {
    "smtpProxyRerouteName": "the host name of contact addresses",
    "smtpProxySmtpServer": "the real SMTP server that replies are relayed through",
    "entranceAddress": "the address customers see replies come from",
}


def _crossCheck(values: dict[str, Any]) -> None:
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
    if values["entranceAddress"] is not None:
        if parseMailbox(values["entranceAddress"]) is None:
            raise ConfigError(
                '--entranceAddress: expected an address such as "Support '
                f'<support@example.com>", got {values["entranceAddress"]!r}.'
            )
    if values["enableSmtpProxy"]:
        for needed in (
            "smtpProxyRerouteName",
            "smtpProxySmtpServer",
            "entranceAddress",
        ):
            if values[needed] is None:
                raise ConfigError(
                    f"--enableSmtpProxy 1 needs --{needed}: " f"{_PROXY_NEEDS[needed]}."
                )
    if values["maximalBackoffTime"] < values["minimalBackoffTime"]:
        raise ConfigError(
            "--maximalBackoffTime: expected at least --minimalBackoffTime "
            f"({values['minimalBackoffTime']:g} seconds), "
            f"got {values['maximalBackoffTime']:g} seconds."
        )
