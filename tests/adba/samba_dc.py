"""A Samba AD DC for the tests (the reference directory): provisioned once per session for KMS.TEST with
the 2012 R2 schema and the forest updates (functionalprep), run in its own network namespace (its ports
389/88 are fixed), stopped by PID. docs/adba.md "Samba as the reference DC"."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from emu.net import netns

PASSWORD = "emu-lab-Passw0rd"
ADMIN = "CN=Administrator,CN=Users,DC=kms,DC=test"


def provision(target: Path, samba_tool: str) -> None:
    """Provision KMS.TEST into ``target`` and apply the forest updates (about 15-20 s)."""
    target.mkdir(parents=True, exist_ok=True)
    run = [
        samba_tool,
        "domain",
        "provision",
        "--realm=KMS.TEST",
        "--domain=KMS",
        "--server-role=dc",
        "--dns-backend=NONE",
        "--base-schema=2012_R2",
        f"--targetdir={target}",
        "--host-name=dc1",
        f"--adminpass={PASSWORD}",
        "--option=interfaces=lo",
        "--option=bind interfaces only=yes",
    ]
    subprocess.run(run, check=True, capture_output=True, timeout=180)
    subprocess.run(
        [samba_tool, "domain", "functionalprep", "--function-level=2012_R2", "-H", str(target / "private" / "sam.ldb")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    conf = target / "etc" / "smb.conf"
    text = conf.read_text()
    (target / "run").mkdir(exist_ok=True)
    text = text.replace("log file = /var/log/samba/log.%m", f"log file = {target}/log.%m")
    text = text.replace(
        "[global]\n",
        f"[global]\n\tldap server require strong auth = no\n\tserver services = ldap\n\tpid directory = {target}/run\n",
        1,
    )
    conf.write_text(text)


class SambaDc:
    """A provisioned tree served by ``samba`` in namespace ``ns`` on its 127.0.0.1:389."""

    def __init__(self, tree: Path, samba: str) -> None:
        self.tree = tree
        self.ns = netns.random_name("smb")
        netns.create(self.ns)
        try:
            self.proc = netns.popen_in(
                self.ns,
                [samba, "-i", "-M", "single", f"--configfile={tree / 'etc' / 'smb.conf'}"],
                stdout=subprocess.DEVNULL,
                stderr=(tree / "samba.out").open("ab"),
            )
            self._wait()
        except BaseException:
            self.stop()
            raise

    def _wait(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"samba exited: {(self.tree / 'samba.out').read_text()[-2000:]}")
            if netns.run_in(self.ns, _port_open, 389):
                return
            time.sleep(0.2)
        raise RuntimeError("samba did not listen on 389 within 60 s")

    def run(self, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """A command inside the DC's namespace."""
        return subprocess.run(
            ["ip", "netns", "exec", self.ns, *argv], input=stdin, capture_output=True, text=True, timeout=60
        )

    def stop(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if netns.exists(self.ns):
            netns.delete(self.ns)


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.3).close()
        return True
    except OSError:
        return False
