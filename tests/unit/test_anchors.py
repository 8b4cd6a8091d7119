"""Signed anchors: every way of rewriting a run's audit trail that someone who can write the
run folder (and even the anchors file) has, each caught by `audit verify` with its message
and exit code (0 intact and anchored, 1 tampered, 3 unproven), on real drills and a real
LIVE run of the small demo world."""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from breachbook.anchors import (
    AnchorError,
    AnchorLog,
    SignedAnchor,
    Signer,
    anchor_artifact,
    generate_key,
    last_anchor_of_run,
)
from breachbook.cli import app
from breachbook.clock import FixedStepClock
from breachbook.demo import DemoWorld
from breachbook.engine import Position, StepResult
from breachbook.ledger import AUTOMATION, HASHED_FIELDS, Entry, Ledger, _content_hash
from breachbook.modes import Mode
from breachbook.run import execute
from breachbook.settings import Settings
from breachbook.wiring import RunRequest, demo_settings
from tests.conftest import T0, Fakes, run_with

INCIDENT = "demo-2026-antiques-leak"


def drill(settings: Settings, world: DemoWorld, out: Path) -> None:
    execute(
        RunRequest(mode=Mode.DRILL, incident_file=world.incident_file, out_dir=out),
        settings=settings,
        clock=FixedStepClock(T0),
    )


@dataclass(frozen=True)
class Drilled:
    """Two drills of the same incident, each with its own ledger, anchored with one key."""

    home: Path
    first: Path
    second: Path


@pytest.fixture(scope="module")
def drilled(small_world: DemoWorld, tmp_path_factory: pytest.TempPathFactory) -> Drilled:
    root = tmp_path_factory.mktemp("anchored")
    settings = demo_settings(
        Settings(home=root / "home"), small_world.customers_db, small_world.folder
    )
    drill(settings, small_world, root / "first")
    drill(settings, small_world, root / "second")
    return Drilled(root / "home", root / "first", root / "second")


@pytest.fixture(autouse=True)
def _no_breachbook_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("BREACHBOOK_"):
            monkeypatch.delenv(name)


