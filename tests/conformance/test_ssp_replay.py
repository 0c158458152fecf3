"""vendhw's SSP host replays exchanges recorded or published by others (``replay://``).

* ``ssp_replay_nv9usb_issue39.jsonl``: the plain part of a real NV9USB debug log published in
  skokov3812/encrypted-smiley-secure-protocol issue #39 (the device answers SYNC, then
  PARAMETER OUT OF RANGE to HOST PROTOCOL VERSION). vendhw must read the real device's bytes,
  step the protocol version down, and end with a clear error when the log ends.
* A strict replay built at test time: a plain session whose device replies are the POLL
  payloads of the Node library's own tests (``ssp_node_poll_cases.json``), framed by the
  independent builder below. vendhw's host must write exactly the bytes the builder expects
  (sequence flags, CRC, stuffing, POLL WITH ACK, EVENT ACK after GA138's "Poll with Ack"
  events) and turn every poll into the cash events the payloads mean.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ssp_peers import CASES, DEVIATIONS, crc16_ssp

from vendhw.devices.cash import CashEventKind
from vendhw.devices.ssp import SspDevice
from vendhw.errors import NoResponseError
from vendhw.resources import protocol_vectors
from vendhw.transport import open_transport

HERE = Path(__file__).parent
VECTORS = protocol_vectors("ssp")
K = CashEventKind
POLL_WITH_ACK_EVENTS = {0xEE, 0xE6, 0xE2, 0xD1, 0xB6, 0xD2, 0xD8, 0xD9, 0xDC, 0xDD, 0xB4, 0xB1,
                        0xC9, 0xCB, 0xCA, 0xCD, 0xBF}
"""GA138 v2.2 event pages with "Poll with Ack: yes" (written out here, not vendhw's table)."""


def packet(seq: int, data: bytes) -> str:
    """An SSP packet as hex: STX, SEQ/ID (slave 0), LEN, DATA, CRC LE; 0x7F doubled."""
    body = bytes((0x80 if seq else 0, len(data))) + data
    body += crc16_ssp(body).to_bytes(2, "little")
    return ("7f" + body.replace(b"\x7f", b"\x7f\x7f").hex())


def test_real_nv9usb_log_parameter_out_of_range_steps_the_version_down() -> None:
    capture = HERE / "ssp_replay_nv9usb_issue39.jsonl"
    transport = open_transport(f"replay://{capture}")
    device = SspDevice(transport, reply_timeout=0.05, retries=0, encryption=False,
                       protocol_version=6)
    with pytest.raises(NoResponseError, match="no SSP reply to command 0x06"):
        device.start()
    mismatches = transport.mismatches  # type: ignore[attr-defined]
    # The log's host (the Node library) sent SYNC with flag 0; vendhw sends it with 1 (GA138).
    assert mismatches[0] == (bytes.fromhex("7f0001116608"), bytes.fromhex("7F 80 01 11 65 82"))
    # HOST PROTOCOL VERSION 6 with flag 0 matched the real log byte for byte (no mismatch);
    # the device's F4 made vendhw step down to 5, where the log ends.
    assert len(mismatches) == 2 and mismatches[1][0] == b""
    assert mismatches[1][1][3:5] == bytes((0x06, 5))
    assert transport.remaining == 0  # type: ignore[attr-defined]


def _session(cases: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[list[int]]]:
    """Capture records for start(), enable() and one POLL WITH ACK per case."""
    records: list[dict[str, Any]] = []
    seq = 1
    ok = bytes((0xF0,))

    def exchange(command: bytes, reply: bytes, *, sync: bool = False) -> None:
        nonlocal seq
        seq = 1 if sync else seq ^ 1
        records.append({"dir": "tx", "hex": packet(seq, command)})
        records.append({"dir": "rx", "hex": packet(seq, reply)})

    setup = bytes.fromhex("00" "30313030" "455552" "000001" "04" "050A1432" "02020202"
                          "000064" "06" "455552455552455552455552"
                          "05000000" "0A000000" "14000000" "32000000")
    exchange(b"\x11", ok, sync=True)
    exchange(b"\x06\x06", ok)
    exchange(b"\x05", ok + setup)
    exchange(b"\x0c", ok + (0x01A2B3C4).to_bytes(4, "big"))
    exchange(b"\x02\x00\x00", ok)
    exchange(b"\x02\x0f\x00", ok)
    exchange(b"\x0a", ok)
    acked = []
    for case in cases:
        data = bytes.fromhex(case["data"])
        exchange(b"\x56", data)
        codes = [event["code"] for event in case["expected"]]
        acked.append(codes)
        if set(codes) & POLL_WITH_ACK_EVENTS:
            exchange(b"\x57", ok)
    return records, acked


def test_host_replays_the_node_librarys_poll_payloads_strictly(tmp_path: Path) -> None:
    usable = [case for case in CASES if case["protocol_version"] == 6
              and case["test"] not in DEVIATIONS and case["data"] != "f0"
              and not {0xF1, 0xEC} & {e["code"] for e in case["expected"]}]
    assert len(usable) >= 40
    records, _ = _session(usable)
    capture = tmp_path / "peer-polls.jsonl"
    capture.write_text("".join(json.dumps(record) + "\n" for record in records))
    transport = open_transport(f"replay://{capture}", strict=True)
    device = SspDevice(transport, reply_timeout=0.05, retries=0, encryption=False,
                       protocol_version=6)
    device.start()
    device.enable()
    events = []
    for _ in usable:
        events += device.poll()
    assert transport.remaining == 0  # type: ignore[attr-defined]  # every byte, in order
    by_code = {e.detail["code"]: e for e in events}
    assert by_code[0xEE].kind is K.CREDIT and (by_code[0xEE].value, by_code[0xEE].currency) == (
        500, "EUR")  # CREDIT_NOTE channel 1 of the setup above
    assert by_code[0xEF].kind is K.ESCROW and by_code[0xEF].channel == 1
    assert by_code[0xD2].kind is K.PAYOUT_DONE and by_code[0xD2].value == 6  # 1 USD + 5 UAH
    assert by_code[0xDC].kind is K.PAYOUT_INCOMPLETE and by_code[0xDC].requested == 12
    assert not [e for e in events if e.detail.get("needs_review")]
    exchanges = sum(1 for record in records if record["dir"] == "tx")
    assert exchanges == 7 + len(usable) + sum(
        1 for case in usable if {e["code"] for e in case["expected"]} & POLL_WITH_ACK_EVENTS)


def test_real_nv9usb_reply_count_sets_the_next_command_count() -> None:
    """Issue #44's NV9USB log: the device's POLL reply decrypts to eCOUNT 7 (its plaintext,
    packing and eCRC are in the log) and the host's next POLL went out with count 7. The key is
    not in the log, so the real plaintext is sealed again under a test key and handed to
    vendhw's host cipher after it sealed command 6: the host must accept it and seal 7 next."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from vendhw.framing.essp import EsspCipher

    (inner,) = [v for v in VECTORS if v.get("form") == "essp-inner"]
    plain = bytes.fromhex(inner["hex"])
    assert int.from_bytes(plain[1:5], "little") == 7
    key = bytes(range(16))
    host = EsspCipher(key)
    host.count = 6
    host.seal(b"\x07")  # the POLL the log's host sent with count 6
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    assert host.open(encryptor.update(plain) + encryptor.finalize()) == bytes.fromhex("F0 C6")
    decryptor = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    next_block = host.seal(b"\x07")[1:]
    assert int.from_bytes(decryptor.update(next_block)[1:5], "little") == 7  # as in the log
