"""A throwaway mosquitto broker for tests: loopback, a free port, per-machine users and the
topic ACL documented in docs/backend-fleet.md. ``start_broker`` raises BrokerUnavailable with
the reason when mosquitto is not installed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ACL = """\
# The backend reads every machine's acknowledgements and publishes every instruction.
user vendhw-backend
topic readwrite vendhw/#

# A machine (its username is its machine id) reads only its instructions and writes only its
# acknowledgements.
pattern read vendhw/%u/instructions
pattern write vendhw/%u/acks
"""


class BrokerUnavailable(RuntimeError):
    pass


@dataclass
class Broker:
    folder: Path
    port: int
    process: subprocess.Popen[bytes]
    passwords: dict[str, str]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_broker(users: dict[str, str]) -> Broker:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not (os.path.exists(mosquitto) and os.path.exists(passwd)):
        raise BrokerUnavailable("mosquitto is not installed (Debian: apt-get install "
                                "mosquitto, or .ci/setup.d/31-mosquitto.sh)")
    folder = Path(tempfile.mkdtemp(prefix="vendhw-mqtt-"))
    password_file = folder / "passwords"
    password_file.touch()
    for user, password in users.items():
        subprocess.run([passwd, "-b", str(password_file), user, password], check=True,
                       capture_output=True, timeout=30)
    (folder / "acl").write_text(ACL)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    config = folder / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {password_file}\n"
        f"acl_file {folder / 'acl'}\npersistence false\nlog_dest stderr\n"
        "log_type error\nlog_type warning\n")
    if os.geteuid() == 0:  # mosquitto drops root for its own user: let it read the files
        try:
            for path in (folder, password_file, folder / "acl", config):
                shutil.chown(path, "mosquitto")
        except (LookupError, OSError):
            pass
    process = subprocess.Popen([mosquitto, "-c", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            error = process.stderr.read().decode(errors="replace") if process.stderr else ""
            shutil.rmtree(folder, ignore_errors=True)
            raise BrokerUnavailable(f"mosquitto exited at start: {error[-300:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return Broker(folder, port, process, dict(users))
        except OSError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            shutil.rmtree(folder, ignore_errors=True)
            raise BrokerUnavailable("mosquitto did not listen within 20 s")
        time.sleep(0.05)
