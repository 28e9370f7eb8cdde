"""
The scenarios of C{bench/run} that are not the SMTP proxy's: POP3 intake
against getmail6, contact lookups in SQLite, and submissions to the API.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess

from _scenarios import Context, Row


def installPackages(programs: dict[str, str]) -> None:
    """
    Install the Debian package of each program that is not on the C{PATH}.

    @param programs: Program names, each mapped to its package's name.
    """
    missing = sorted({p for name, p in programs.items() if not shutil.which(name)})
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"bench/run: as root, apt-get install {' '.join(missing)}")
    print(f"installing {' '.join(missing)} from Debian's packages", flush=True)
    environment = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
    if subprocess.run(command + missing, env=environment, timeout=900).returncode:
        update = ["apt-get", "update", "-q"]
        subprocess.run(update, env=environment, check=True, timeout=600)
        subprocess.run(command + missing, env=environment, check=True, timeout=900)


def pop3(context: Context) -> Row:
    """
    POP3 intake from Dovecot into contacts, against getmail6.
    """
    import pop3_bench

    installPackages({"dovecot": "dovecot-pop3d", "getmail": "getmail6"})
    counts = context.load
    try:
        summary = pop3_bench.measure(
            counts.pop3Messages, 10240, counts.pop3Runs, context.deadline
        )
    except SystemExit as error:
        if "getmail hung" not in str(error):
            raise
        print(f"{error}; measuring once more", flush=True)
        summary = pop3_bench.measure(
            counts.pop3Messages, 10240, counts.pop3Runs, context.deadline
        )
    return Row(
        "pop3",
        f"{counts.pop3Messages} x 10 KiB from Dovecot into contacts, median of "
        f"{counts.pop3Runs}; peer getmail6 into a maildir",
        summary.aceRate,
        summary.getmailRate,
        "msgs/s",
        summary.ratio,
        summary.peakKiB / 1024,
        ">= 1.0x getmail6",
        summary.ratio >= 1.0,
    )


def lookup(context: Context) -> Row:
    """
    The 99th percentile of a contact lookup in a large SQLite store.
    """
    import contact_lookup

    counts = context.load
    options = argparse.Namespace(
        contacts=counts.contacts,
        lookups=counts.lookups,
        batch=100_000,
        path=os.path.join(context.folder("lookup"), "contacts.sqlite3"),
        seed=1,
    )
    figures = contact_lookup.measure(options)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(options.path + suffix):
            os.remove(options.path + suffix)
    return Row(
        "lookup",
        f"SQLiteContactStore.get, {counts.lookups:,} lookups at "
        f"{counts.contacts:,} contacts, p99",
        figures["p99"],
        None,
        "us",
        None,
        None,
        "p99 < 1000 us",
        figures["p99"] < 1000,
    )


def api(context: Context) -> Row:
    """
    Submissions through C{POST /v1/outgoing} to two smtp-sinks.
    """
    import api_bench

    counts = context.load
    arguments = argparse.Namespace(
        messages=counts.apiMessages,
        submitters=counts.apiClients,
        size=4096,
        sink="smtp-sink",
    )
    figures = api_bench.oneRun(arguments, context.deadline, 1)
    complete = figures.delivered >= counts.apiMessages and not figures.others
    return Row(
        "api",
        f"{counts.apiClients} clients, {counts.apiMessages} x 4 KiB through POST "
        f"/v1/outgoing to smtp-sink, delivered end to end "
        f"(accepted at {figures.acceptRate:.0f} msgs/s)",
        figures.deliverRate,
        None,
        "msgs/s",
        None,
        figures.peakKiB / 1024,
        "figure and RSS reported; all delivered",
        complete,
    )
