"""A throwaway PostgreSQL cluster for tests: ``initdb`` in a temp folder, a unix socket there.

Debian's ``postgresql`` package puts the binaries under /usr/lib/postgresql/<major>/bin (not on
PATH). PostgreSQL refuses to run as root, so when the tests run as root the folder is handed to
the ``postgres`` user and every server command runs as that user (``runuser``).

``start_cluster()`` returns a :class:`Cluster` or raises :class:`ClusterUnavailable` with the
reason; the fixture turns that into a failure under ``CI=true`` and a skip otherwise.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


class ClusterUnavailable(RuntimeError):
    """PostgreSQL cannot start here (not installed, no postgres user, ...)."""


def _bindir() -> Path | None:
    needed = ("initdb", "postgres", "pg_isready", "createdb")
    candidates = [os.environ.get("VENDHW_PG_BINDIR", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    found = shutil.which("initdb")
    if found:
        candidates.append(str(Path(found).parent))
    for folder in candidates:
        if folder and all((Path(folder) / name).exists() for name in needed):
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    bindir: Path
    folder: Path
    port: int
    as_user: str | None
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket_dir(self) -> Path:
        return self.folder / "sock"

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL (psycopg 3) over the unix socket."""
        user = self.as_user or _current_user()
        return (f"postgresql+psycopg://{user}@/{database}?host={self.socket_dir}"
                f"&port={self.port}")

    def tcp_url(self, database: str = "postgres") -> str:
        user = self.as_user or _current_user()
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{database}"

    def _cmd(self, args: list[str]) -> list[str]:
        if self.as_user:
            return ["runuser", "-u", self.as_user, "--", *args]
        return args

    def create_database(self, name: str) -> str:
        """A fresh, empty database; returns its URL."""
        subprocess.run(self._cmd([str(self.bindir / "createdb"), "-h", str(self.socket_dir),
                                  "-p", str(self.port), name]),
                       check=True, capture_output=True, timeout=30)
        return self.url(name)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: smart shutdown... fast enough for tests
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)


def _current_user() -> str:
    import getpass

    return getpass.getuser()


def start_cluster(durable: bool = False) -> Cluster:
    """initdb + postgres in a temp folder; raises ClusterUnavailable with a reason.

    ``durable=False`` (tests) turns fsync off; benchmarks pass True for real commits."""
    bindir = _bindir()
    if bindir is None:
        raise ClusterUnavailable("PostgreSQL is not installed (no initdb; Debian: apt-get "
                                 "install postgresql, or .ci/setup.d/30-postgresql.sh)")
    as_user: str | None = None
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise ClusterUnavailable("running as root and there is no 'postgres' user to "
                                     "run PostgreSQL as") from None
        as_user = "postgres"
    folder = Path(tempfile.mkdtemp(prefix="vendhw-pg-"))
    (folder / "sock").mkdir()
    if as_user:
        shutil.chown(folder, as_user)
        shutil.chown(folder / "sock", as_user)
        folder.chmod(0o700)
    cluster = Cluster(bindir, folder, _free_port(), as_user)
    data = folder / "data"
    init = subprocess.run(cluster._cmd([str(bindir / "initdb"), "-D", str(data), "-A", "trust",
                                        "-E", "UTF8", "--no-sync", "-U",
                                        as_user or _current_user()]),
                          capture_output=True, timeout=120)
    if init.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise ClusterUnavailable("initdb failed: " + init.stderr.decode(errors="replace")[-400:])
    log = open(folder / "server.log", "wb")
    if as_user:
        shutil.chown(folder / "server.log", as_user)
    cluster.process = subprocess.Popen(
        cluster._cmd([str(bindir / "postgres"), "-D", str(data), "-p", str(cluster.port),
                      "-k", str(cluster.socket_dir), "-c", "listen_addresses=127.0.0.1",
                      *([] if durable else ["-c", "fsync=off", "-c", "synchronous_commit=off",
                                            "-c", "full_page_writes=off"]),
                      "-c", "max_connections=200",
                      "-c", "shared_buffers=32MB"]),
        stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if cluster.process.poll() is not None:
            text = (folder / "server.log").read_text(errors="replace")[-400:]
            shutil.rmtree(folder, ignore_errors=True)
            raise ClusterUnavailable(f"postgres exited at start: {text}")
        ready = subprocess.run([str(bindir / "pg_isready"), "-h", str(cluster.socket_dir),
                                "-p", str(cluster.port)], capture_output=True)
        if ready.returncode == 0:
            return cluster
        time.sleep(0.1)
    cluster.stop()
    raise ClusterUnavailable("postgres did not accept connections within 30 s")
