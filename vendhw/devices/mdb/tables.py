"""MDB coin changer and bill validator tables: timing of the host, optional feature bits,
status and diagnostic codes, coin and bill routes (``protocols/mdb/README.md``)."""

from __future__ import annotations

from vendhw.devices.cash import CashEventKind

POLL_INTERVAL = 0.2
"""Seconds between POLLs (vender ``DefaultDelayNext``; 100-200 ms is usual)."""
JUST_RESET_WAIT = 2.0
"""How long to POLL after RESET for the 'was reset' status (changer non-response time, DK)."""
POLL_DATA_MAX = 16
"""Data bytes of a changer's or bill validator's POLL reply at most (MDB 4.2 §5.4, §6.4:
activity Z1-Z16). A longer reply is the late answer to an earlier command (SETUP, TUBE
STATUS, IDENTIFICATION: 18 bytes and more), never coins."""
SETUP_READS = 3
"""A SETUP reply other than the one the device gave before (a resumed start) is asked again
until two replies in a row agree, at most this often in all: it values every credit of the
session, and the 8-bit sum of a reply lets a lost zero byte through (a SETUP with a byte
gone reads as another scaling or other bill values)."""
RETRANSMISSIONS = 1
"""RET requests on a bad peripheral checksum before the VMC gives up with NAK."""
MAX_DISPENSE = 15
"""Coins of one type per DISPENSE command (the count is a nibble)."""
PAYOUT_BUSY, CHANGER_BUSY = b"\x02", b"\x0a"
FEATURE_ALTERNATIVE_PAYOUT = 0x00000001
"""Optional feature bit 0 of the changer's IDENTIFICATION: EXPANSION PAYOUT / PAYOUT STATUS /
PAYOUT VALUE POLL (vender ``FeatureAlternativePayout``)."""
FEATURE_EXTENDED_DIAGNOSTIC = 0x00000002
"""Optional feature bit 1: extended diagnostic (not enabled by vendhw: its POLL format is not
parsed; SEND DIAGNOSTIC STATUS works without it)."""
FEATURE_CONTROLLED_MANUAL_FILL = 0x00000004
"""Optional feature bit 2: controlled manual fill and payout (not enabled by vendhw)."""
FEATURE_FTL = 0x00000008
"""Optional feature bit 3: file transport layer (not enabled by vendhw)."""
CHANGER_DIAGNOSTICS: dict[tuple[int, int], str] = {
    (0x01, 0x00): "powering up",
    (0x02, 0x00): "powering down",
    (0x03, 0x00): "OK",
    (0x04, 0x00): "keypad shifted",
    (0x05, 0x10): "manual fill / payout active",
    (0x05, 0x20): "new inventory information available",
    (0x06, 0x00): "inhibited by VMC",
    (0x10, 0x00): "general changer error",
    (0x10, 0x01): "check sum error #1",
    (0x10, 0x02): "check sum error #2",
    (0x10, 0x03): "low line voltage detected",
    (0x11, 0x00): "discriminator module error",
    (0x11, 0x10): "flight deck open",
    (0x11, 0x11): "escrow return stuck open",
    (0x11, 0x30): "coin jam in sensor",
    (0x11, 0x41): "discrimination below specified standard",
    (0x11, 0x50): "validation sensor A out of range",
    (0x11, 0x51): "validation sensor B out of range",
    (0x11, 0x52): "validation sensor C out of range",
    (0x11, 0x53): "operating temperature exceeded",
    (0x11, 0x54): "sizing optics failure",
    (0x12, 0x00): "accept gate module error",
    (0x12, 0x30): "coins entered gate, but did not exit",
    (0x12, 0x31): "accept gate alarm active",
    (0x12, 0x40): "accept gate open, but no coin detected",
    (0x12, 0x50): "post gate sensor covered before gate opened",
    (0x13, 0x00): "separator module error",
    (0x13, 0x10): "sort sensor error",
    (0x14, 0x00): "dispenser module error",
    (0x15, 0x00): "coin cassette / tube module error",
    (0x15, 0x02): "cassette removed",
    (0x15, 0x03): "cash box sensor error",
    (0x15, 0x04): "sunlight on tube sensors",
}
"""SEND DIAGNOSTIC STATUS codes (MDB 4.2, coin changer, EXPANSION 0F 05): (main, sub) -> name.
An unknown sub code falls back to its main code's name (``(main, 0)``)."""
PAYOUT_CHUNK = 200
"""Scaled units per EXPANSION PAYOUT (one byte; Zzzzipper's master pays in steps of 200)."""
TOKEN_CREDIT = 0xFF
"""A coin type credit byte of 0xFF in the changer SETUP reply marks a vend token
(Zzzzipper/projects ``firmware-usbhost/common/mdb/MdbProtocolCoinChanger.h``
``MDB_CC_TOKEN_VALUE``, used by ``master/coin_changer/MdbCoin.cpp``)."""

CHANGER_STATUS = {
    0x01: (CashEventKind.RETURNED, "escrow request (return lever)"),
    0x02: (None, "payout busy"),
    0x03: (None, "no credit"),
    0x04: (CashEventKind.FAULT, "defective tube sensor"),
    0x05: (None, "double arrival"),
    0x06: (CashEventKind.FAULT, "acceptor unplugged"),
    0x07: (CashEventKind.JAM, "tube jam"),
    0x08: (CashEventKind.FAULT, "ROM checksum error"),
    0x09: (CashEventKind.FAULT, "coin routing error"),
    0x0A: (None, "changer busy"),
    0x0B: (CashEventKind.DEVICE_RESET, "changer was reset"),
    0x0C: (CashEventKind.JAM, "coin jam"),
    0x0D: (CashEventKind.FRAUD, "possible credited coin removal"),
}
BILL_STATUS = {
    0x01: (CashEventKind.FAULT, "defective motor"),
    0x02: (CashEventKind.FAULT, "sensor problem"),
    0x03: (None, "validator busy"),
    0x04: (CashEventKind.FAULT, "ROM checksum error"),
    0x05: (CashEventKind.JAM, "validator jammed"),
    0x06: (CashEventKind.DEVICE_RESET, "validator was reset"),
    0x07: (CashEventKind.FRAUD, "bill removed"),
    0x08: (CashEventKind.CASHBOX_REMOVED, "cash box out of position"),
    0x09: (CashEventKind.DISABLED, "validator disabled"),
    0x0A: (CashEventKind.FAULT, "invalid escrow request"),
    0x0B: (CashEventKind.REJECTED, "bill rejected"),
    0x0C: (CashEventKind.FRAUD, "possible credited bill removal"),
}
COIN_ROUTES = {0: "cashbox", 1: "tubes", 2: "not used", 3: "reject"}
BILL_ROUTES = ("stacked", "escrow", "returned", "recycler", "disabled bill rejected",
               "recycler (manual fill)", "manual dispense", "recycler to cashbox")
