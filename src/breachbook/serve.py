"""`breachbook serve`: one long-running process that runs everything on one machine.

It serves the response deployments (drill, demo-drill, live-response, and alert-drill and
alert-live for the alert receiver) and the tabletop exercise with Prefect's own `serve` (no work pool, worker or deploy
step) and, when BREACHBOOK_ALERT_RULES is set, the alert receiver, against a Prefect server:
PREFECT_API_URL's, or one it starts on 127.0.0.1:BREACHBOOK_PREFECT_PORT and restarts if it
dies. Served runs are picked up within about a second (PREFECT_RUNNER_POLL_FREQUENCY=1 unless
set). Stop it with Ctrl-C or SIGTERM: the receiver stops taking alerts and the started Prefect
server is stopped; runs being started are taken up again at the next start.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Any

import httpx

from breachbook.containment import ContainNow
from breachbook.errors import BreachbookError
from breachbook.receiver import StartRequest, build_receiver
from breachbook.settings import Settings

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

STARTUP_SECONDS = 120.0
PREFECT_SERVER = (sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1")
SERVE_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    "PREFECT_RUNNER_POLL_FREQUENCY": "1",
}
ALERT_DEPLOYMENTS = {
    "drill": "breachbook-response/alert-drill",
    "live": "breachbook-response/alert-live",
}


RESPONSE_FLOWS = Path("flows", "response.py")
TABLETOP_FLOWS = Path("flows", "tabletop.py")


@dataclass(frozen=True)
class Served:
    """A deployment `serve` offers: its name, the flow function (in which flow file of the
    content) and what the UI says."""

    name: str
    function: str
    description: str
    tags: tuple[str, ...]
    parameters: tuple[str, ...] = ()
    """The flow's form parameters. Each is required (so the UI's header is the form's title,
    not "drill (Optional)"), and the deployment gives it as `{}`: the form's own defaults, so
    a quick run from the UI still starts."""
    flow_file: Path = RESPONSE_FLOWS


DEPLOYMENTS = (
    Served(
        "drill",
        "drill",
        "Rehearse the breach playbook on an incident (picked by name or filled in): checks "
        "every permission, produces every document, changes nothing.",
        ("breachbook", "drill"),
        ("drill",),
    ),
    Served(
        "demo-drill",
        "demo_drill",
        "The drill against the synthetic demo world (10,000 customers), nothing to fill in.",
        ("breachbook", "drill", "demo"),
    ),
    Served(
        "live-response",
        "live_response",
        "LIVE response to a real incident. Refuses to start unless the incident id is typed "
        "to confirm.",
        ("breachbook", "live"),
        ("response",),
    ),
    Served(
        "alert-drill",
        "alert_drill",
        "A drill started by the alert receiver (rules with mode: drill).",
        ("breachbook", "drill", "alert"),
    ),
    Served(
        "alert-live",
        "alert_live",
        "A LIVE response started by the alert receiver (rules with mode: live).",
        ("breachbook", "live", "alert"),
    ),
    Served(
        "tabletop",
        "tabletop_exercise",
        "A scored tabletop exercise on a simulated clock: pick a scenario of scenarios/ by "
        "name, and a players file or none (then each decision pauses the run for the "
        "facilitator's answer in a form). Nothing real is touched.",
        ("breachbook", "tabletop"),
        ("exercise",),
        TABLETOP_FLOWS,
    ),
)

FlowLoader = Callable[[Path], ModuleType]
"""Loads a flow file of the content (flows/response.py, flows/tabletop.py) as a module."""


class PrefectStarter:
    """Starts the served alert deployments through the Prefect API. The idempotency key is
    the incident's claim, so a retry after an answer that was lost never makes two runs."""

    async def start(self, request: StartRequest) -> str:
        from prefect.deployments.flow_runs import arun_deployment

        run = await arun_deployment(
            ALERT_DEPLOYMENTS[request.mode],
            parameters={"incident": request.incident_id, "playbook": request.playbook},
            timeout=0,
            as_subflow=False,
            idempotency_key=f"breachbook-alert-{request.incident_id}-{request.generation}",
        )
        return str(run.id)


def healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


