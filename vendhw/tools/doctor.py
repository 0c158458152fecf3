"""What usually breaks on a Linux vending controller, checked one by one, each with its fix.

Every check returns :class:`Check` objects (``ok``, ``warn``, ``fail`` or ``skip``); nothing
is changed on the system. The roots of ``/proc``, ``/sys`` and ``/dev`` are parameters so the
checks read a test's directory tree the same way they read the real one.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FTDI_DEFAULT_LATENCY_MS = 16
"""The FTDI driver's default latency timer: a reply can sit 16 ms in the adapter."""

PORT_GLOBS = ("ttyUSB*", "ttyACM*", "ttyS[0-9]*", "ttyAMA*", "ttyTHS*", "serial[0-9]*")


@dataclass
class Check:
    """One finding."""

    check: str
    status: str
    """``ok``, ``warn``, ``fail`` or ``skip``."""
    detail: str
    fix: str = ""
    port: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"check": self.check, "status": self.status,
                               "detail": self.detail, "fix": self.fix or None}
        if self.port:
            out["port"] = self.port
        return out


def serial_ports(dev: str = "/dev") -> list[str]:
    """Serial device nodes present (USB adapters, CDC-ACM, on-board UARTs)."""
    found: list[str] = []
    root = Path(dev)
    for pattern in PORT_GLOBS:
        found += sorted(str(p) for p in root.glob(pattern))
    return found


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def check_groups(ports: list[str]) -> list[Check]:
    """Is this user in the group that owns the ports (usually dialout)?"""
    if os.geteuid() == 0:
        return [Check("groups", "ok", "running as root: every port is accessible")]
    groups = set(os.getgroups()) | {os.getegid()}
    owners: dict[int, list[str]] = {}
    for port in ports:
        try:
            owners.setdefault(os.stat(port).st_gid, []).append(port)
        except OSError:
            continue
    if not owners:
        try:
            gid = grp.getgrnam("dialout").gr_gid
        except KeyError:
            return [Check("groups", "skip", "no serial ports and no dialout group here")]
        owners[gid] = []
    out: list[Check] = []
    for gid, owned in owners.items():
        try:
            name = grp.getgrgid(gid).gr_name
        except KeyError:
            name = str(gid)
        what = ", ".join(owned) or "serial ports"
        if gid in groups:
            out.append(Check("groups", "ok", f"{_user()} is in group {name} ({what})"))
        else:
            out.append(Check("groups", "fail", f"{_user()} is not in group {name}, which owns "
                             f"{what}",
                             f"sudo usermod -aG {name} {_user()}, then log out and in again"))
    return out


def check_access(port: str) -> Check:
    """Can this user open the port for reading and writing?"""
    if not os.path.exists(port):
        return Check("access", "fail", f"{port} does not exist",
                     "check the cable; list the ports with: vendhw ports", port)
    if os.access(port, os.R_OK | os.W_OK):
        return Check("access", "ok", f"{port} is readable and writable", port=port)
    return Check("access", "fail", f"{port}: permission denied",
                 "add yourself to the port's group (see the groups check) or install the "
                 "udev rule of docs/deploy/99-vendhw.rules", port)


def _comm(proc: Path, pid: str) -> str:
    try:
        return (proc / pid / "comm").read_text().strip()
    except OSError:
        return "?"


