# -*- test-case-name: tests.test_config -*-
"""
Reading a TOML config file so that every complaint names its line.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any, Mapping


class ConfigError(Exception):
    """
    A setting is wrong; the message is one sentence an operator can act on.
    """


class FileReader:
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

    def lineOf(self, key: str, table: str | None = None, index: int = 0) -> int:
        """
        @param index: Which table of that name, counting from 0, for arrays
            of tables such as C{[[entrance]]}.
        @return: The number of the line that sets C{key} (inside C{table}
            when given), else the line of that table's header, else 1.
        """
        inTable = table is None
        seen = -1
        headerNumber = 1
        keyLine = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
        tableLine = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
        for number, line in enumerate(self.text.splitlines(), 1):
            header = tableLine.match(line)
            if header:
                if header.group(1) == table:
                    seen += 1
                inTable = header.group(1) == table and seen == index
                if inTable:
                    headerNumber = number
            elif inTable and keyLine.match(line):
                return number
        return headerNumber

    def fail(
        self, key: str, message: str, table: str | None = None, index: int = 0
    ) -> ConfigError:
        """
        @return: An error that names this file, the line of C{key} and the
            key, then C{message}.
        """
        name = f"{table}.{key}" if table else key
        return ConfigError(
            f"{self.path}, line {self.lineOf(key, table, index)}: {name}: {message}"
        )


def readSecret(
    reader: FileReader,
    table: str | None,
    entry: Mapping[str, Any],
    key: str,
    index: int = 0,
) -> str | None:
    """
    Take a secret given inline as C{key} or as a path in C{key + "File"}.
    """
    inline = entry.get(key)
    path = entry.get(key + "File")
    if inline is not None and path is not None:
        raise reader.fail(
            key + "File", f"give either {key} or {key}File, not both.", table, index
        )
    if inline is not None:
        if not isinstance(inline, str) or not inline:
            raise reader.fail(key, "expected a non-empty string.", table, index)
        return inline
    if path is None:
        return None
    if not isinstance(path, str):
        raise reader.fail(
            key + "File", "expected the path of a file as a string.", table, index
        )
    try:
        with open(path, encoding="utf-8") as f:
            secret = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else e
        raise reader.fail(
            key + "File", f"cannot read {path}: {reason}.", table, index
        ) from None
    if not secret:
        raise reader.fail(key + "File", f"the file {path} is empty.", table, index)
    return secret