class PrefectServer:
    """A `prefect server start` this process owns: started, watched, restarted, stopped."""

    def __init__(self, port: int, logs: Path) -> None:
        self.api = f"http://127.0.0.1:{port}/api"
        self.port = port
        self.logs = logs
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if healthy(self.api):
            raise BreachbookError(
                f"port {self.port} already has a Prefect server: set PREFECT_API_URL={self.api} "
                "to use it, or BREACHBOOK_PREFECT_PORT to start another"
            )
        self.logs.parent.mkdir(parents=True, exist_ok=True)
        with self.logs.open("ab") as log:
            self.process = subprocess.Popen(
                [*PREFECT_SERVER, "--port", str(self.port)],
                # The UI asks the API at PREFECT_UI_API_URL, which otherwise names port 4200.
                env=os.environ | {"PREFECT_UI_API_URL": self.api},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (prctl only, no locks)
            )
        deadline = time.monotonic() + STARTUP_SECONDS
        while not healthy(self.api):
            if self.process.poll() is not None:
                raise BreachbookError(f"the Prefect server stopped at start; see {self.logs}")
            if time.monotonic() > deadline:
                raise BreachbookError(f"the Prefect server did not answer; see {self.logs}")
            time.sleep(0.5)

    async def supervise(self) -> None:
        """Start it again whenever it stops."""
        while True:
            await asyncio.sleep(2)
            if self.process is not None and self.process.poll() is not None:
                print(f"the Prefect server stopped (exit {self.process.returncode}); restarting")
                await asyncio.to_thread(self.start)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _die_with_parent() -> None:
    """In the child: the kernel sends it SIGTERM when `serve` ends, however it ends."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def prefect_api(settings: Settings) -> Iterator[PrefectServer | None]:
    """PREFECT_API_URL if set (then nothing is started), else a server started here."""
    for key, value in SERVE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if os.environ.get("PREFECT_API_URL"):
        yield None
        return
    server = PrefectServer(settings.prefect_port, settings.home / "serve" / "prefect-server.log")
    try:
        atexit.register(server.stop)
        server.start()
        os.environ["PREFECT_API_URL"] = server.api
        yield server
    finally:
        server.stop()


async def served_deployments(load_flows: FlowLoader) -> list[RunnerDeployment]:
    """The deployments `serve` offers, each with its form's parameter schema, as Prefect's
    runner serves them (built here without a server)."""
    modules: dict[Path, ModuleType] = {}
    for served in DEPLOYMENTS:
        if served.flow_file not in modules:
            module = modules[served.flow_file] = load_flows(served.flow_file)
            sys.modules.setdefault(module.__name__, module)  # Prefect finds the file by it
    return [
        await getattr(modules[served.flow_file], served.function).ato_deployment(
            name=served.name,
            description=served.description,
            tags=list(served.tags),
            parameters={name: {} for name in served.parameters},
        )
        for served in DEPLOYMENTS
    ]


async def _serve(load_flows: FlowLoader, settings: Settings, server: PrefectServer | None) -> None:
    import uvicorn
    from prefect import aserve

    deployments = await served_deployments(load_flows)
    work: list[Any] = [
        aserve(*deployments, print_starting_message=False, limit=settings.serve_limit)
    ]
    http: uvicorn.Server | None = None
    if settings.alert_rules is not None:
        receiver = build_receiver(settings, PrefectStarter(), ContainNow(settings))
        config = uvicorn.Config(
            receiver.app,
            host=settings.receiver_host,
            port=settings.receiver_port,
            log_level="warning",
        )
        http = uvicorn.Server(config)
        work.append(http.serve())
    if server is not None:
        work.append(server.supervise())
    # Prefect's runner takes SIGTERM for itself and stops gracefully: when any part ends,
    # the rest is stopped too.
    tasks = [asyncio.ensure_future(part) for part in work]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    if http is not None:
        http.should_exit = True  # answers what it has, then stops taking alerts
        await asyncio.wait(pending, timeout=10)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        task.result()


def serve(load_flows: FlowLoader, settings: Settings) -> None:
    """Run until interrupted (Ctrl-C, SIGTERM). The flows are loaded once the API is known:
    Prefect reads PREFECT_API_URL when it is first imported."""
    signal.signal(signal.SIGTERM, _interrupt)
    with prefect_api(settings) as server:
        api = os.environ["PREFECT_API_URL"]
        ui = api.removesuffix("/api")
        print(f"Prefect API {api}; UI {ui}")
        print(f"serving {', '.join(d.name for d in DEPLOYMENTS)}")
        if settings.alert_rules is not None:
            where = f"http://{settings.receiver_host}:{settings.receiver_port}"
            print(f"alert receiver {where}/alerts/{{alertmanager,guardduty,generic}}")
        else:
            print("no alert receiver: set BREACHBOOK_ALERT_RULES to run it")
        if settings.customers_url is None:
            print(
                "no customer database: drills other than demo-drill fail until "
                "BREACHBOOK_CUSTOMERS_URL is set"
            )
        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
            asyncio.run(_serve(load_flows, settings, server))
