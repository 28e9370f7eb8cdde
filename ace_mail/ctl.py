# -*- test-case-name: tests.test_ctl -*-
"""
C{ace-mail-ctl}, the operator's command line: it shows and acts on the queue,
contacts and POP3 accounts of a running ace-mail over its HTTP API, the way
C{mailq} and C{postqueue} do for Postfix.

It talks to the API only, and imports nothing else of ace-mail, so that it
works against any ace-mail it can reach.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
from typing import Any, Callable, NoReturn, Sequence, TextIO
from urllib.parse import quote, urlsplit

DEFAULT_DATA_DIR = "ace-mail-data"
"""
The data directory that C{twistd ace-mail} uses when given none.
"""

TIMEOUT = 30.0
"""
How long, in seconds, to wait for the API.
"""

_USAGE = (
    "ace-mail-ctl [--dataDir DIR] [--api URL] [--token TOKEN] [--json] "
    "queue | queue retry ID | queue delete ID | contact ID | contact end ID | "
    "accounts"
)


class CtlError(Exception):
    """
    What went wrong, in one sentence for the operator.

    @ivar status: The exit status.
    """

    def __init__(self, sentence: str, status: int = 1) -> None:
        super().__init__(sentence)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """
    A parser whose complaints are one sentence.
    """

    def error(self, message: str) -> NoReturn:
        raise CtlError(f"{message}; see ace-mail-ctl --help", status=2)


def _parser() -> _Parser:
    parser = _Parser(
        prog="ace-mail-ctl",
        usage=_USAGE,
        description="Show and act on a running ace-mail over its HTTP API.",
    )
    parser.add_argument(
        "--dataDir",
        metavar="DIR",
        default=DEFAULT_DATA_DIR,
        help="ace-mail's data directory, where the API's address "
        "(api-endpoint) and token (api-token) are found [default: %(default)s]",
    )
    parser.add_argument(
        "--api",
        metavar="URL",
        help="the API's URL, such as http://127.0.0.1:8025, or unix:PATH",
    )
    parser.add_argument("--token", help="the API's bearer token")
    parser.add_argument(
        "--json", action="store_true", help="print the API's JSON answer"
    )
    parser.add_argument("command", nargs="+", help=argparse.SUPPRESS)
    return parser


class _UnixConnection(http.client.HTTPConnection):
    """
    HTTP over a UNIX socket.
    """

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socketPath = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socketPath)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Client:
    """
    The API of one ace-mail.

    @ivar api: Its URL.
    @ivar tokenSource: Where the token came from, for the complaint when the
        API refuses it.
    """

    def __init__(self, api: str, token: str, tokenSource: str) -> None:
        self.api = api
        self.token = token
        self.tokenSource = tokenSource

    def _connect(self) -> tuple[http.client.HTTPConnection, str]:
        if self.api.startswith("unix:"):
            return _UnixConnection(self.api[len("unix:") :], TIMEOUT), ""
        parts = urlsplit(self.api)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CtlError(
                f"the API's address {self.api!r} is not an http:// or https:// URL "
                "or unix:PATH; give one with --api"
            )
        try:
            port = parts.port
        except ValueError:
            raise CtlError(f"the API's address {self.api!r} has a bad port") from None
        if parts.scheme == "https":
            secure = http.client.HTTPSConnection(parts.hostname, port, timeout=TIMEOUT)
            return secure, parts.path.rstrip("/")
        plain = http.client.HTTPConnection(parts.hostname, port, timeout=TIMEOUT)
        return plain, parts.path.rstrip("/")

    def call(self, method: str, path: str) -> Any:
        """
        Make one request.

        @return: The JSON answer.
        @raise CtlError: When the API cannot be reached or answers with an
            error.
        """
        connection, prefix = self._connect()
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/json",
        }
        try:
            connection.request(method, prefix + path, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except (ConnectionRefusedError, FileNotFoundError):
            raise CtlError(
                f"cannot reach the API at {self.api}; is ace-mail running?"
            ) from None
        except TimeoutError:
            raise CtlError(
                f"the API at {self.api} did not answer within {TIMEOUT:g} seconds"
            ) from None
        except (OSError, http.client.HTTPException) as e:
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
            raise CtlError(f"cannot reach the API at {self.api}: {reason}") from None
        finally:
            connection.close()
        return self._read(response.status, raw)

    def _read(self, status: int, raw: bytes) -> Any:
        if status == 401:
            raise CtlError(
                f"the API at {self.api} refused the token from {self.tokenSource}; "
                "give the right one with --token"
            )
        try:
            answer = json.loads(raw)
        except ValueError:
            raise CtlError(
                f"the API at {self.api} answered {status} with something other "
                "than JSON; is --api the address of ace-mail's API?"
            ) from None
        if status >= 400:
            error = answer.get("error") if isinstance(answer, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            raise CtlError(str(message or f"the API answered {status}"))
        return answer


def _readFile(path: str, what: str, option: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
    except OSError as e:
        raise CtlError(
            f"cannot read the API's {what} from {path} ({e.strerror or e}); give "
            f"ace-mail's --dataDir, or {option}"
        ) from None
    if not text:
        raise CtlError(f"{path} is empty; give ace-mail's --dataDir, or {option}")
    return text


def _client(options: argparse.Namespace) -> Client:
    api = options.api
    if api is None:
        path = os.path.join(options.dataDir, "api-endpoint")
        api = _readFile(path, "address", "--api")
    token, tokenSource = options.token, "--token"
    if token is None:
        tokenSource = os.path.join(options.dataDir, "api-token")
        token = _readFile(tokenSource, "token", "--token")
    return Client(api.rstrip("/"), token, tokenSource)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_text(item) for item in value)
    return str(value)


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()
) -> list[str]:
    """
    @param right: The columns aligned to the right, such as numbers.
    @return: The lines of a table whose columns line up, two spaces apart.
    """
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [
            max(width, len(cell)) for width, cell in zip(widths, row, strict=True)
        ]
    lines = []
    for row in [headers, *rows]:
        cells = [
            cell.rjust(width) if index in right else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def showQueue(answer: Any) -> list[str]:
    """
    @return: The lines that show C{GET /v1/queue}, like C{mailq}: one row a
        message, its last error below it.
    """
    entries = answer["queue"]
    if not entries:
        return ["The queue is empty."]
    headers = ["QUEUE ID", "STATE", "SIZE", "TRIES", "ARRIVED", "NEXT TRY", "ROUTE"]
    headers += ["FROM", "TO"]
    rows = [
        [
            entry["queueId"],
            entry["state"],
            _text(entry["size"]),
            _text(entry["attempts"]),
            _text(entry["created"]),
            _text(entry["nextAttempt"]),
            entry["route"],
            f"<{entry['from']}>",
            _text(entry["to"]),
        ]
        for entry in entries
    ]
    lines = table(headers, rows, right=(2, 3))
    shown = [lines[0]]
    for line, entry in zip(lines[1:], entries, strict=True):
        shown.append(line)
        if entry.get("lastError"):
            shown.append(f"  ({entry['lastError']})")
    size = sum(entry["size"] for entry in entries)
    count = len(entries)
    noun = "message" if count == 1 else "messages"
    shown.append(f"-- {count} {noun}, {size} bytes.")
    return shown


def showContact(answer: Any) -> list[str]:
    """
    @return: The lines that show one contact: a field a line.
    """
    rows = [[name, _text(value)] for name, value in answer.items()]
    return table(["FIELD", "VALUE"], rows)[1:]


def showAccounts(answer: Any) -> list[str]:
    """
    @return: The lines that show C{GET /v1/accounts}: one row an account.
    """
    accounts = answer["accounts"]
    if not accounts:
        return ["No POP3 accounts are configured."]
    headers = ["ACCOUNT", "POLLING", "LAST POLL", "NEXT POLL", "TAKEN", "TOO LARGE"]
    headers += ["ERRORS", "FAILING", "LAST RESULT"]
    rows = [
        [
            account["name"],
            _text(account["polling"]),
            _text(account["lastPoll"]),
            _text(account["nextPoll"]),
            _text(account["messagesTaken"]),
            _text(account["messagesTooLarge"]),
            _text(account["errors"]),
            _text(account["consecutiveFailures"]),
            _text(account["lastResult"]),
        ]
        for account in accounts
    ]
    return table(headers, rows, right=(4, 5, 6, 7))


def _identifier(word: str, what: str) -> str:
    if not word or not all(c.isalnum() for c in word):
        raise CtlError(f"{word!r} is not a {what}", status=2)
    return quote(word)


def plan(words: Sequence[str]) -> tuple[str, str, Callable[[Any], list[str]]]:
    """
    Work out what one command asks of the API.

    @param words: The command, such as C{["queue", "retry", "ID"]}.
    @return: The method and path of the request, and what shows its answer.
    @raise CtlError: When the command is wrong.
    """
    match list(words):
        case ["queue"]:
            return "GET", "/v1/queue", showQueue
        case ["queue", "retry", queueId]:
            path = f"/v1/queue/{_identifier(queueId, 'queue id')}/retry"
            return "POST", path, lambda _: [f"Message {queueId} will be tried now."]
        case ["queue", "delete", queueId]:
            path = f"/v1/queue/{_identifier(queueId, 'queue id')}"
            return (
                "DELETE",
                path,
                lambda _: [f"Message {queueId} was deleted from the queue."],
            )
        case ["contact", "end", contactId]:
            path = f"/v1/contacts/{_identifier(contactId, 'contact id')}/end"
            return "POST", path, showContact
        case ["contact", contactId]:
            path = f"/v1/contacts/{_identifier(contactId, 'contact id')}"
            return "GET", path, showContact
        case ["accounts"]:
            return "GET", "/v1/accounts", showAccounts
    raise CtlError(
        f"unknown command {' '.join(words)!r}; expected queue, queue retry ID, "
        "queue delete ID, contact ID, contact end ID or accounts",
        status=2,
    )


def main(
    argv: Sequence[str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """
    Run C{ace-mail-ctl}.

    @param argv: The arguments, without the program's name; by default
        those of the process.
    @return: The exit status: 0, 1 when the command failed, 2 when it was
        wrong.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        options = _parser().parse_intermixed_args(argv)
        method, path, show = plan(options.command)
        answer = _client(options).call(method, path)
        lines = show(answer)
    except CtlError as e:
        sentence = str(e)
        if not sentence.endswith((".", "?")):
            sentence += "."
        err.write(f"ace-mail-ctl: {sentence}\n")
        return e.status
    except KeyboardInterrupt:
        return 130
    if options.json:
        out.write(json.dumps(answer, indent=2, ensure_ascii=False) + "\n")
    else:
        out.write("".join(line + "\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