def holders(port: str, proc: str = "/proc") -> list[tuple[int, str]]:
    """``(pid, command)`` of the other processes that have ``port`` open."""
    target = os.path.realpath(port)
    root = Path(proc)
    me = os.getpid()
    found: list[tuple[int, str]] = []
    try:
        pids = [p for p in os.listdir(root) if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        if int(pid) == me:
            continue
        fd_dir = root / pid / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.path.realpath(os.readlink(fd_dir / fd)) == target:
                    found.append((int(pid), _comm(root, pid)))
                    break
            except OSError:
                continue
    return sorted(found)


def check_busy(port: str, proc: str = "/proc") -> Check:
    """Does another process hold the port (open, or locked the way vendhw locks it)?"""
    held = holders(port, proc)
    locked = False
    if os.path.exists(port):
        try:
            import fcntl

            fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError as exc:
                locked = exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
            finally:
                os.close(fd)
        except OSError:
            pass
    if not held and not locked:
        return Check("busy", "ok", f"no other process has {port} open", port=port)
    who = ", ".join(f"{name} (pid {pid})" for pid, name in held) or "another process"
    lock = " and holds its lock" if locked else ""
    return Check("busy", "fail", f"{port} is open in {who}{lock}",
                 "stop that program (a second vendhw, minicom, screen, ModemManager, "
                 "brltty, a getty) or use another port", port)


def _running(names: set[str], proc: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    root = Path(proc)
    try:
        pids = [p for p in os.listdir(root) if p.isdigit()]
    except OSError:
        return out
    for pid in pids:
        comm = _comm(root, pid)
        if comm in names:
            out.append((int(pid), comm))
    return out


def check_grabbers(ports: list[str], proc: str = "/proc") -> list[Check]:
    """ModemManager probes new ttyACM ports as modems; brltty takes CH340/CP210x adapters."""
    out: list[Check] = []
    acm = [p for p in ports if "ttyACM" in p]
    mm = _running({"ModemManager"}, proc)
    if mm:
        status = "fail" if acm else "warn"
        where = f" and these ports exist: {', '.join(acm)}" if acm else ""
        out.append(Check("modemmanager", status,
                         f"ModemManager is running (pid {mm[0][0]}){where}; it sends AT "
                         "commands to new ttyACM ports and can hold them for seconds",
                         "sudo systemctl disable --now ModemManager, or mark the device with "
                         'ENV{ID_MM_DEVICE_IGNORE}="1" (docs/deploy/99-vendhw.rules)'))
    else:
        out.append(Check("modemmanager", "ok", "ModemManager is not running"))
    brltty = _running({"brltty"}, proc)
    if brltty:
        out.append(Check("brltty", "warn", f"brltty is running (pid {brltty[0][0]}); it claims "
                         "CH340 and CP210x adapters as braille displays",
                         "sudo apt remove brltty (or disable its udev rules)"))
    return out


def check_latency(ports: list[str], sys_root: str = "/sys") -> list[Check]:
    """The FTDI latency timer (16 ms by default) delays every reply."""
    out: list[Check] = []
    for port in ports:
        name = os.path.basename(os.path.realpath(port))
        path = Path(sys_root) / "bus" / "usb-serial" / "devices" / name / "latency_timer"
        try:
            value = int(path.read_text().strip())
        except (OSError, ValueError):
            continue
        if value > 1:
            out.append(Check(
                "latency", "warn",
                f"{port}: FTDI latency timer is {value} ms"
                + (" (the driver default)" if value == FTDI_DEFAULT_LATENCY_MS else "")
                + "; replies wait that long in the adapter",
                f"echo 1 | sudo tee {path} (or the udev rule in docs/deploy/99-vendhw.rules; "
                "vendhw also asks for low latency when a profile sets low_latency)", port))
        else:
            out.append(Check("latency", "ok", f"{port}: FTDI latency timer is {value} ms",
                             port=port))
    return out


def check_libusb() -> Check:
    """usb:// needs pyusb and a libusb backend."""
    try:
        import usb.backend.libusb1 as libusb1
    except ImportError:
        return Check("libusb", "skip", "pyusb is not installed (only usb:// devices need it)",
                     "pip install 'vendhw[usb]'")
    try:
        backend = libusb1.get_backend()
    except Exception as exc:  # pyusb raises various errors for a broken library
        backend = None
        detail = f" ({type(exc).__name__}: {exc})"
    else:
        detail = ""
    if backend is None:
        return Check("libusb", "warn", f"pyusb finds no libusb-1.0 library{detail}",
                     "sudo apt install libusb-1.0-0")
    return Check("libusb", "ok", "pyusb finds libusb-1.0")


def run_checks(ports: list[str] | None = None, *, proc: str = "/proc", sys_root: str = "/sys",
               dev: str = "/dev") -> list[Check]:
    """Every check, for the given ports or every serial port present."""
    present = serial_ports(dev)
    targets = list(ports) if ports else present
    checks: list[Check] = []
    if not targets:
        checks.append(Check("ports", "warn", "no serial ports found",
                            "plug the adapter in; dmesg | tail shows whether the kernel saw it"))
    checks += check_groups(targets)
    for port in targets:
        access = check_access(port)
        checks.append(access)
        if os.path.exists(port):
            checks.append(check_busy(port, proc))
    checks += check_grabbers(targets, proc)
    checks += check_latency(targets, sys_root)
    checks.append(check_libusb())
    return checks
