"""pytest fixtures for testing your own application against vendhw's simulators.

Installed with vendhw (entry point ``pytest11``), so the fixtures are there in any project
that has vendhw installed; nothing to import::

    def test_my_app_vends(vendhw_board):
        app = MyApp(port=vendhw_board.port)          # a real pty, like /dev/ttyUSB0
        app.sell("1")
        assert vendhw_board.simulator.vends[-1].motor == 1

Fixtures:

* ``vendhw_sim``: a factory, ``vendhw_sim("fafb-xy", inventory=3)`` serves any simulator
  (``vendhw sim --list``, or a board profile file) on a new pty; all are closed at the end.
* ``vendhw_board``: a simulated board, ``board101`` unless the test is marked
  ``@pytest.mark.vendhw_board("fafb-xy", inventory=3)``.
* ``vendhw_ssp``, ``vendhw_id003``, ``vendhw_cctalk_coin``, ``vendhw_cctalk_bill``,
  ``vendhw_cctalk_hopper``, ``vendhw_mdb_changer``, ``vendhw_mdb_bill``: each simulated cash
  device on its own pty (MDB in the 9-bit in-band form).
* ``vendhw_backend``: the reference backend running on 127.0.0.1 in its own process, with a
  fresh database; ``add_machine()`` registers a machine and returns its secret, ``pay()`` is
  the sandbox's Pay button, ``operator()`` calls the operator API.

Each served simulator has ``port`` (the device path to open), ``simulator`` (its state: vends,
inventory, credited notes...) and ``set_fault(name, value)``.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

OPERATOR_TOKEN = "vendhw-test-operator-token"


class ServedSimulator:
    """A simulator on a pty: ``port`` to open, ``simulator`` to inspect and break."""

    def __init__(self, name: str, **options: Any) -> None:
        from vendhw import sim as sim_registry
        from vendhw.sim.pty import SimulatorOnPty

        self.name = name
        self.simulator = sim_registry.create(name, **options)
        self._served = SimulatorOnPty(self.simulator)
        self.port: str = self._served.port

    def set_fault(self, name: str, value: Any = True) -> None:
        """Switch a line or device fault on (``False`` switches it off)."""
        self.simulator.set_fault(name, value)

    def close(self) -> None:
        self._served.close()

    def __repr__(self) -> str:
        return f"<ServedSimulator {self.name} on {self.port}>"


class RunningBackend:
    """``vendhw backend serve`` on a free local port, with a database of its own."""

    def __init__(self, directory: Path) -> None:
        from vendhw.agent.demo import _free_port, _wait_ready

        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.operator_token = OPERATOR_TOKEN
        self.log = directory / "backend.log"
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "vendhw", "backend", "serve", "--db",
             str(directory / "backend.db"), "--host", "127.0.0.1", "--port", str(port),
             "--operator-token", OPERATOR_TOKEN, "--query-interval", "200ms",
             "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=self.log.open("w"), text=True)
        try:
            _wait_ready(self.url, self._proc, self.log)
        except BaseException:
            self.close()
            raise

    def operator(self, method: str, path: str, **kwargs: Any) -> Any:
        """An operator API call (``/operator/v1/...``), bearer token added."""
        import httpx

        headers = {"Authorization": f"Bearer {self.operator_token}"}
        response = httpx.request(method, f"{self.url}{path}", headers=headers, timeout=10,
                                 **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def add_machine(self, machine_id: str, slots: dict[str, tuple[str, int]],
                    secret: str | None = None) -> str:
        """Register ``machine_id`` with ``{"slot": ("product", price_minor_units)}``; the
        products are created too. Returns the machine's secret."""
        secret = secret or secrets.token_hex(16)
        products = dict(slots.values())
        self.operator("POST", "/operator/v1/catalogue", json={
            "products": [{"id": p, "name": p, "price": price} for p, price in products.items()],
            "machines": [{"id": machine_id, "secret": secret, "slots": [
                {"slot": slot, "product": p, "price": price}
                for slot, (p, price) in slots.items()]}]})
        return secret

    def client(self, machine_id: str, secret: str) -> Any:
        """A :class:`vendhw.client.BackendClient` for the machine."""
        from vendhw.client import BackendClient

        return BackendClient(self.url, machine_id, secret)

    def pay(self, order_id: str) -> None:
        """The sandbox payment page's Pay button."""
        import httpx

        httpx.post(f"{self.url}/sandbox/orders/{order_id}/pay", timeout=10).raise_for_status()

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "vendhw_board(name, **options): the board simulator vendhw_board serves")


@pytest.fixture
def vendhw_sim() -> Iterator[Callable[..., ServedSimulator]]:
    """Factory: ``vendhw_sim(NAME, **options)`` serves a simulator on a new pty."""
    served: list[ServedSimulator] = []

    def serve(name: str, **options: Any) -> ServedSimulator:
        item = ServedSimulator(name, **options)
        served.append(item)
        return item

    yield serve
    for item in served:
        item.close()


@pytest.fixture
def vendhw_board(request: pytest.FixtureRequest,
                 vendhw_sim: Callable[..., ServedSimulator]) -> ServedSimulator:
    """A simulated board (``board101``, or the one ``@pytest.mark.vendhw_board`` names)."""
    marker = request.node.get_closest_marker("vendhw_board")
    name = marker.args[0] if marker and marker.args else "board101"
    options = dict(marker.kwargs) if marker else {}
    return vendhw_sim(name, **options)


def _cash_fixture(name: str) -> Any:
    @pytest.fixture
    def fixture(vendhw_sim: Callable[..., ServedSimulator]) -> ServedSimulator:
        return vendhw_sim(name)

    fixture.__doc__ = f"The {name} simulator on a pty."
    return fixture


vendhw_ssp = _cash_fixture("ssp")
vendhw_id003 = _cash_fixture("id003")
vendhw_cctalk_coin = _cash_fixture("cctalk-coin")
vendhw_cctalk_bill = _cash_fixture("cctalk-bill")
vendhw_cctalk_hopper = _cash_fixture("cctalk-hopper")
vendhw_mdb_changer = _cash_fixture("mdb-changer")
vendhw_mdb_bill = _cash_fixture("mdb-bill")


@pytest.fixture
def vendhw_backend(tmp_path: Path) -> Iterator[RunningBackend]:
    """The reference backend on 127.0.0.1 (needs ``vendhw[server]``)."""
    pytest.importorskip("fastapi", reason="vendhw_backend needs pip install 'vendhw[server]'")
    backend = RunningBackend(tmp_path)
    try:
        yield backend
    finally:
        backend.close()
