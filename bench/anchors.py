"""Benchmark: what signing and checking anchors cost per 10,000 ledger entries.

On a SQLite ledger on disk (a temp dir, not /dev/shm) it appends N entries (default 10,000)
one per transaction, as a run does, and signs the incident's head every K entries (a run
signs after each step; K = 1 is the worst case, one anchor per entry). It reports:

- the appends alone, for scale;
- `sign_head` (read the head and the first entry, sign, append one line, fsync) per anchor
  and in total, for each K;
- `audit verify`'s work: the chain recomputed alone (`Ledger.verify`), then the chain and
  every anchor of the file (`verify_ledger`), for each K;
- raw Ed25519 sign and verify, for reference.

    python bench/anchors.py [--entries 10000] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from breachbook.anchors import (
    Anchoring,
    AnchorLog,
    Proof,
    Signer,
    VerifyKey,
    generate_key,
    key_id,
    verify_ledger,
)
from breachbook.clock import SystemClock
from breachbook.ledger import AUTOMATION, Entry, Ledger

INCIDENT = "bench-incident"
INTERVALS = (1, 10, 100, 1000)


def _entry(n: int) -> Entry:
    return Entry(
        INCIDENT, "run-bench", f"step-{n // 500}", f"target-{n}", "outcome", AUTOMATION,
        "live", "completed", {"count": n},
    )  # fmt: skip


def _raw_crypto(rounds: int = 2000) -> tuple[float, float]:
    key = Ed25519PrivateKey.generate()
    message = b"x" * 300
    started = time.perf_counter()
    for _ in range(rounds):
        signature = key.sign(message)
    signed = time.perf_counter() - started
    public = key.public_key()
    started = time.perf_counter()
    for _ in range(rounds):
        public.verify(signature, message)
    return signed / rounds, (time.perf_counter() - started) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=None)
    options = parser.parse_args()
    entries: int = options.entries
    scale = 10_000 / entries
    with tempfile.TemporaryDirectory(dir=options.dir) as folder:
        root = Path(folder)
        generate_key(root / "key")
        signer = Signer.load(root / "key")
        public = signer.key.public_key()
        trusted = VerifyKey(public, key_id(public), "bench")
        ledger = Ledger(f"sqlite:///{root / 'ledger.sqlite'}", SystemClock())
        logs = {k: AnchorLog(root / f"anchors-{k}") for k in INTERVALS}
        anchorings = {k: Anchoring(logs[k], signer, None) for k in INTERVALS}
        signing = dict.fromkeys(INTERVALS, 0.0)
        appending = 0.0
        for n in range(1, entries + 1):
            started = time.perf_counter()
            ledger.append(_entry(n))
            appending += time.perf_counter() - started
            for k, anchoring in anchorings.items():
                if n % k == 0:
                    started = time.perf_counter()
                    anchoring.sign_head(ledger, INCIDENT, "run-bench", f"every {k}")
                    signing[k] += time.perf_counter() - started
        print(f"{entries:,} entries on SQLite (WAL, synchronous=FULL), figures per 10,000 entries")
        print(f"  appends, one per transaction: {appending * scale:8.2f} s")
        started = time.perf_counter()
        assert ledger.verify() == []
        chain_only = time.perf_counter() - started
        print(f"  chain recomputed alone (Ledger.verify): {chain_only * scale:8.3f} s")
        print("  anchor every K entries:")
        print(f"  {'K':>6} {'anchors':>8} {'sign total s':>13} {'per anchor ms':>14} "
              f"{'vs appends':>10} {'verify s':>9} {'vs chain alone':>15}")  # fmt: skip
        for k in INTERVALS:
            count = entries // k
            started = time.perf_counter()
            (verdict,) = verify_ledger(ledger, logs[k], trusted)
            checked = time.perf_counter() - started
            assert verdict.proof is Proof.INTACT, verdict
            print(
                f"  {k:>6} {count * scale:>8,.0f} {signing[k] * scale:>13.3f} "
                f"{signing[k] / count * 1000:>14.3f} {signing[k] / appending:>10.1%} "
                f"{checked * scale:>9.3f} {checked / chain_only:>14.2f}x"
            )
        ledger.close()
    sign, verify = _raw_crypto()
    print(f"  raw Ed25519: sign {sign * 1e6:.1f} us, verify {verify * 1e6:.1f} us")


if __name__ == "__main__":
    main()
