"""Benchmark: ingesting log files into the evidence vault, beside `sha256sum`.

It generates log files (64 MiB each) in a temp dir, then, for 1 GiB of them, times
`sha256sum` over the files and the product's ingestion path (the files collector's
`find_files` + `read_file` into `Bundle.collect`: SHA-256 of the plaintext, AES-256-GCM in
4 MiB chunks, written and fsynced, one signed custody record per file), each in its own
process, alternating, best of --rounds. The files are in the page cache for both (they were
just written). Then it ingests 4 GiB and reports the peak resident memory of the ingesting
process at 1 GiB and at 4 GiB (flat means the same, whatever the size).

    python bench/evidence.py [--gib 1] [--big-gib 4] [--rounds 3] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1024 * 1024
FILE_BYTES = 64 * MIB


def generate(folder: Path, total: int) -> list[Path]:
    """Log files of `total` bytes together: varied lines, as an access log has."""
    folder.mkdir(parents=True, exist_ok=True)
    block = b"".join(
        b"2026-11-28T12:%02d:%02dZ 203.0.113.%d GET /api/customers/%07d 200 %d\n"
        % (n // 60 % 60, n % 60, n % 250, n * 7919 % 10_000_000, n % 4096)
        for n in range(20_000)
    )
    files = []
    for index in range(total // FILE_BYTES):
        path = folder / f"access-{index:03d}.log"
        with path.open("wb") as handle:
            written = 0
            while written < FILE_BYTES:
                part = block[: FILE_BYTES - written]
                handle.write(part)
                written += len(part)
        files.append(path)
    return files


def child(argv: list[str]) -> tuple[float, int]:
    """Run a process; its wall time and its peak resident memory (KiB)."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{argv[:3]} failed ({status})")
    return seconds, usage.ru_maxrss


def ingest(logs: Path, vault: Path, keys: Path) -> None:
    """The product's path for a folder of logs, in this process."""
    from breachbook.anchors import Signer, generate_key
    from breachbook.collectors import find_files, read_file
    from breachbook.custody import Bundle, Event
    from breachbook.vault import VaultKey

    if not (keys / "signing-key").exists():
        generate_key(keys / "signing-key")
    key = VaultKey.generate(keys / "evidence-key")
    bundle = Bundle(vault, Signer.load(keys / "signing-key"), key)
    bundle.append(Event.OPENED, contents="encrypted", evidence_key_id=key.key_id, legal_hold=False)
    for item in find_files(logs, "*.log", 1 << 40, 1 << 44):
        record, stored = bundle.collect(
            f"file:{item.path}", str(item.path), "bench", "now", read_file(item.path)
        )
        if stored is None:
            raise SystemExit(f"{item.path}: {record['error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=int, default=1)
    parser.add_argument("--big-gib", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--ingest", nargs=3, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ingest:
        ingest(*args.ingest)
        return
    base = Path(tempfile.mkdtemp(prefix="bench-evidence-", dir=args.dir))
    try:
        logs = base / "logs"
        files = generate(logs, args.gib * 1024 * MIB)
        size = sum(p.stat().st_size for p in files) / MIB
        me = [sys.executable, __file__, "--ingest"]
        hashed, sealed, peaks = [], [], []
        for n in range(args.rounds):
            hashed.append(child(["sha256sum", *map(str, files)])[0])
            vault = base / f"vault-{n}"
            seconds, peak = child([*me, str(logs), str(vault), str(base / "keys")])
            sealed.append(seconds)
            peaks.append(peak)
            shutil.rmtree(vault)
        best_hash, best_seal = min(hashed), min(sealed)
        print(f"{size:.0f} MiB in {len(files)} files; best of {args.rounds}")
        print(f"sha256sum:       {size / best_hash:8.1f} MiB/s ({best_hash:.2f} s)")
        print(
            f"vault ingest:    {size / best_seal:8.1f} MiB/s ({best_seal:.2f} s), "
            f"{best_hash / best_seal:.2f} of sha256sum (target >= 0.70)"
        )
        (base / "empty").mkdir()
        _, idle = child([*me, str(base / "empty"), str(base / "vault-empty"), str(base / "keys")])
        print(
            f"peak memory with nothing to ingest (interpreter and imports): {idle / 1024:.1f} MiB"
        )
        print(f"peak memory at {args.gib} GiB: {max(peaks) / 1024:.1f} MiB")
        if args.big_gib:
            more = generate(base / "big", args.big_gib * 1024 * MIB)
            seconds, peak = child(
                [*me, str(base / "big"), str(base / "vault-big"), str(base / "keys")]
            )
            big = sum(p.stat().st_size for p in more) / MIB
            print(
                f"peak memory at {args.big_gib} GiB: {peak / 1024:.1f} MiB "
                f"(ingest {big / seconds:.1f} MiB/s)"
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
