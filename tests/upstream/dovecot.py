"""A private Dovecot IMAP server for the tests: a child process on 127.0.0.1.

Debian's ``dovecot-imapd`` (CI installs it). The server runs in the
foreground (``dovecot -F``) in a temporary directory, on a free port, with a
passwd-file of test users, plain-text login without TLS, and
``auth_failure_delay = 0`` so a failed login does not slow the next one. It is
stopped by pid. ``doveadm kick`` makes it send BYE to a user's sessions.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from sessionstore.testing import free_port, wait_until
from tests.certificates import self_signed

_CONFIG = """\
base_dir = {d}/run
state_dir = {d}/state
protocols = imap
listen = 127.0.0.1
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
# This instance's own greeting: whatever else answers on its port (another test run's
# server that drew the same port) is told apart.
login_greeting = {greeting}
# The auth process cannot reach anvil's penalty socket, so it applies no auth penalty:
# a login right after a failed one is not delayed by ~4 s.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
log_path = {d}/dovecot.log
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
  }}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={d}/home/%u
}}
"""


def dovecot_binary() -> str | None:
    """Path of ``dovecot`` if installed (it lives in /usr/sbin)."""
    return shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/usr/local/sbin")


class Dovecot:
    """One Dovecot server with the given users (name -> password)."""

    def __init__(self, users: dict[str, str], *, tls: bool = False) -> None:
        binary = dovecot_binary()
        if binary is None:
            raise RuntimeError("dovecot is not installed (apt-get install -y dovecot-imapd)")
        self.binary = binary
        self.doveadm = shutil.which("doveadm") or "/usr/bin/doveadm"
        self.directory = Path(tempfile.mkdtemp(prefix="sessionstore-dovecot-"))
        self.directory.chmod(0o755)  # the auth and imap processes run as other users
        self.port = free_port()
        #: IMAPS port (implicit TLS with a self-signed certificate), 0 without `tls`.
        self.tls_port = free_port() if tls else 0
        self.certificate: Path | None = None
        self.users = users
        self.process: subprocess.Popen[bytes] | None = None
        self.config = self.directory / "dovecot.conf"
        self.greeting = f"sessionstore-test-{secrets.token_hex(6)}"
        nobody = pwd.getpwnam("nobody")
        for sub in ("run", "state", "home"):
            (self.directory / sub).mkdir()
        for user in users:
            home = self.directory / "home" / user
            (home / "Maildir" / "new").mkdir(parents=True)
            for path in (home, home / "Maildir", home / "Maildir" / "new"):
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
        lines = [f"{user}:{{PLAIN}}{password}\n" for user, password in users.items()]
        (self.directory / "passwd").write_text("".join(lines))
        ssl = "ssl = no"
        if tls:
            self.certificate, key = self_signed(self.directory)
            ssl = f"ssl = yes\nssl_cert = <{self.certificate}\nssl_key = <{key}"
        self.config.write_text(
            _CONFIG.format(
                d=self.directory,
                port=self.port,
                tls_port=self.tls_port,
                ssl=ssl,
                greeting=self.greeting,
            )
        )

    def start(self) -> Dovecot:
        """Start in the foreground and wait until the port greets as this server."""
        (self.directory / "run" / "master.pid").unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [self.binary, "-F", "-c", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own process group: the master's children (imap, log, stats) outlive a
            # SIGTERM to the master, so stop() signals the whole group it started.
            start_new_session=True,
        )
        wait_until(self._accepting, f"dovecot on port {self.port}")
        return self

    def _accepting(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"dovecot exited with {self.process.returncode}: {self.log()}")
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
            banner = sock.recv(512)
        return banner.startswith(b"* OK") and self.greeting.encode() in banner

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL after 10 s; wait until the port closes.

        Existing IMAP sessions are cut too, as when a real server goes down.
        """
        if self.process is not None:
            group = self.process.pid  # the group id of the session it leads
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            wait_until(lambda: not self._group_alive(group), "dovecot children gone")
        self.process = None
        wait_until(self._refusing, f"dovecot port {self.port} closed")

    @staticmethod
    def _group_alive(group: int) -> bool:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True

    def _refusing(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return False
        except ConnectionRefusedError:
            return True

    def kick(self, user: str) -> str:
        """``doveadm kick``: the server sends BYE to the user's sessions and closes them."""
        done = subprocess.run(
            [self.doveadm, "-c", str(self.config), "kick", user],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
        return done.stdout + done.stderr

    def deliver(self, user: str, count: int) -> None:
        """Put `count` small messages into the user's INBOX (as Maildir files)."""
        nobody = pwd.getpwnam("nobody")
        new = self.directory / "home" / user / "Maildir" / "new"
        for index in range(count):
            path = new / f"{time.time_ns()}.{index}.sessionstore-test"
            path.write_text(
                f"From: a@example.com\r\nSubject: test {index}\r\n\r\nhello {index}\r\n"
            )
            os.chown(path, nobody.pw_uid, nobody.pw_gid)

    def log(self) -> str:
        """The tail of the server's log (for failure messages)."""
        path = self.directory / "dovecot.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def remove(self) -> None:
        """Stop and delete the directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
