"""A real IMAP server for tests: a private Dovecot instance (Debian's dovecot-imapd, which
.ci/run installs) on free loopback ports, with its own configuration, a passwd-file user and
a maildir under the test's folder. STARTTLS on one port (TLS required before LOGIN), IMAP
over TLS on another, a self-signed certificate made for the test.

What the server holds is read straight from the maildir (`filed()`), not through IMAP, so a
test checks the product's IMAP code against the files Dovecot wrote.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from pathlib import Path

from tests.conftest import free_port
from tests.integration.smtp_server import self_signed

USER, PASSWORD = "letters", "s3cret-imap-password"
SENT = "Sent"
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
instance_name = breachbook-test-{port}
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = yes
auth_mechanisms = plain login
auth_failure_delay = 0
mail_fsync = never
first_valid_uid = 1
default_internal_user = {internal}
default_login_user = {login}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_group} home={root}/mail/%u
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  mailbox {sent} {{
    special_use = \\Sent
    auto = create
  }}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
"""


@dataclass(frozen=True)
class ImapServer:
    host: str
    port: int
    """STARTTLS, TLS required before LOGIN."""
    tls_port: int
    """IMAP over TLS from the first byte."""
    ca_file: Path
    maildir: Path
    log: Path

    def env(self) -> dict[str, str]:
        """The BREACHBOOK_IMAP_* settings that point a run at this server (STARTTLS)."""
        return {
            "BREACHBOOK_IMAP_HOST": self.host,
            "BREACHBOOK_IMAP_PORT": str(self.port),
            "BREACHBOOK_IMAP_STARTTLS": "true",
            "BREACHBOOK_IMAP_USERNAME": USER,
            "BREACHBOOK_IMAP_PASSWORD": PASSWORD,
            "BREACHBOOK_IMAP_CA_FILE": str(self.ca_file),
        }

    def sent_files(self) -> list[Path]:
        folder = self.maildir / f".{SENT}"
        return [p for sub in ("new", "cur") for p in (folder / sub).glob("*") if p.is_file()]

    def filed(self) -> list[str]:
        """The Message-ID of every message in the Sent folder, as Dovecot stored it."""
        parser = BytesHeaderParser()
        found = []
        for path in self.sent_files():
            try:
                found.append(str(parser.parsebytes(path.read_bytes())["Message-ID"]))
            except FileNotFoundError:  # moved from new/ to cur/ while listed
                continue
        return found


def _users() -> tuple[str, str, str]:
    """(internal user, login user, mail uid) Dovecot runs as: its own users under root (it
    refuses to serve mail as root), else the user running the tests."""
    if os.geteuid() == 0:
        return "dovecot", "dovenull", "dovecot"
    me = pwd.getpwuid(os.geteuid()).pw_name
    return me, me, me


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def dovecot() -> Iterator[ImapServer]:
    """A started Dovecot serving one user, whose Sent folder is empty. Its folder is a
    temporary one of its own, open to Dovecot's users (pytest's are the runner's only)."""
    if not Path(DOVECOT).is_file():
        raise RuntimeError("dovecot is not installed: apt-get install dovecot-imapd (.ci/run does)")
    with tempfile.TemporaryDirectory(prefix="breachbook-dovecot-") as temporary:
        root = Path(temporary)
        root.chmod(0o755)
        with _started(root) as server:
            yield server


@contextmanager
def _started(root: Path) -> Iterator[ImapServer]:
    (root / "mail").mkdir()
    cert, key = self_signed(root)
    port, tls_port = free_port(), free_port()
    internal, login, mail_user = _users()
    (root / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n", encoding="utf-8")
    config = root / "dovecot.conf"
    config.write_text(
        CONFIG.format(
            root=root,
            cert=cert,
            key=key,
            port=port,
            tls_port=tls_port,
            internal=internal,
            login=login,
            mail_user=mail_user,
            mail_group=mail_user,
            sent=SENT,
        ),
        encoding="utf-8",
    )
    shutil.chown(root / "mail", mail_user, mail_user)
    process = subprocess.Popen([DOVECOT, "-F", "-c", str(config)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not (_listening(port) and _listening(tls_port)):
            if process.poll() is not None:
                raise RuntimeError(
                    f"dovecot ended: {process.stderr.read().decode() if process.stderr else ''}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError("dovecot did not listen within 20 s")
            time.sleep(0.02)
        yield ImapServer(
            "127.0.0.1",
            port,
            tls_port,
            cert,
            root / "mail" / USER / "Maildir",
            root / "dovecot.log",
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