@dataclass
class Case:
    """A copy of the first drill's folder and of the home (key and anchors) to tamper with."""

    home: Path
    run: Path

    @property
    def db(self) -> Path:
        return self.run / "audit.sqlite"

    @property
    def anchors(self) -> Path:
        return self.home / "anchors" / f"{INCIDENT}.jsonl"

    def sql(self, *statements: str) -> None:
        conn = sqlite3.connect(self.db)
        with conn:
            for statement in statements:
                conn.execute(statement)
        conn.close()

    def rows(self) -> list[dict[str, Any]]:
        conn = sqlite3.connect(self.db)
        conn.row_factory = sqlite3.Row
        found = [dict(r) for r in conn.execute("SELECT * FROM ledger_entries ORDER BY seq")]
        conn.close()
        return found

    def head(self) -> tuple[int, str]:
        last = self.rows()[-1]
        return last["seq"], last["entry_hash"]

    def anchor_lines(self) -> list[str]:
        return self.anchors.read_text().splitlines()

    def write_anchor_lines(self, lines: list[str]) -> None:
        self.anchors.write_text("".join(f"{line}\n" for line in lines))

    def plan(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.run / "plan.json").read_text())
        return data

    def rewrite_plan_head(self) -> None:
        plan = self.plan()
        plan["ledger"]["head_seq"], plan["ledger"]["head_sha256"] = self.head()
        (self.run / "plan.json").write_text(json.dumps(plan))

    def verify(self, *extra: str, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(
            app,
            ["audit", "verify", "--run", str(self.run), *extra],
            env={"BREACHBOOK_HOME": str(self.home), **(env or {})},
        )

    def rechain(self, from_seq: int, edit: Callable[[dict[str, Any]], None]) -> None:
        """What an attacker who knows the algorithm does: edit entry `from_seq`, recompute
        every hash from it to the end, and move the head row."""
        rows = self.rows()
        prev = rows[from_seq - 2]["entry_hash"] if from_seq > 1 else "0" * 64
        conn = sqlite3.connect(self.db)
        with conn:
            for row in rows[from_seq - 1 :]:
                if row["seq"] == from_seq:
                    edit(row)
                content = {name: row[name] for name in HASHED_FIELDS}
                content["details"] = json.loads(row["details"])
                digest = _content_hash(row["seq"], content, prev)
                conn.execute(
                    "UPDATE ledger_entries SET prev_hash = ?, entry_hash = ?, outcome = ?, "
                    "target = ? WHERE seq = ?",
                    (prev, digest, row["outcome"], row["target"], row["seq"]),
                )
                prev = digest
            conn.execute("UPDATE ledger_heads SET entry_hash = ?", (prev,))
        conn.close()


@pytest.fixture
def case(drilled: Drilled, tmp_path: Path) -> Case:
    shutil.copytree(drilled.home, tmp_path / "home")
    shutil.copytree(drilled.first, tmp_path / "run")
    return Case(tmp_path / "home", tmp_path / "run")


def _expect(result: Result, code: int, *messages: str) -> None:
    assert result.exit_code == code, result.output
    for message in messages:
        assert message in result.output, result.output


# -- intact ---------------------------------------------------------------------------------


def test_an_untouched_drill_is_intact_and_anchored_at_its_head(case: Case) -> None:
    seq, head = case.head()
    _expect(
        case.verify(),
        0,
        f"ledger intact: incident {INCIDENT}, {seq} entries, head {head}; anchored at entry {seq}",
        "result: intact and anchored (exit 0)",
        # the second drill of the same incident has its own ledger and anchors
        "anchor(s) of other ledgers of this incident",
    )


def test_the_run_is_anchored_after_each_step_and_at_its_end(case: Case) -> None:
    anchors = [SignedAnchor.from_line(line) for line in case.anchor_lines()]
    mine = [a for a in anchors if a.run_id == case.plan()["run_id"]]
    assert len(mine) > 5 and mine[0].reason.startswith("step contain/")
    steps = [a.seq for a in mine[:-1]]
    assert steps == sorted(set(steps))  # each head signed once after the steps
    assert mine[-1].reason == "end" and mine[-2].reason.startswith("step communicate/")
    assert mine[-1].seq == case.head()[0] == case.plan()["ledger"]["head_seq"]
    assert len({a.key_id for a in anchors}) == 1


def test_a_folder_moved_elsewhere_still_verifies(case: Case, tmp_path: Path) -> None:
    moved = tmp_path / "archive" / "run"
    shutil.move(case.run, moved)
    _expect(Case(case.home, moved).verify(), 0, "result: intact and anchored")


# -- the chain itself -------------------------------------------------------------------------


def test_an_edited_field(case: Case) -> None:
    case.sql("UPDATE ledger_entries SET outcome = 'VERIFIED' WHERE seq = 7")
    _expect(case.verify(), 1, "entry 7: content was edited after it was written", "TAMPERED")


def test_one_hash_character_flipped(case: Case) -> None:
    old = case.rows()[9]["entry_hash"]
    flipped = ("0" if old[0] != "0" else "1") + old[1:]
    case.sql(f"UPDATE ledger_entries SET entry_hash = '{flipped}' WHERE seq = 10")
    _expect(
        case.verify(),
        1,
        "entry 10: content was edited after it was written",
        "entry 11: does not follow the entry before it (deleted or reordered)",
    )


def test_a_deleted_entry(case: Case) -> None:
    case.sql("DELETE FROM ledger_entries WHERE seq = 12")
    _expect(case.verify(), 1, "entry 13: entries 12..12 are missing")


def test_two_entries_reordered(case: Case) -> None:
    case.sql(
        "UPDATE ledger_entries SET seq = 1000 WHERE seq = 5",
        "UPDATE ledger_entries SET seq = 5 WHERE seq = 6",
        "UPDATE ledger_entries SET seq = 6 WHERE seq = 1000",
    )
    _expect(case.verify(), 1, "does not follow the entry before it (deleted or reordered)")


def test_an_entry_inserted(case: Case) -> None:
    rows = case.rows()
    last = rows[-1]["seq"]
    inserted = dict(rows[8], seq=10, target="forged", prev_hash=rows[8]["entry_hash"])
    content = {name: inserted[name] for name in HASHED_FIELDS}
    content["details"] = json.loads(inserted["details"])
    inserted["entry_hash"] = _content_hash(10, content, inserted["prev_hash"])
    columns = ", ".join(inserted)
    marks = ", ".join("?" for _ in inserted)
    conn = sqlite3.connect(case.db)
    with conn:
        conn.execute("UPDATE ledger_entries SET seq = seq + 1000 WHERE seq >= 10")
        conn.execute("UPDATE ledger_entries SET seq = seq - 999 WHERE seq >= 1000")
        conn.execute(
            f"INSERT INTO ledger_entries ({columns}) VALUES ({marks})", list(inserted.values())
        )
        conn.execute(f"UPDATE ledger_heads SET seq = {last + 1}")
    conn.close()
    _expect(
        case.verify(),
        1,
        "entry 11: does not follow the entry before it (deleted or reordered)",
        f"entry {last} differs from its anchor signed at",
    )


# -- what only the anchors catch --------------------------------------------------------------


def test_the_tail_cut_with_the_head_row_and_plan_json_rewritten(case: Case) -> None:
    last = case.head()[0]
    case.sql(
        f"DELETE FROM ledger_entries WHERE seq > {last - 3}",
        f"UPDATE ledger_heads SET seq = {last - 3}, entry_hash = "
        f"(SELECT entry_hash FROM ledger_entries WHERE seq = {last - 3})",
    )
    case.rewrite_plan_head()
    _expect(case.verify(), 1, f"entry {last}, anchored at", "is missing: entries were cut")


def test_the_tail_cut_and_plan_json_deleted(case: Case) -> None:
    last = case.head()[0]
    case.sql(
        f"DELETE FROM ledger_entries WHERE seq = {last}",
        f"UPDATE ledger_heads SET seq = {last - 1}, entry_hash = "
        f"(SELECT entry_hash FROM ledger_entries WHERE seq = {last - 1})",
    )
    (case.run / "plan.json").unlink()
    _expect(
        case.verify(),
        1,
        "plan.json: missing (the run did not finish, or it was deleted)",
        f"entry {last}, anchored at",
    )


def test_plan_json_deleted_alone_changes_nothing_the_anchors_prove(case: Case) -> None:
    (case.run / "plan.json").unlink()
    _expect(case.verify(), 0, "plan.json: missing", "result: intact and anchored")


def test_a_correctly_chained_entry_appended_at_the_tail(case: Case) -> None:
    last = case.head()[0]
    book = Ledger(f"sqlite:///{case.db}", FixedStepClock(T0))
    book.append(
        Entry(
            INCIDENT,
            case.plan()["run_id"],
            "notify",
            "-",
            "outcome",
            AUTOMATION,
            "drill",
            "completed",
            {},
        )
    )
    book.close()
    case.rewrite_plan_head()
    _expect(
        case.verify(),
        3,
        f"1 entry after the last anchor (unanchored): entries {last + 1}..{last + 1}",
        "chain unbroken but integrity unproven",
        "result: unproven (exit 3)",
    )


def test_the_whole_chain_recomputed_and_plan_json_rewritten(case: Case) -> None:
    def soften(row: dict[str, Any]) -> None:
        row["outcome"] = "VERIFIED"

    case.rechain(4, soften)
    case.rewrite_plan_head()
    last = case.head()[0]
    _expect(case.verify(), 1, f"entry {last} differs from its anchor signed at", "rewritten")


def test_the_chain_recomputed_from_its_first_entry(case: Case) -> None:
    def rename(row: dict[str, Any]) -> None:
        row["target"] = "someone-else"

    case.rechain(1, rename)
    case.rewrite_plan_head()
    _expect(case.verify(), 1, "entry 1 differs from the anchor", "rewritten from its start")


def test_the_ledger_swapped_for_another_drill_of_the_same_incident(
    case: Case, drilled: Drilled
) -> None:
    shutil.copy(drilled.second / "audit.sqlite", case.db)
    _expect(
        case.verify(),
        1,
        "plan.json's head, entry",
        "entry 1 differs from the anchor",
    )


def test_the_ledger_deleted(case: Case) -> None:
    case.db.unlink()
    _expect(case.verify(), 1, "no ledger file there; yet run", "TAMPERED")


def test_the_chain_rewritten_and_re_signed_with_the_attackers_own_key(
    case: Case, tmp_path: Path
) -> None:
    case.rechain(4, lambda row: row.update(outcome="VERIFIED"))
    generate_key(tmp_path / "evil")
    evil = Signer.load(tmp_path / "evil")
    seq, head = case.head()
    forged = evil.sign(INCIDENT, seq, head, case.rows()[0]["entry_hash"], "x", "end", "now")
    case.write_anchor_lines([*case.anchor_lines(), forged.line().decode().strip()])
    _expect(case.verify(), 1, "differs from its anchor", "were not checked")


# -- keys -------------------------------------------------------------------------------------


def test_verified_with_another_public_key(case: Case, tmp_path: Path) -> None:
    public = generate_key(tmp_path / "other")
    from breachbook.anchors import key_id

    _expect(
        case.verify("--key", str(tmp_path / "other.pub")),
        3,
        f"not by the verifying key {key_id(public)}: integrity unproven",
    )


def test_verified_elsewhere_with_only_the_public_key(case: Case, tmp_path: Path) -> None:
    public = tmp_path / "elsewhere" / "breachbook.pub"
    public.parent.mkdir()
    shutil.copy(case.home / "keys" / "signing-key.pub", public)
    (case.home / "keys" / "signing-key").unlink()  # legal's laptop has no private key
    _expect(case.verify(env={"BREACHBOOK_VERIFY_KEY": str(public)}), 0, "BREACHBOOK_VERIFY_KEY")


def test_no_key_at_all_is_unproven(case: Case) -> None:
    shutil.rmtree(case.home / "keys")
    _expect(case.verify(), 3, "no public key to check", "integrity unproven")


def test_a_public_key_inside_the_run_folder_is_refused(case: Case) -> None:
    shutil.copy(case.home / "keys" / "signing-key.pub", case.run / "trust-me.pub")
    _expect(case.verify("--key", str(case.run / "trust-me.pub")), 2, "is inside the run folder")


# -- the anchors file -------------------------------------------------------------------------


@pytest.mark.parametrize("ledger", ["this", "another"])
def test_a_forged_anchor_line(case: Case, ledger: str) -> None:
    """A line forged with the trusted key's id and a wrong signature, for this drill's ledger
    or for the other drill's (still a forgery in the file both rely on)."""
    lines = case.anchor_lines()
    run_id = case.plan()["run_id"]
    mine = [line for line in lines if (json.loads(line)["run_id"] == run_id) == (ledger == "this")]
    genuine = json.loads(mine[-1])
    signature = bytearray(base64.b64decode(genuine["signature"]))
    signature[7] ^= 1  # well-formed, one bit wrong
    forged = dict(genuine, seq=genuine["seq"] + 1, signature=base64.b64encode(signature).decode())
    case.write_anchor_lines([*lines, json.dumps(forged)])
    _expect(case.verify(), 1, "signature does not verify under key", "edited or forged")


@pytest.mark.parametrize("field", ["seq", "entry_hash", "signed_at", "first_entry_hash"])
def test_an_anchor_edited(case: Case, field: str) -> None:
    lines = case.anchor_lines()
    anchor = json.loads(lines[3])
    anchor[field] = anchor[field] - 1 if field == "seq" else anchor[field][::-1]
    lines[3] = json.dumps(anchor)
    case.write_anchor_lines(lines)
    _expect(case.verify(), 1, "line 4): signature does not verify", "edited or forged")


def test_the_anchors_file_deleted(case: Case) -> None:
    case.anchors.unlink()
    _expect(case.verify(), 3, "no anchor: integrity unproven", "result: unproven (exit 3)")


def test_the_anchors_file_truncated_by_whole_lines(case: Case) -> None:
    lines = case.anchor_lines()
    mine = [
        n for n, line in enumerate(lines) if json.loads(line)["run_id"] == case.plan()["run_id"]
    ]
    # cut the file before this run's last step anchor and its end anchor (and everything after)
    case.write_anchor_lines(lines[: mine[-2]])
    earlier = json.loads(lines[mine[-3]])["seq"]
    last = case.head()[0]
    _expect(
        case.verify(),
        3,
        f"{last - earlier} entries after the last anchor (unanchored): entries {earlier + 1}..{last}",
    )


def test_the_anchors_file_cut_mid_line(case: Case) -> None:
    text = case.anchors.read_bytes()
    case.anchors.write_bytes(text[: len(text) - 40])
    _expect(case.verify(), 3, "a partial line (a write cut short, or the file truncated)")


def test_a_line_of_the_anchors_file_garbled(case: Case) -> None:
    lines = case.anchor_lines()
    lines[2] = lines[2][:50]
    case.write_anchor_lines(lines)
    _expect(case.verify(), 1, "line 3: not an anchor (edited or corrupted)")


def test_an_anchor_of_another_incident_moved_in(case: Case) -> None:
    signer = Signer.load(case.home / "keys" / "signing-key")
    seq, head = case.head()
    other = signer.sign("inc-other", seq, head, case.rows()[0]["entry_hash"], "r", "end", "now")
    case.write_anchor_lines([*case.anchor_lines(), other.line().decode().strip()])
    _expect(case.verify(), 1, "an anchor of incident inc-other, not of " + INCIDENT)


def test_the_ledger_url_without_anchors_is_unproven_not_intact(case: Case) -> None:
    result = CliRunner().invoke(
        app,
        ["audit", "verify", "--ledger", f"sqlite:///{case.db}"],
        env={"BREACHBOOK_HOME": str(case.home / "elsewhere")},
    )
    _expect(result, 3, "no anchor: integrity unproven")


# -- the failure path, LIVE, and the artifact ------------------------------------------------


def test_a_run_that_fails_mid_way_is_anchored_with_its_error(
    small_world: DemoWorld, tmp_path: Path
) -> None:
    settings = demo_settings(
        Settings(home=tmp_path / "home"), small_world.customers_db, small_world.folder
    )

    def crash_at_third(name: str, work: Callable[[], StepResult], position: Position) -> StepResult:
        if position.number == 3:
            raise RuntimeError("worker lost")
        return work()

    request = RunRequest(
        mode=Mode.DRILL, incident_file=small_world.incident_file, out_dir=tmp_path / "out"
    )
    with pytest.raises(RuntimeError):
        execute(request, runner=crash_at_third, settings=settings, clock=FixedStepClock(T0))
    log = AnchorLog(tmp_path / "home" / "anchors").read(INCIDENT)
    reasons = [anchor.reason for _, anchor in log.anchors]
    assert reasons[-1] == "failed" and len(reasons) == 3
    broken = Case(tmp_path / "home", tmp_path / "out")
    _expect(broken.verify(), 0, "plan.json: missing", "result: intact and anchored")


def test_a_live_run_folder_verifies_against_the_shared_ledger(
    small_world: DemoWorld, fakes: Fakes, tmp_path: Path
) -> None:
    settings = demo_settings(
        Settings(home=tmp_path / "home"), small_world.customers_db, small_world.folder
    )
    out = tmp_path / "live"
    result = run_with(Mode.LIVE, settings, fakes, out, small_world.incident_file)
    assert not (out / "audit.sqlite").exists()
    live = Case(tmp_path / "home", out)
    _expect(live.verify(), 0, f"ledger sqlite:///{tmp_path / 'home' / 'ledger.sqlite'}", "intact")
    book = Ledger(f"sqlite:///{tmp_path / 'home' / 'ledger.sqlite'}", FixedStepClock(T0))
    book.append(Entry(INCIDENT, result.run_id, "x", "-", "outcome", AUTOMATION, "live", "done", {}))
    book.close()
    _expect(live.verify(), 3, "1 entry after the last anchor (unanchored)")


def test_the_artifact_is_the_runs_last_anchor_without_personal_data(case: Case) -> None:
    settings = Settings(home=case.home)
    anchor = last_anchor_of_run(settings, INCIDENT, case.plan()["run_id"])
    assert anchor is not None
    shown = anchor_artifact(anchor)
    assert shown["seq"] == case.head()[0] and shown["entry_hash"] == case.head()[1]
    assert set(shown) == {
        "incident_id",
        "seq",
        "entry_hash",
        "signed_at",
        "key_id",
        "signature",
        "run_id",
        "reason",
    }


# -- where keys may live ----------------------------------------------------------------------


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    out = tmp_path / "keys" / "breachbook"
    result = CliRunner().invoke(app, ["audit", "keygen", "--out", str(out)])
    _expect(result, 0, "-----BEGIN PUBLIC KEY-----", "key id ", "BREACHBOOK_SIGNING_KEY=")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert (tmp_path / "keys" / "breachbook.pub").read_text() in result.output
    again = CliRunner().invoke(app, ["audit", "keygen", "--out", str(out)])
    _expect(again, 2, "exists; a key is never replaced")


def test_keygen_refuses_a_run_folder(case: Case) -> None:
    result = CliRunner().invoke(app, ["audit", "keygen", "--out", str(case.run / "key")])
    _expect(result, 2, "is inside the run folder")
    assert not (case.run / "key").exists()


def test_a_run_refuses_a_signing_key_inside_its_folder(
    small_world: DemoWorld, tmp_path: Path
) -> None:
    generate_key(tmp_path / "out" / "key")
    settings = demo_settings(
        Settings(home=tmp_path / "home", signing_key=tmp_path / "out" / "key"),
        small_world.customers_db,
        small_world.folder,
    )
    with pytest.raises(AnchorError, match="is inside the run folder"):
        drill(settings, small_world, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["key", "key.pub"]


def test_a_run_refuses_anchors_kept_in_its_folder(small_world: DemoWorld, tmp_path: Path) -> None:
    settings = demo_settings(
        Settings(home=tmp_path / "home", anchors_dir=tmp_path / "out" / "anchors"),
        small_world.customers_db,
        small_world.folder,
    )
    with pytest.raises(AnchorError, match=r"the anchors folder .* is inside the run folder"):
        drill(settings, small_world, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_signing_key_others_can_read_is_refused(small_world: DemoWorld, tmp_path: Path) -> None:
    generate_key(tmp_path / "key")
    (tmp_path / "key").chmod(0o644)
    settings = demo_settings(
        Settings(home=tmp_path / "home", signing_key=tmp_path / "key"),
        small_world.customers_db,
        small_world.folder,
    )
    with pytest.raises(AnchorError, match=r"may be read by others \(mode 0644\): chmod 600"):
        drill(settings, small_world, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_default_key_is_made_once_outside_the_run_folder(drilled: Drilled) -> None:
    key = drilled.home / "keys" / "signing-key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert not any(p.name.startswith("signing-key") for p in drilled.first.rglob("*"))
