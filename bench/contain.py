"""Benchmark: the LIVE contain phase against the local servers, beside the raw calls it makes.

Against the PostgreSQL of $TEST_POSTGRES_URL or 127.0.0.1:5432 (a fresh `bb_bench_<random>`
database, dropped at the end) and a moto server started here on loopback, each of `--runs`
rounds gives the contain playbook of the tests (lock the role, end its session, revoke its
grants on two tables and a schema, deactivate a key, quarantine a host, block two addresses)
fresh targets: a role holding a session, a key, an instance and two addresses.

- breachbook: `execute` in LIVE with the real wiring, timed from the start of the contain
  phase's first step to the end of its last, when every change is confirmed in the ledger
  (checks, claims, audit entries and prior states included);
- raw: the same changes made directly with psycopg and boto3 on the same kind of targets,
  clients connected beforehand: the sum of the calls' times.

Prints the median and p95 of each over the rounds and their ratio.

    python bench/contain.py [--runs 20]
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import psycopg
import yaml
from moto.server import ThreadedMotoServer
from psycopg import sql
from pydantic import SecretStr

from breachbook.connectors.postgres_admin import libpq_url
from breachbook.engine import Position, StepResult, run_directly
from breachbook.modes import Mode
from breachbook.run import execute
from breachbook.settings import Settings, project_root
from breachbook.wiring import Adapters, RunRequest

REGION = "eu-west-1"
AMI = "ami-12c6146b"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
PLAYBOOK = project_root() / "tests" / "data" / "contain" / "playbook.yaml"


class Stopwatch:
    """A step runner that notes when the first step starts and the last one ends."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last = 0.0

    def __call__(self, name: str, work: Callable[[], StepResult], position: Position) -> StepResult:
        if self.first is None:
            self.first = time.perf_counter()
        result = run_directly(name, work, position)
        self.last = time.perf_counter()
        return result

    def seconds(self) -> float:
        assert self.first is not None
        return self.last - self.first


class World:
    """A bench database on PostgreSQL and an account on moto, making fresh targets."""

    def __init__(self, server: str, endpoint: str) -> None:
        self.server = server
        self.name = f"bb_bench_{secrets.token_hex(4)}"
        self.roles: list[str] = []
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        self.url = psycopg.conninfo.make_conninfo(server, dbname=self.name)
        with psycopg.connect(self.url, autocommit=True) as conn:
            for statement in (
                "CREATE TABLE customers (id int)",
                "CREATE TABLE orders (id int)",
                "CREATE SCHEMA sales",
                "CREATE TABLE sales.invoices (id int)",
            ):
                conn.execute(statement)
        self.iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION)
        self.ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name=REGION)
        self.default_group = self.ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": ["default"]}]
        )["SecurityGroups"][0]["GroupId"]
        self.held: list[psycopg.Connection[Any]] = []

    def targets(self, n: int) -> dict[str, Any]:
        role = f"bb_bench_etl_{secrets.token_hex(4)}"
        self.roles.append(role)
        r = sql.Identifier(role)
        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(r))
        with psycopg.connect(self.url, autocommit=True) as conn:
            for statement in (
                sql.SQL("GRANT SELECT, INSERT ON customers, orders TO {}").format(r),
                sql.SQL("GRANT USAGE ON SCHEMA sales TO {}").format(r),
                sql.SQL("GRANT SELECT ON sales.invoices TO {}").format(r),
            ):
                conn.execute(statement)
        self.held.append(psycopg.connect(psycopg.conninfo.make_conninfo(self.url, user=role)))
        user = f"etl-{secrets.token_hex(4)}"
        self.iam.create_user(UserName=user)
        key = self.iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"]
        instance = self.ec2.run_instances(
            ImageId=AMI, MinCount=1, MaxCount=1, SecurityGroupIds=[self.default_group]
        )["Instances"][0]["InstanceId"]
        return {
            "role": role,
            "user": user,
            "key": key,
            "instance": instance,
            "addresses": [
                f"203.0.{n // 250}.{n % 250 + 1}/32",
                f"198.18.{n // 250}.{n % 250 + 1}/32",
            ],
        }

    def close(self) -> None:
        for conn in self.held:
            conn.close()
        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(self.name)))
            for role in self.roles:
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def breachbook_run(world: World, settings: Settings, folder: Path, n: int) -> float:
    t = world.targets(n)
    incident = folder / f"incident-{n}.yaml"
    incident_id = f"inc-bench-{n}"
    incident.write_text(
        yaml.safe_dump(
            {
                "id": incident_id,
                "title": "Bench incident",
                "started_at": "2026-11-27T16:00:00+00:00",
                "discovered_at": "2026-11-27T16:30:00+00:00",
                "database_role": t["role"],
                "exposed_tables": [
                    {"table": "customers", "columns": ["id"]},
                    {"table": "orders", "columns": ["id"]},
                ],
                "access_key_ids": [t["key"]],
                "hosts": [t["instance"]],
                "source_addresses": t["addresses"],
            }
        )
    )
    watch = Stopwatch()
    _, result = execute(
        RunRequest(
            mode=Mode.LIVE,
            incident_file=incident,
            out_dir=folder / f"run-{n}",
            playbook_file=PLAYBOOK,
            confirm_incident_id=incident_id,
        ),
        runner=watch,
        settings=settings,
        adapters=Adapters(customers=_NoCustomers(), approvals=_NoApprovals()),
    )
    statuses = {e.status.value for e in result.entries()}
    assert statuses == {"completed"}, statuses
    return watch.seconds()


