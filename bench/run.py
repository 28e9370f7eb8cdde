"""
Run every benchmark scenario of ace-mail side by side with its peer, print
one table and write it as JSON under bench/results/.

    bench/run                 # every scenario, the issue's counts
    bench/run --quick         # smaller counts, a smoke run
    bench/run --only relay    # one scenario (see --help for the names)
    bench/run --full          # contact lookups at 10 million contacts

The peers come from Debian's packages and are installed when missing
(postfix, which brings smtp-source and smtp-sink; dovecot-pop3d; getmail6).
Everything listens on 127.0.0.1; every process started is stopped, also on
Ctrl-C or an error; every load is bounded in count and in time (C{--timeout}
seconds per scenario).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, ROOT]

import _otherscenarios  # noqa: E402
import _scenarios  # noqa: E402
from _scenarios import Context, Load, Row  # noqa: E402
from attrs import asdict  # noqa: E402
from proxy_bench import ensurePostfix  # noqa: E402

SCENARIOS: dict[str, Callable[[Context], Row]] = {
    "relay": _scenarios.relay,
    "replies": _scenarios.replies,
    "accept": _scenarios.accept,
    "large": _scenarios.large,
    "sessions": _scenarios.sessions,
    "pop3": _otherscenarios.pop3,
    "lookup": _otherscenarios.lookup,
    "api": _otherscenarios.api,
}

FULL = Load(
    messages=5000,
    sessions=20,
    size=4096,
    bigMiB=50,
    idle=2000,
    pop3Messages=2000,
    pop3Runs=3,
    contacts=1_000_000,
    lookups=100_000,
    apiMessages=5000,
    apiClients=20,
)

QUICK = Load(
    messages=500,
    sessions=20,
    size=4096,
    bigMiB=10,
    idle=200,
    pop3Messages=200,
    pop3Runs=1,
    contacts=20_000,
    lookups=10_000,
    apiMessages=500,
    apiClients=20,
)


def output(command: list[str]) -> str:
    """
    The first line a program prints, or why there is none.
    """
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except OSError as error:
        return f"unavailable ({error.strerror})"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else f"unavailable (exit {done.returncode})"


def versions() -> dict[str, str]:
    """
    The versions of ace-mail's stack and of the peers.
    """
    import aiosmtpd

    import twisted

    return {
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "aiosmtpd": aiosmtpd.__version__,
        "postfix": output(["postconf", "-h", "mail_version"]),
        "dovecot": output(["dovecot", "--version"]),
        "getmail": output(["getmail", "--version"]),
        "kernel": platform.release(),
    }


def figure(value: float | None, unit: str = "") -> str:
    """
    A figure for the table: whole numbers from 100 up, two decimals below.
    """
    if value is None:
        return "-"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
    return f"{text} {unit}".strip()


def table(rows: list[Row], failures: dict[str, str]) -> str:
    """
    The rows as a plain text table, and a line for each failed scenario.
    """
    head = ("scenario", "ace-mail", "peer", "ratio", "peak RSS", "target", "met?")
    lines = [
        (
            row.scenario,
            figure(row.ace, row.unit),
            figure(row.peer, row.unit),
            "-" if row.ratio is None else f"{row.ratio:.2f}x",
            figure(row.peakMiB, "MiB"),
            row.target,
            {True: "yes", False: "NO", None: "-"}[row.met],
        )
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in [head] + lines) for i in range(7)]
    text = [
        "  ".join(
            cell.ljust(width) for cell, width in zip(cells, widths, strict=True)
        ).rstrip()
        for cells in [head] + lines
    ]
    text.insert(1, "  ".join("-" * width for width in widths))
    text += [f"{row.scenario}: {row.what}" for row in rows]
    text += [f"{name}: FAILED: {reason}" for name, reason in failures.items()]
    return "\n".join(text)


def parse(argv: list[str]) -> argparse.Namespace:
    """
    The command line's options.
    """
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios: " + ", ".join(SCENARIOS),
    )
    parser.add_argument("--only", choices=list(SCENARIOS), action="append")
    parser.add_argument("--quick", action="store_true", help="small counts")
    parser.add_argument(
        "--full", action="store_true", help="contact lookups at 10 million"
    )
    parser.add_argument(
        "--timeout", type=float, default=1200, help="seconds per scenario"
    )
    parser.add_argument("--results", default=os.path.join(HERE, "results"))
    return parser.parse_args(argv)


def stopOnTerm(number: int, frame: Any) -> None:
    """
    Turn SIGTERM into Ctrl-C, so that every started process is stopped.
    """
    raise KeyboardInterrupt(f"signal {number}")


def main(argv: list[str]) -> int:
    """
    Run the scenarios asked for, print the table and write the JSON.

    @return: The exit status: 1 when a scenario failed to run.
    """
    options = parse(argv)
    load = QUICK if options.quick else FULL
    if options.full:
        load = Load(**dict(asdict(load), contacts=10_000_000))
    names = options.only or list(SCENARIOS)
    signal.signal(signal.SIGTERM, stopOnTerm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 4 * load.idle + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if set(names) - {"lookup", "pop3"}:
        ensurePostfix()

    started = datetime.datetime.now(datetime.timezone.utc)
    work = tempfile.mkdtemp(prefix="ace-mail-bench-run-")
    context = Context(load, work, options.timeout)
    rows: list[Row] = []
    failures: dict[str, str] = {}
    try:
        for name in names:
            print(f"\n=== {name}", flush=True)
            context.begin()
            try:
                rows.append(SCENARIOS[name](context))
            except (Exception, SystemExit) as error:
                failures[name] = f"{type(error).__name__}: {error}"
                print(f"{name} failed: {failures[name]}", flush=True)
    finally:
        context.stop()
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(table(rows, failures))
    record = {
        "date": started.isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "load": asdict(load),
        "quick": options.quick,
        "command": ["bench/run", *argv],
        "versions": versions(),
        "rows": [asdict(row) for row in rows],
        "failures": failures,
    }
    os.makedirs(options.results, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    path = os.path.join(
        options.results, f"{stamp}{'-quick' if options.quick else ''}.json"
    )
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    print(f"\nwritten to {os.path.relpath(path)}")
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit("bench/run: interrupted; everything it started is stopped")
