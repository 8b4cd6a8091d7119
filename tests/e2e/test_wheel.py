"""The wheel carries everything a drill needs: installed into a fresh venv outside the checkout
and run from a folder that is not one, `breachbook drill --demo` uses the packaged playbooks,
templates, rules and flow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.wheel

CHECKOUT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "src")
CONTENT = ("playbooks", "templates", "rules", "flows")


def _run(
    command: list[str],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    codes: tuple[int, ...] = (0,),
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=300
    )
    assert done.returncode in codes, (
        f"{' '.join(command)}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    )
    return done


def _build_wheel(scratch: Path) -> Path:
    """From a copy of the sources, so the build leaves nothing in the checkout; with this
    venv's setuptools, so no network is needed."""
    source = scratch / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in (*SOURCES, *CONTENT):
        if (CHECKOUT / name).is_dir():
            shutil.copytree(CHECKOUT / name, source / name, ignore=ignore)
        else:
            shutil.copy2(CHECKOUT / name, source / name)
    dist = scratch / "dist"
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index"]
    _run([*pip, "--no-build-isolation", "-w", str(dist), str(source)])
    (wheel,) = dist.glob("breachbook-*.whl")
    return wheel


def _fresh_venv(scratch: Path, wheel: Path) -> Path:
    """A venv that sees this one's installed packages (a .pth line, not its .pth files, so
    not the editable breachbook) and has only the wheel installed of its own."""
    venv = scratch / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    (Path(purelib.stdout.strip()) / "parent-venv.pth").write_text(
        sysconfig.get_path("purelib") + "\n", encoding="utf-8"
    )
    install = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
    _run([*install, "--ignore-installed", str(wheel)])
    return venv


def test_the_installed_wheel_drills_the_demo_without_a_checkout(tmp_path: Path) -> None:
    venv = _fresh_venv(tmp_path, _build_wheel(tmp_path))
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BREACHBOOK_", "PREFECT_"))
        and key not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env |= {
        "BREACHBOOK_HOME": str(tmp_path / "breachbook-home"),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    where = _run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import breachbook, breachbook.settings as s; print(breachbook.__file__); print(s.project_root())",
        ],
        cwd=cwd,
        env=env,
    )
    module, content = (Path(line) for line in where.stdout.split())
    assert not module.is_relative_to(CHECKOUT) and module.is_relative_to(venv)
    assert content == module.parent / "content"
    out = cwd / "drill-out"
    drill = [str(venv / "bin" / "breachbook"), "drill", "--demo", "--out", str(out)]
    done = _run(drill, cwd=cwd, env=env, codes=(0, 1))
    plan = json.loads((out / "plan.json").read_text(encoding="utf-8"))
    failed = [e for e in plan["entries"] if e["verdict"] == "FAILED"]
    # exit 1 only for residents of places no rule covers, each FAILED for a person to decide
    assert all(e["target"].startswith("no-rule:") for e in failed), failed
    assert done.returncode == (1 if failed else 0)
    assert (out / "report.md").is_file()
    assert "[DRILL]" in (out / "report.md").read_text(encoding="utf-8")
