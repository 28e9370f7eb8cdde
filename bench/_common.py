"""
What every benchmark here needs: free loopback ports, bounded waits, and a
process's CPU time and peak memory read from /proc.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Callable

LOOPBACK = "127.0.0.1"


def freePort() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def canConnect(port: int) -> bool:
    """
    Whether something accepts connections on 127.0.0.1:C{port}.
    """
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1):
            return True
    except OSError:
        return False


def waitFor(what: str, condition: Callable[[], bool], deadline: float) -> None:
    """
    Poll C{condition} every 10 ms until it holds, or end the benchmark when
    C{deadline} (a C{time.monotonic()} value) passes.
    """
    while not condition():
        if time.monotonic() > deadline:
            name = os.path.basename(sys.argv[0]).removesuffix(".py")
            raise SystemExit(f"{name}: gave up waiting for {what}")
        time.sleep(0.01)


def cpuSeconds(pid: int) -> float:
    """
    The user and system CPU seconds a process has used so far.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peakKiB(pid: int) -> int:
    """
    The peak resident memory (VmHWM) of a process, in KiB.
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise SystemExit(f"no VmHWM for process {pid}")
