# -*- test-case-name: tests.test_tap -*-
"""
The name that tells one ace-mail node from the others that share a store,
kept in the node's data directory.
"""

from __future__ import annotations

import os
import re
import secrets
import socket

from twisted.logger import Logger

_log = Logger()

NODE_NAME_FILE = "node-name"
"""
The file in the data directory that holds the node's name.
"""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9.-]+")


class NodeNameError(Exception):
    """
    The node-name file cannot be read or holds no name; the message is one
    sentence that names the file.
    """


def nodeName(dataDir: str) -> str:
    """
    The name of this node: the one in C{dataDir}'s node-name file, or, on
    the first start, a new one (this host's name and six random hex
    digits) written there and fsync'd.

    @param dataDir: The data directory, which exists.
    @raise NodeNameError: When the file cannot be read or written, or does
        not hold one name.
    """
    path = os.path.join(dataDir, NODE_NAME_FILE)
    try:
        with open(path, "rb") as f:
            content = f.read(256)
    except FileNotFoundError:
        return _newName(dataDir, path)
    except OSError as e:
        raise NodeNameError(f"cannot read {path}: {e.strerror or e}.") from None

    name = content.decode("ascii", "replace").strip()
    if not _NAME.match(name):
        raise NodeNameError(
            f"{path}: expected one line with this node's name (letters, digits, "
            f"'.', '_' and '-', at most 100), found {content[:60]!r}; write the "
            "node's name back, or remove the file to have a new name made."
        )
    return name


def _newName(dataDir: str, path: str) -> str:
    """
    Make a name and write it to C{path} so that a crash leaves either no
    file or the whole name.
    """
    host = _NOT_IN_NAME.sub("-", socket.gethostname()).strip(".-")[:60] or "node"
    name = f"{host}-{secrets.token_hex(3)}"
    partial = f"{path}.new"
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, f"{name}\n".encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, path)
        directory = os.open(dataDir, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as e:
        raise NodeNameError(f"cannot write {path}: {e.strerror or e}.") from None
    _log.info("This node is named {node}, written to {path}", node=name, path=path)
    return name