def raw_run(world: World, n: int, quarantine: str, acl: str, conns: dict[str, Any]) -> float:
    """The same changes with the clients directly: the sum of the calls' times."""
    t = world.targets(n)
    r = sql.Identifier(t["role"])
    admin: psycopg.Connection[Any] = conns["pg"]
    calls: list[Callable[[], object]] = [
        lambda: admin.execute(sql.SQL("ALTER ROLE {} NOLOGIN CONNECTION LIMIT 0").format(r)),
        lambda: admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
            (t["role"],),
        ),
        lambda: admin.execute(sql.SQL("REVOKE ALL ON TABLE customers FROM {}").format(r)),
        lambda: admin.execute(sql.SQL("REVOKE ALL ON TABLE orders FROM {}").format(r)),
        lambda: admin.execute(sql.SQL("REVOKE ALL ON SCHEMA sales FROM {}").format(r)),
        lambda: admin.execute(
            sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA sales FROM {}").format(r)
        ),
        lambda: world.iam.update_access_key(
            UserName=t["user"], AccessKeyId=t["key"], Status="Inactive"
        ),
        lambda: world.ec2.modify_instance_attribute(InstanceId=t["instance"], Groups=[quarantine]),
    ]
    for i, address in enumerate(t["addresses"]):
        for egress in (False, True):
            calls.append(
                functools.partial(
                    world.ec2.create_network_acl_entry,
                    NetworkAclId=acl,
                    RuleNumber=2 * n + i + 1000,
                    Protocol="-1",
                    RuleAction="deny",
                    Egress=egress,
                    CidrBlock=address,
                )
            )
    total = 0.0
    for call in calls:
        start = time.perf_counter()
        call()
        total += time.perf_counter() - start
    return total


class _NoCustomers:
    """The contain phase reads no customer."""

    def describe(self) -> str:
        return "no customers (contain bench)"

    def check_readable(self) -> Any:
        from breachbook.ports import Check

        return Check.verified("not read", "bench")

    def iter_affected(
        self, categories: Any, batch_size: int, after: str | None = None
    ) -> Iterator[Any]:
        return iter(())

    def table_snapshot(self, table: str, columns: list[str]) -> Iterator[bytes]:
        return iter(())


class _NoApprovals:
    def check_can_ask(self, request: Any) -> Any:
        from breachbook.ports import Check

        return Check.verified("no approval in the contain playbook", "bench")

    def decide(self, request: Any) -> Any:
        raise AssertionError("the contain playbook asks for no approval")


@contextmanager
def moto_server() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def summary(label: str, values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    median = statistics.median(ordered)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    print(f"{label:<12} median {median * 1000:8.1f} ms   p95 {p95 * 1000:8.1f} ms")
    return median, p95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.CRITICAL)  # moto's NotImplemented tracebacks
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    server = libpq_url(os.environ.get("TEST_POSTGRES_URL", DEFAULT_SERVER))
    with moto_server() as endpoint, tempfile.TemporaryDirectory() as scratch:
        world = World(server, endpoint)
        try:
            folder = Path(scratch)
            settings = Settings(
                home=folder / "home",
                database_admin_url=SecretStr(world.url),
                aws_region=REGION,
                aws_endpoint_url=endpoint,
            )
            breachbook_run(world, settings, folder, 0)  # warm-up: models loaded, group made
            quarantine = world.ec2.describe_security_groups(
                Filters=[{"Name": "group-name", "Values": ["breachbook-quarantine"]}]
            )["SecurityGroups"][0]["GroupId"]
            acl = world.ec2.describe_network_acls()["NetworkAcls"][0]["NetworkAclId"]
            with psycopg.connect(world.url, autocommit=True) as pg:
                raw_run(world, 10_000, quarantine, acl, {"pg": pg})  # warm-up
                product, raw = [], []
                for n in range(1, args.runs + 1):
                    product.append(breachbook_run(world, settings, folder, n))
                    raw.append(raw_run(world, n, quarantine, acl, {"pg": pg}))
            print(f"contain phase, LIVE, {args.runs} runs of 9 changes each (12 raw calls)")
            b_median, b_p95 = summary("breachbook", product)
            r_median, r_p95 = summary("raw calls", raw)
            print(f"ratio        median {b_median / r_median:8.1f} x    p95 {b_p95 / r_p95:8.1f} x")
        finally:
            world.close()


if __name__ == "__main__":
    main()
