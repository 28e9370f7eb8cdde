# -*- test-case-name: tests.test_proxy_auth -*-
"""
The credentials file of the SMTP proxy: user names and bcrypt hashes.
"""

from __future__ import annotations

import re
from typing import Callable, TypeVar

import bcrypt
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from zope.interface import implementer

_T = TypeVar("_T")
ThreadRunner = Callable[[Callable[[], _T]], Deferred[_T]]

_HASH = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")
_USER = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")

# bcrypt looks at the first 72 bytes only; longer passwords are refused
# rather than silently cut.
_BCRYPT_LIMIT = 72


class CredentialsFileError(Exception):
    """
    The credentials file cannot be used; the message names the file and,
    where it can, the line.
    """


def readCredentials(path: str) -> dict[bytes, bytes]:
    """
    Read a credentials file of C{user:hash} lines.

    Blank lines and lines starting with C{#} are skipped. Each hash is a
    bcrypt hash (C{$2b$}, C{$2a$} or C{$2y$}, as written by C{htpasswd -B}
    or Python's C{bcrypt.hashpw}).

    @return: Each user name with its hash.
    @raise CredentialsFileError: When the file cannot be read or a line is
        not of that form.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise CredentialsFileError(
            f"{path}: cannot read the SMTP proxy credentials file: {e}."
        ) from None

    users: dict[bytes, bytes] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, colon, hashed = line.partition(":")
        where = f"{path}, line {number}"
        if not colon or not _USER.match(user):
            raise CredentialsFileError(
                f"{where}: expected user:bcrypt-hash with a user name of "
                "printable ASCII without spaces or colons."
            )
        if not _HASH.match(hashed):
            raise CredentialsFileError(
                f"{where}: the password of {user} is not a bcrypt hash; expected "
                "$2b$ and a cost, as made by htpasswd -nB or bcrypt.hashpw."
            )
        if user.encode() in users:
            raise CredentialsFileError(f"{where}: {user} is listed twice.")
        users[user.encode()] = hashed.encode()
    return users


@implementer(ICredentialsChecker)
class CredentialsFileChecker:
    """
    Checks user names and passwords against a credentials file read once,
    at start-up.

    bcrypt is slow on purpose, so each check runs in a thread. An unknown
    user is checked against a hash of the same cost too, so that the time
    of the answer does not tell which users exist.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, path: str, runInThread: ThreadRunner[bool]) -> None:
        """
        @param path: The credentials file.
        @param runInThread: Runs a check in a thread, such as
            C{partial(deferToThreadPool, reactor, pool)}.
        @raise CredentialsFileError: When the file cannot be used.
        """
        self._users = readCredentials(path)
        self._runInThread = runInThread
        cost = int(next(iter(self._users.values()), b"$2b$12$")[4:6])
        self._decoy = bcrypt.hashpw(b"decoy", bcrypt.gensalt(cost))

    def requestAvatarId(
        self, credentials: IUsernamePassword
    ) -> Deferred[bytes | tuple[()]]:
        """
        @return: A L{Deferred} firing with the user name, or failing with
            L{UnauthorizedLogin}.
        """
        username = credentials.username
        password = credentials.password
        hashed = self._users.get(username)

        def check() -> bool:
            if len(password) > _BCRYPT_LIMIT:
                return False
            return bcrypt.checkpw(password, hashed or self._decoy)

        def decide(matched: bool) -> bytes | tuple[()]:
            if matched and hashed is not None:
                return username
            raise UnauthorizedLogin("authentication credentials invalid")

        return self._runInThread(check).addCallback(decide)
