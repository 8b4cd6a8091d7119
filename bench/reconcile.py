"""Benchmark: what the IMAP Sent folder costs a delivery, and what asking it costs a take-over.

Against the test servers on loopback (aiosmtpd with STARTTLS and AUTH; a private Dovecot,
see tests/integration/imap_server.py), in one run:

- baseline: `SmtpMail` sending N letters from its pool of threads, no folder;
- filed: the same letters with each APPENDed to the Sent folder after the relay's reply;
- lookup: N Message-IDs asked of the folder (half filed), `SEARCH_BATCH` per UID SEARCH,
  beside one UID SEARCH per Message-ID.

    python bench/reconcile.py [--letters 400] [--connections 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.imap_server import PASSWORD, USER, ImapServer, dovecot
from tests.integration.smtp_server import PASSWORD as RELAY_PASSWORD
from tests.integration.smtp_server import USER as RELAY_USER
from tests.integration.smtp_server import Relay, recording_relay

from breachbook.clock import SystemClock
from breachbook.connectors.imap import SEARCH_BATCH, ImapConfig, ImapSentFolder
from breachbook.connectors.smtp import SmtpConfig, SmtpMail
from breachbook.ports import OutgoingLetter

ROUNDS = 3
BODY = "Dear customer,\n\nwe write to tell you of a breach of your data.\n" * 40


def letters(prefix: str, count: int) -> list[OutgoingLetter]:
    return [
        OutgoingLetter(
            key=f"bench/{prefix}{i}",
            recipient=f"c{i}@example.org",
            subject="Important: your data",
            body=BODY,
            html=f"<p>{BODY}</p>",
            message_id=f"<breachbook.{prefix}{i:08d}@example.org>",
            language="en",
        )
        for i in range(count)
    ]


def send_all(
    relay: Relay, folder: ImapSentFolder | None, batch: list[OutgoingLetter], connections: int
) -> float:
    config = SmtpConfig(
        relay.host,
        relay.port,
        "privacy@example.org",
        RELAY_USER,
        SecretStr(RELAY_PASSWORD),
        ca_file=relay.ca_file,
        connections=connections,
        rate_per_minute=10_000_000,
    )
    mail = SmtpMail(config, SystemClock(), sent_folder=folder)
    started = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(mail.send, batch))
    elapsed = time.perf_counter() - started
    mail.close()
    return elapsed


def folder_of(server: ImapServer, connections: int) -> ImapSentFolder:
    config = ImapConfig(
        server.host, server.port, USER, SecretStr(PASSWORD), starttls=True, ca_file=server.ca_file
    )
    return ImapSentFolder(config, connections=connections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--letters", type=int, default=400)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    count, connections = args.letters, args.connections
    with (
        tempfile.TemporaryDirectory() as folder,
        recording_relay(Path(folder)) as relay,
        dovecot() as server,
    ):
        filing = folder_of(server, connections)
        plain, filed = [], []
        for round_ in range(ROUNDS):  # alternated, best of each: the machine's load moves
            plain.append(send_all(relay, None, letters(f"a{round_}-", count), connections))
            filed.append(send_all(relay, filing, letters(f"b{round_}-", count), connections))
        assert len(server.filed()) == ROUNDS * count, "not every letter was filed"
        asked = [m.message_id for m in letters("b0-", count // 2) + letters("c", count // 2)]
        started = time.perf_counter()
        found = filing.contains(asked)
        batched = time.perf_counter() - started
        started = time.perf_counter()
        one_by_one = sum(len(filing.contains([ident])) for ident in asked)
        single = time.perf_counter() - started
        assert len(found) == one_by_one == count // 2
        filing.close()
    best_plain, best_filed = count / min(plain), count / min(filed)
    print(f"{count} letters, {connections} connections")
    print(f"  baseline, no folder:      {best_plain:8.1f} letters/s (best of {ROUNDS})")
    print(
        f"  filed in the Sent folder: {best_filed:8.1f} letters/s "
        f"({best_filed / best_plain:.2f}x the baseline)"
    )
    print(
        f"  lookup of {len(asked)} in doubt: {batched * 1000:.0f} ms with {SEARCH_BATCH} per "
        f"UID SEARCH, {single * 1000:.0f} ms one per search ({single / batched:.1f}x)"
    )


if __name__ == "__main__":
    main()
