"""vendhw's poll decoder against the POLL expectations of the Node eSSP library's own tests.

``ssp_node_poll_cases.json`` holds, for each POLL test of kybarg/encrypted-smiley-secure-
protocol ``src/utils.parseData.test.js`` (commit in the file), the bytes the test hands to
the library and the events it expects (extracted by running that test file, see
``ssp_node/extract_poll_cases.js``). Each case must decode to the same events, channels and
values, except the deviations in ``ssp_peers.DEVIATIONS``, where GA138 v2.2 and the peer
disagree or the peer skips bytes it cannot read; vendhw then reports an UNKNOWN EVENT with
the raw bytes instead of guessing, and the test checks it does exactly that.
"""

from __future__ import annotations

from typing import Any

import pytest
from ssp_peers import CASES, DEVIATIONS

from vendhw.framing.ssp import UNKNOWN_EVENT, decode_poll


def _peer_values(event: dict[str, Any]) -> list[tuple[int, int | None]] | None:
    """(value, requested) pairs the peer expects, or None when it gives no value."""
    if "actual" in event:
        return [(event["actual"], event["requested"])]
    value = event.get("value")
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, dict):
            out.append((item.get("value", item.get("actual")), item.get("requested")))
        else:
            out.append((item, None))
    return out


def _matches(case: dict[str, Any]) -> tuple[bool, list[dict[str, Any]]]:
    data = bytes.fromhex(case["data"])
    assert data[0] == 0xF0  # every POLL case starts with OK
    events = decode_poll(data[1:], case["protocol_version"])
    known = [e for e in events if e["event"] != UNKNOWN_EVENT]
    if len(known) != len(events) or [e["code"] for e in known] != [
            e["code"] for e in case["expected"]]:
        return False, events
    for mine, peer in zip(known, case["expected"], strict=True):
        if "channel" in peer and mine.get("channel") != peer["channel"]:
            return False, events
        expected = _peer_values(peer)
        if expected is not None and "values" in mine:
            got = [(v["value"], v.get("requested")) for v in mine["values"]]
            if [(v, r) for v, r in expected] != [(v, r if r is not None else None)
                                                  for v, r in got[:len(expected)]]:
                if [v for v, _ in expected] != [v for v, _ in got]:
                    return False, events
    return True, events


def _name(case: dict[str, Any]) -> str:
    return f"v{case['protocol_version']}:{case['data']}"


@pytest.mark.parametrize("case", CASES, ids=_name)
def test_peer_poll_case(case: dict[str, Any]) -> None:
    ok, events = _matches(case)
    if case["test"] in DEVIATIONS:
        assert not ok, f"listed as a deviation but now agrees: {case['test']}"
        unknown = [e for e in events if e["event"] == UNKNOWN_EVENT]
        assert unknown, "a deviation must leave bytes for the operator (UNKNOWN EVENT)"
    else:
        assert ok, (case["test"], events, case["expected"])


def test_the_fixture_is_the_peers_whole_poll_suite() -> None:
    assert len(CASES) == 74
    assert set(DEVIATIONS) <= {case["test"] for case in CASES}
