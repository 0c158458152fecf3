"""machine.toml: [[cash]] MDB devices and the [[cashless]] reader on one port share one bus."""

from __future__ import annotations

from pathlib import Path

from vendhw.agent.runner import Agent, AgentConfig


def test_agent_opens_one_bus_for_changer_bill_validator_and_reader(tmp_path: Path) -> None:
    path = tmp_path / "machine.toml"
    path.write_text(f'''
[backend]
url = "http://127.0.0.1:1"
machine_id = "m1"
secret = "s"
[board]
profile = "easivend-column"
port = "sim://easivend-column"
[agent]
data_dir = "{tmp_path / "data"}"
[[cashless]]
port = "sim://mdb-bus?coins=4"
[[cash]]
protocol = "mdb-changer"
port = "sim://mdb-bus?coins=4"
[[cash]]
protocol = "mdb-bill"
port = "sim://mdb-bus?coins=4"
''')
    agent = Agent(AgentConfig.load(path))
    try:
        assert agent.cash is not None and agent.card is not None
        changer, bill = agent.cash.acceptor.devices
        link = agent.card.reader.link
        assert changer.link is link and bill.link is link  # type: ignore[attr-defined]
        assert link.users == 3
    finally:
        agent.close()
    assert link.transport.closed
