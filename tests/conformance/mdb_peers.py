"""MDB exchanges taken from other implementations' tests, and the capture builder.

Each exchange is ``(request, reply)`` in the peers' own notation: hex without the CHK (both
peers' test harnesses add and strip it). ``reply`` is ``None`` when the peripheral answers
with a lone ACK. The builder turns a list of exchanges into a ``replay://`` capture of the
in-band 9-bit form (``FF 00 b`` for a byte with the mode bit, ``FF FF`` for a literal FF)
with its own checksum and escaping, written here and not taken from vendhw.

Sources (repository @ commit : path):

* VENDER = temoto/vender @ 225a5e4f4a4734052af75b8ac3f4a3ed614baaf4
  ``hardware/mdb/coin/coin_test.go`` (mockInitRs, TestCoinNoDiag, TestCoinPoll) and
  ``hardware/mdb/bill/bill_test.go`` (mockInitRs, TestBillPoll, TestBillScaling).
* ZZZ = Zzzzipper/projects @ 038e09f76eba575136edc673a4a0e9cc4a204b7a
  ``firmware-usbhost/common/mdb/master/coin_changer/test/MdbMasterCoinChangerTest.cpp``
  (testInit, testEnable/testDeviceReboot, testDeposite, testToken, testEscrowRequest,
  testDispense) and ``.../bill_validator/test/MdbMasterBillValidatorTest.cpp`` (testInit,
  testBtDepositeBill, testJsmDepositeBill, testScalingFactor1000).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

VENDER = "temoto/vender@225a5e4f4a4734052af75b8ac3f4a3ed614baaf4"
ZZZ = "Zzzzipper/projects@038e09f76eba575136edc673a4a0e9cc4a204b7a"
VENDER_COIN = f"{VENDER}:hardware/mdb/coin/coin_test.go"
VENDER_BILL = f"{VENDER}:hardware/mdb/bill/bill_test.go"
ZZZ_COIN = (f"{ZZZ}:firmware-usbhost/common/mdb/master/coin_changer/test/"
            "MdbMasterCoinChangerTest.cpp")
ZZZ_BILL = (f"{ZZZ}:firmware-usbhost/common/mdb/master/bill_validator/test/"
            "MdbMasterBillValidatorTest.cpp")


@dataclass(frozen=True)
class Exchange:
    request: str
    reply: str | None
    source: str
    """Where the exchange comes from; ``vendhw`` marks a step only vendhw takes, whose reply
    is the plain ACK every peripheral gives an accepted command."""


def _x(text: str) -> str:
    """Zzzzipper writes bytes as ``x03x00x07``; make it plain hex."""
    return text.replace("x", "")


# ---- temoto/vender coin_test.go --------------------------------------------------------
VENDER_COIN_SETUP = "021643640200170102050a0a1900000000000000000000"
VENDER_COIN_INIT = [  # TestCoinNoDiag's map: RESET, POLL, SETUP, TUBE STATUS (level 2)
    Exchange("08", None, VENDER_COIN),
    Exchange("0b", "0b", VENDER_COIN),
    Exchange("09", VENDER_COIN_SETUP, VENDER_COIN),
    Exchange("0a", "0000110008", VENDER_COIN),
    Exchange("0c00000017", None, "vendhw"),  # COIN TYPE: none; manual dispense = routing
]
VENDER_COIN_POLLS = {  # TestCoinPoll: reply -> what vender's master reports
    "empty": "",
    "reset": "0b",
    "slugs": "21",
    "deposited-cashbox": "4109",
    "return-request": "01",
    "deposited-tube": "521e",
    "deposited-reject": "7300",
    "dispensed": "9251",
}
VENDER_COIN_ID = "434f47303030303030303030303030463030313230303120202020029000000003"

# ---- temoto/vender bill_test.go --------------------------------------------------------


def vender_bill_setup(scaling: int, decimals: int) -> str:
    return f"011810{scaling:04x}{decimals:02x}00c8001fff01050a32640000000000000000000000"


VENDER_BILL_ID = "49435430303030303030303030303056372d5255523530303030300120"


def vender_bill_init(scaling: int = 10, decimals: int = 0) -> list[Exchange]:
    return [
        Exchange("30", None, VENDER_BILL),
        Exchange("33", "0609", VENDER_BILL),
        Exchange("31", vender_bill_setup(scaling, decimals), VENDER_BILL),
        Exchange("3700", VENDER_BILL_ID, VENDER_BILL),
        Exchange("320000", None, "vendhw"),  # SECURITY: none
        Exchange("3400000000", None, "vendhw"),  # BILL TYPE: accept none
    ]


VENDER_BILL_POLLS = {"empty": "", "disabled": "09", "reset,disabled": "0609",
                     "escrow": "9209"}

# ---- Zzzzipper/projects MdbMasterCoinChangerTest.cpp ------------------------------------
ZZZ_COIN_SETUP = _x("x03x00x07x0Ax01x00x5Cx00x00x01x02x05x0Ax0AxFFx00x00x00x00x00x00x00x00")
ZZZ_COIN_ID = _x("x4Ax4Fx46x30x35x33x36x37x39x20x20x20x20x20x20x4A"
                 "x32x30x30x30x4Dx44x42x20x50x33x32x90x10x00x00x00x01")
ZZZ_TUBES = _x("x00x40x00x00x41x37x57x00x00x00x00x00x00x00x00x00x00x00")
ZZZ_COIN_INIT = [  # testInit, without the peer's simulated timeouts
    Exchange("08", None, ZZZ_COIN),
    Exchange("0B", "0B", ZZZ_COIN),
    Exchange("09", ZZZ_COIN_SETUP, ZZZ_COIN),
    Exchange("0F00", ZZZ_COIN_ID, ZZZ_COIN),
    Exchange("0F0100000001", None, "vendhw"),  # peer: 0F010000000F (all four features)
    Exchange("0A", ZZZ_TUBES, ZZZ_COIN),
    Exchange("0C0000005C", None, "vendhw"),  # peer: 0C00000000 (manual dispense off too)
]
ZZZ_COIN_ENABLE = Exchange("0C00FC005C", None, ZZZ_COIN)  # testEnable: tokens accepted too

# ---- Zzzzipper/projects MdbMasterBillValidatorTest.cpp ----------------------------------
ZZZ_BILL_ID = _x("x4Ax4Fx46x34x33x32x36x20x20x20x20x20x20x20x20x31x31x4Dx44x52x55x5Fx5F"
                 "x30x30x30x34x00x25")


def zzz_bill_setup(scaling: int) -> str:
    return (f"010007{scaling:04X}0100" + "00FFFFFF01050A32" + "00" * 12)


def zzz_bill_init(scaling: int = 100) -> list[Exchange]:
    return [
        Exchange("30", None, ZZZ_BILL),
        Exchange("33", "06", ZZZ_BILL),
        Exchange("31", zzz_bill_setup(scaling), ZZZ_BILL),
        Exchange("3700", ZZZ_BILL_ID, ZZZ_BILL),
        Exchange("320000", None, "vendhw"),
        Exchange("3400000000", None, ZZZ_BILL),
    ]


# ---- capture builder (independent of vendhw) ---------------------------------------------


def sum8(data: bytes) -> int:
    """MDB CHK: the sum of the bytes, modulo 256."""
    total = 0
    for b in data:
        total = (total + b) % 256
    return total


def _escape(byte: int, mode: bool) -> bytes:
    if mode:
        return bytes((0xFF, 0x00, byte))
    return b"\xff\xff" if byte == 0xFF else bytes((byte,))


def host_block(request_hex: str) -> bytes:
    """VMC -> peripheral: the first byte carries the mode bit, then data, then CHK."""
    raw = bytes.fromhex(request_hex)
    words = [(raw[0], True)] + [(b, False) for b in raw[1:]] + [(sum8(raw), False)]
    return b"".join(_escape(b, m) for b, m in words)


def peripheral_block(reply_hex: str | None) -> bytes:
    """Peripheral -> VMC: data then CHK with the mode bit; a lone ACK with the mode bit."""
    if reply_hex is None:
        return _escape(0x00, True)
    raw = bytes.fromhex(reply_hex)
    return b"".join(_escape(b, False) for b in raw) + _escape(sum8(raw), True)


HOST_ACK = b"\x00"


def capture(exchanges: list[Exchange], path: Path) -> str:
    """Write ``exchanges`` as a replay capture; the host ACKs every data reply."""
    lines = []
    for ex in exchanges:
        lines.append({"dir": "tx", "hex": host_block(ex.request).hex()})
        if ex.reply == "":  # the peer's "" reply: an ACK-only answer to POLL
            lines.append({"dir": "rx", "hex": peripheral_block(None).hex()})
            continue
        lines.append({"dir": "rx", "hex": peripheral_block(ex.reply).hex()})
        if ex.reply is not None:
            lines.append({"dir": "tx", "hex": HOST_ACK.hex()})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return f"replay://{path}"
