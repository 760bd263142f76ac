"""A real OpenSSH server for the --host tests: ``/usr/sbin/sshd`` on 127.0.0.1 at a free port,
run as the current user with throwaway host and user keys made by ``ssh-keygen`` in a temp
folder, and a client ``ssh_config`` naming it ``testdev``, so a test passes
``--host testdev --ssh-config FILE`` exactly as a user passes an alias.

The device's $HOME is a temp folder (sshd's ``SetEnv HOME=``), so the bundle copies land in
``<tmp>/home/.cache/edgeresnet/bundles`` and a test never touches the real ~/.cache. Every
connection goes to 127.0.0.1. Without sshd, ssh or ssh-keygen the tests skip, saying which
(setup.sh installs openssh-server where it runs apt as root)."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD_PATHS = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd")


def missing() -> str | None:
    """Why the server cannot be started here, or None."""
    if not any(os.access(p, os.X_OK) for p in SSHD_PATHS):
        return "no OpenSSH server (/usr/sbin/sshd): apt install openssh-server (setup.sh does where it runs apt as root)"
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"no `{tool}` (OpenSSH's client): apt install openssh-client"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgeresnet-test", "-f", str(path)],
                   check=True, capture_output=True)
    return path


@dataclass
class Sshd:
    """A running server and the client config that reaches it as ``testdev``."""

    root: Path
    port: int
    config: Path  # the client's ssh_config: Host testdev, testdev-wrongkey, testdev-closed
    home: Path  # the device's $HOME
    proc: subprocess.Popen

    @property
    def cache(self) -> Path:
        return self.home / ".cache" / "edgeresnet" / "bundles"

    def log(self) -> str:
        return (self.root / "sshd.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(root: Path, *, path: str | None = None, home_tmpfs_kb: int | None = None, alias: str = "testdev") -> Sshd:
    """Start sshd in ``root`` (keys, configs, log, the device's home). ``path`` becomes the
    device's PATH (a fake command first); ``home_tmpfs_kb`` mounts a tmpfs of that size on the
    device's ~/.cache, in a mount namespace of the server's own (``unshare``: root only);
    ``alias`` names the host in the client config (tests/readme_check.py: jetson)."""
    sshd = next(p for p in SSHD_PATHS if os.access(p, os.X_OK))
    root.mkdir(parents=True, exist_ok=True)
    home = root / "home"
    (home / ".cache").mkdir(parents=True, exist_ok=True)
    host_key, user_key, wrong_key = (keygen(root / n) for n in ("host_key", "user_key", "wrong_key"))
    (root / "authorized_keys").write_text(Path(f"{user_key}.pub").read_text())
    if os.geteuid() == 0:  # sshd as root wants its privilege-separation folder (the package makes it)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    for attempt in range(5):
        port = free_port()
        cfg = root / "sshd_config"
        env = [f"HOME={home}"] + ([f"PATH={path}"] if path else [])
        cfg.write_text("\n".join([
            "ListenAddress 127.0.0.1", f"Port {port}", f"HostKey {host_key}", f"AuthorizedKeysFile {root}/authorized_keys",
            "StrictModes no", "UsePAM no", f"PidFile {root}/sshd.pid", "PermitRootLogin prohibit-password",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UseDNS no", "PrintMotd no",
            f"SetEnv {' '.join(env)}", ""]))
        command = [sshd, "-D", "-e", "-f", str(cfg)]
        if home_tmpfs_kb:
            mount = f"mount -t tmpfs -o size={home_tmpfs_kb}k edgeresnet-test {home / '.cache'}"
            command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", f'{mount} && exec "$@"', "sh", *command]
        log = (root / "sshd.log").open("w")
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        server = Sshd(root, port, _client_config(root, port, user_key, wrong_key, alias), home, proc)
        if _listening(server):
            return server
        server.stop()
        if "Address already in use" not in server.log():
            raise RuntimeError(f"sshd did not start: {server.log()[-2000:]}")
    raise RuntimeError("sshd found no free port")


def can_mount_tmpfs() -> bool:
    """Whether this user may mount a tmpfs in a mount namespace of its own (root in most
    containers that allow unshare)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    res = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                          "mount -t tmpfs -o size=64k edgeresnet-test /mnt"], capture_output=True)
    return res.returncode == 0


def _listening(server: Sshd, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if server.proc.poll() is not None:
            return False
        if "Server listening" in server.log():
            return True
        time.sleep(0.05)
    return False


def _client_config(root: Path, port: int, key: Path, wrong: Path, alias: str) -> Path:
    """testdev (the right key), testdev-wrongkey (a key the server does not know), testdev-closed
    (a port nothing listens on); ``alias`` for testdev."""
    user = getpass.getuser()
    common = ["  HostName 127.0.0.1", f"  User {user}", "  IdentitiesOnly yes", "  IdentityAgent none",
              f"  UserKnownHostsFile {root}/known_hosts", "  StrictHostKeyChecking no", "  LogLevel ERROR",
              "  ControlMaster no", "  ControlPath none"]
    hosts = {alias: (port, key), f"{alias}-wrongkey": (port, wrong), f"{alias}-closed": (free_port(), key)}
    lines = []
    for name, (p, k) in hosts.items():
        lines += [f"Host {name}", f"  Port {p}", f"  IdentityFile {k}", *common, ""]
    path = root / "ssh_config"
    path.write_text("\n".join(lines))
    return path
