"""MDB/ICP blocks (NAMA/EVA Multi-Drop Bus, 9600 baud, 9 data bits).

Host (VMC) -> peripheral: ``ADDRESS|COMMAND`` (mode bit 1), data, ``CHK`` (sum mod 256).
Peripheral -> host: data + ``CHK`` (only the CHK carries the mode bit), or a lone ACK/NAK
with the mode bit. The VMC also sends ACK/RET/NAK as single bytes. Maximum block 36 bytes.

Two wire forms:

* ``wire="plain"`` (default): the bytes alone, as specifications and logic-analyser traces
  print them; frames are delimited by the caller (one frame per argument).
* ``wire="9bit"``: the mode bit in-band, as a Linux tty delivers it with
  ``PARENB|CMSPAR|PARMRK``: a byte with the mode bit set is ``FF 00 b``, a literal ``FF``
  data byte is ``FF FF``. A 9-bit transport writes and reads exactly this form, so the layers
  above a 9-bit link need no special case, and a stream can be cut at the mode bits.

Sources: ``protocols/mdb/README.md``.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import construct as cs

from vendhw.errors import ChecksumError, FramingError, LengthError
from vendhw.framing.base import Direction, Frame, Framer, Layout, byte_table
from vendhw.framing.checksums import SUM8

ACK, RET, NAK = 0x00, 0xAA, 0xFF
MAX_BLOCK = 36
"""Longest block including CHK (MDB 4.2; DK in the research notes, checked against vender)."""

# Timing (temoto/vender hardware/mega-firmware/mdb.c quoting the spec).
INTER_BYTE_MAX = 0.001
RESPONSE_TIMEOUT = 0.005
ACK_TIMEOUT = RESPONSE_TIMEOUT
"""t-response seen from the peripheral: after its CHK it waits this long for the VMC's ACK.
Without an ACK in time it keeps the data and sends the same activity again at the next POLL
(the "t = 5.0 mS response_t (max.)" that temoto/vender ``hardware/mega-firmware/mdb.c``
quotes from the spec; that firmware writes the ACK from the receive interrupt as soon as the
CHK checks; vender's Linux transport: "ack must arrive <5ms after recv")."""
BREAK_TIME = 0.100
SETUP_TIME = 0.200

class Address(IntEnum):
    """Peripheral addresses (the upper five bits of the address byte), MDB 4.2 §2.3."""

    VMC = 0x00
    CHANGER = 0x08
    CASHLESS_1 = 0x10
    COMMUNICATIONS_GATEWAY = 0x18
    DISPLAY = 0x20
    ENERGY_MANAGEMENT = 0x28
    BILL_VALIDATOR = 0x30
    USD_1 = 0x40
    USD_2 = 0x48
    USD_3 = 0x50
    COIN_HOPPER_1 = 0x58
    CASHLESS_2 = 0x60
    AGE_VERIFICATION = 0x68
    COIN_HOPPER_2 = 0x70


class ChangerCommand(IntEnum):
    """Coin changer commands (the lower three bits of the address byte), MDB 4.2 §5."""

    RESET = 0
    SETUP = 1
    TUBE_STATUS = 2
    POLL = 3
    COIN_TYPE = 4
    DISPENSE = 5
    EXPANSION = 7


class ChangerExpansion(IntEnum):
    """Coin changer EXPANSION (``0F``) subcommands, level 3."""

    IDENTIFICATION = 0x00
    FEATURE_ENABLE = 0x01
    PAYOUT = 0x02
    PAYOUT_STATUS = 0x03
    PAYOUT_VALUE_POLL = 0x04
    SEND_DIAGNOSTIC_STATUS = 0x05


class BillCommand(IntEnum):
    """Bill validator commands, MDB 4.2 §6."""

    RESET = 0
    SETUP = 1
    SECURITY = 2
    POLL = 3
    BILL_TYPE = 4
    ESCROW = 5
    STACKER = 6
    EXPANSION = 7


class BillEscrow(IntEnum):
    RETURN_BILL = 0x00
    STACK_BILL = 0x01


class BillExpansion(IntEnum):
    LEVEL_1_IDENTIFICATION = 0x00
    FEATURE_ENABLE = 0x01
    LEVEL_2_IDENTIFICATION = 0x02


class CashlessCommand(IntEnum):
    """Cashless device commands, MDB 4.2 §7.4 (POLL is 2 here, 3 for changers and bills)."""

    RESET = 0
    SETUP = 1
    POLL = 2
    VEND = 3
    READER = 4
    REVALUE = 5
    EXPANSION = 7


class CashlessSetup(IntEnum):
    CONFIG_DATA = 0x00
    MAX_MIN_PRICES = 0x01


class CashlessVend(IntEnum):
    VEND_REQUEST = 0x00
    VEND_CANCEL = 0x01
    VEND_SUCCESS = 0x02
    VEND_FAILURE = 0x03
    SESSION_COMPLETE = 0x04
    CASH_SALE = 0x05
    NEGATIVE_VEND_REQUEST = 0x06


class CashlessReader(IntEnum):
    READER_DISABLE = 0x00
    READER_ENABLE = 0x01
    READER_CANCEL = 0x02


class CashlessRevalue(IntEnum):
    REVALUE_REQUEST = 0x00
    REVALUE_LIMIT_REQUEST = 0x01


class CashlessExpansion(IntEnum):
    REQUEST_ID = 0x00
    WRITE_TIME_DATE = 0x03
    """The VMC's answer to a TIME/DATE REQUEST (10 BCD bytes)."""
    OPTIONAL_FEATURE_ENABLED = 0x04


class CashlessPoll(IntEnum):
    """Cashless POLL reply codes, MDB 4.2 §7.4.3."""

    JUST_RESET = 0x00
    READER_CONFIG = 0x01
    DISPLAY_REQUEST = 0x02
    BEGIN_SESSION = 0x03
    SESSION_CANCEL_REQUEST = 0x04
    VEND_APPROVED = 0x05
    VEND_DENIED = 0x06
    END_SESSION = 0x07
    CANCELLED = 0x08
    PERIPHERAL_ID = 0x09
    MALFUNCTION = 0x0A
    OUT_OF_SEQUENCE = 0x0B
    REVALUE_APPROVED = 0x0D
    REVALUE_DENIED = 0x0E
    REVALUE_LIMIT = 0x0F
    USER_FILE_DATA = 0x10
    TIME_DATE_REQUEST = 0x11
    DATA_ENTRY_REQUEST = 0x12
    DATA_ENTRY_CANCEL = 0x13
    DIAGNOSTIC = 0xFF


_SPELLED = {Address.COIN_HOPPER_1: "COIN HOPPER 1", Address.COIN_HOPPER_2: "COIN HOPPER 2",
            Address.CASHLESS_1: "CASHLESS #1", Address.CASHLESS_2: "CASHLESS #2",
            Address.USD_1: "USD #1", Address.USD_2: "USD #2", Address.USD_3: "USD #3",
            Address.CHANGER: "COIN CHANGER",
            CashlessSetup.MAX_MIN_PRICES: "MAX/MIN PRICES",
            CashlessExpansion.WRITE_TIME_DATE: "WRITE TIME/DATE"}


def _spoken(member: IntEnum) -> str:
    """The name the specification prints for an enum member."""
    for key, text in _SPELLED.items():
        if type(key) is type(member) and key == member:
            return text
    return member.name.replace("_", " ")


def _command_names(commands: type[IntEnum]) -> tuple[str, ...]:
    """Names of commands 0-7, ``CMD n`` where the device has none."""
    known = {int(c): _spoken(c) for c in commands}
    return tuple(known.get(code, f"CMD {code}") for code in range(8))


DEVICES: dict[int, str] = {int(a): _spoken(a) for a in Address}
_CASHLESS = _command_names(CashlessCommand)
_GENERIC = ("RESET", "SETUP", "CMD 2", "POLL", "CMD 4", "CMD 5", "CMD 6", "EXPANSION")
COMMANDS: dict[int, tuple[str, ...]] = {
    Address.CHANGER: _command_names(ChangerCommand),
    Address.BILL_VALIDATOR: _command_names(BillCommand),
    Address.CASHLESS_1: _CASHLESS, Address.CASHLESS_2: _CASHLESS}
_SUBCOMMAND_ENUMS: dict[tuple[str, str], type[IntEnum]] = {
    ("CASHLESS", "SETUP"): CashlessSetup, ("CASHLESS", "VEND"): CashlessVend,
    ("CASHLESS", "READER"): CashlessReader, ("CASHLESS", "REVALUE"): CashlessRevalue,
    ("CASHLESS", "EXPANSION"): CashlessExpansion, ("COIN", "EXPANSION"): ChangerExpansion,
    ("BILL", "EXPANSION"): BillExpansion, ("BILL", "ESCROW"): BillEscrow,
}
SUBCOMMANDS: dict[tuple[str, str], dict[int, str]] = {
    key: {int(sub): _spoken(sub) for sub in subs} for key, subs in _SUBCOMMAND_ENUMS.items()}
CONTROL = {ACK: "ACK", RET: "RET", NAK: "NAK"}


# -- payload layouts (MDB 4.2), declared once: the hosts and the simulators read them here --

CHANGER_SETUP = Layout(cs.Struct(
    "level" / cs.Int8ub, "country" / cs.Int16ub, "scaling" / cs.Int8ub,
    "decimals" / cs.Int8ub, "routing" / cs.Int16ub, "credits" / cs.GreedyBytes,
), "changer SETUP reply")
"""Coin changer SETUP (§5.3): up to 16 coin type credits follow (``FF``: a vend token)."""
BILL_SETUP = Layout(cs.Struct(
    "level" / cs.Int8ub, "country" / cs.Int16ub, "scaling" / cs.Int16ub,
    "decimals" / cs.Int8ub, "stacker_capacity" / cs.Int16ub, "security" / cs.Int16ub,
    "escrow" / cs.Int8ub, "credits" / cs.GreedyBytes,
), "bill validator SETUP reply")
"""Bill validator SETUP (§6.3): ``escrow`` is ``FF`` when the validator can hold a bill."""
IDENTIFICATION = Layout(cs.Struct(
    "manufacturer" / cs.Bytes(3), "serial" / cs.Bytes(12), "model" / cs.Bytes(12),
    "software_version" / cs.Bytes(2), "rest" / cs.GreedyBytes,
), "EXPANSION IDENTIFICATION reply")
"""ASCII manufacturer code, serial and model, BCD software version; a changer (and a level 2
bill validator) adds 4 bytes of optional-feature bits in ``rest``."""
READER_CONFIG = Layout(cs.Struct(
    "code" / cs.Const(b"\x01"), "level" / cs.Int8ub, "country" / cs.Int16ub,
    "scale" / cs.Int8ub, "decimals" / cs.Int8ub, "max_response" / cs.Int8ub,
    "options" / cs.Int8ub, "rest" / cs.GreedyBytes,
), "cashless READER CONFIG")
"""Cashless SETUP CONFIG DATA answer (§7.4.1, code ``01``)."""
PERIPHERAL_ID = Layout(cs.Struct(
    "code" / cs.Const(b"\x09"), "manufacturer" / cs.Bytes(3), "serial" / cs.Bytes(12),
    "model" / cs.Bytes(12), "software_version" / cs.Bytes(2), "rest" / cs.GreedyBytes,
), "cashless PERIPHERAL ID")
"""Cashless EXPANSION REQUEST ID answer (code ``09``); level 3 adds 4 feature bytes."""

_BLOCK = Layout(cs.Struct("head" / cs.Int8ub, "body" / cs.GreedyBytes), "MDB block")


def _family(address: int) -> str:
    name = DEVICES.get(address, "")
    if name.startswith("CASHLESS"):
        return "CASHLESS"
    if name.startswith("COIN CHANGER"):
        return "COIN"
    if name.startswith("BILL"):
        return "BILL"
    return name


def _head_table() -> dict[int, tuple[str, str, dict[int, tuple[str, str]]]]:
    """Every valid address byte -> (command name, device name, {sub code: (sub, full name)})."""
    table: dict[int, tuple[str, str, dict[int, tuple[str, str]]]] = {}
    for address, device in DEVICES.items():
        if address == 0x00:
            continue
        names = COMMANDS.get(address, _GENERIC)
        for command in range(8):
            name = names[command]
            subs = SUBCOMMANDS.get((_family(address), name), {})
            table[address | command] = (name, device, {
                code: (sub, f"{name} / {sub}") for code, sub in subs.items()})
    return table


_HEADS = _head_table()
_HEAD_FLAGS = byte_table(_HEADS)
_DEVICE_FLAGS = byte_table(DEVICES)
"""The two tables as the compiled scan reads them, built once (MdbLink makes a deframer
per reply)."""


def encode_9bit(words: list[tuple[int, bool]]) -> bytes:
    """``[(byte, mode_bit), ...]`` -> the in-band form (``FF 00 b`` marks, ``FF FF`` literal)."""
    out = bytearray()
    for value, mode in words:
        if mode:
            out += bytes((0xFF, 0x00, value))
        elif value == 0xFF:
            out += b"\xff\xff"
        else:
            out.append(value)
    return bytes(out)


def decode_9bit(data: bytes | bytearray, start: int = 0) -> tuple[list[tuple[int, bool]], int]:
    """Decode the in-band form from ``start``; returns the words and the bytes consumed.

    A trailing incomplete escape is left unconsumed (more bytes needed).
    """
    words: list[tuple[int, bool]] = []
    i, n = start, len(data)
    while i < n:
        b = data[i]
        if b != 0xFF:
            words.append((b, False))
            i += 1
            continue
        if i + 1 >= n:
            break
        nxt = data[i + 1]
        if nxt == 0xFF:
            words.append((0xFF, False))
            i += 2
        elif nxt == 0x00:
            if i + 2 >= n:
                break
            words.append((data[i + 2], True))
            i += 3
        else:  # a parity error marker of another kind: keep the byte, flag nothing
            words.append((nxt, False))
            i += 2
    return words, i - start


class MdbFramer(Framer):
    """MDB blocks in either direction, in plain or 9-bit wire form."""

    name = "mdb"
    description = "MDB/ICP 9-bit multi-drop bus (VMC and peripherals)"
    needs_direction = True

    def __init__(self, wire: str = "plain") -> None:
        if wire not in ("plain", "9bit"):
            raise ValueError("wire must be 'plain' or '9bit'")
        self.wire = wire

    # -- building ---------------------------------------------------------------------------

    def build(self, *, direction: Direction | None = "host", **fields: Any) -> bytes:
        """Host: ``address`` (+ ``command`` 0-7) or ``head``, ``data``; or ``control``.

        Device: ``data`` (CHK appended), or ``control`` (``"ACK"``/``"NAK"``).
        """
        control = fields.get("control")
        if control is not None:
            code = {v: k for k, v in CONTROL.items()}.get(str(control).upper(), control)
            if not isinstance(code, int) or code not in CONTROL:
                raise FramingError(f"unknown control {control!r}", protocol=self.name)
            return self._wire([(code, direction == "device")])
        data = bytes(fields.get("data", b""))
        if direction == "device":
            if not data:
                raise LengthError("a device data block needs at least one byte",
                                  protocol=self.name)
            block = data + bytes((SUM8(data),))
            if len(block) > MAX_BLOCK:
                raise LengthError(f"block of {len(block)} bytes exceeds {MAX_BLOCK}",
                                  protocol=self.name)
            words = [(b, False) for b in data] + [(block[-1], True)]
            return self._wire(words) if self.wire == "9bit" else block
        head = fields.get("head")
        if head is None:
            head = (int(fields["address"]) & 0xF8) | (int(fields.get("command", 0)) & 0x07)
        body = _BLOCK.build({"head": head, "body": data}, self.name)
        block = body + bytes((SUM8(body),))
        if len(block) > MAX_BLOCK:
            raise LengthError(f"block of {len(block)} bytes exceeds {MAX_BLOCK}",
                              protocol=self.name)
        if self.wire == "plain":
            return block
        return self._wire([(block[0], True)] + [(b, False) for b in block[1:]])

    def _wire(self, words: list[tuple[int, bool]]) -> bytes:
        if self.wire == "9bit":
            return encode_9bit(words)
        return bytes(w for w, _ in words)

    # -- parsing ----------------------------------------------------------------------------

    def parse(self, data: bytes, direction: Direction | None = None) -> Frame:
        raw = bytes(data)
        if self.wire == "9bit":
            # Fast path: escapes only where a well-formed block has them (a marked first or
            # last word, or none at all) read straight off the bytes, no word-by-word decode.
            # Anything else takes the decoding path below; both give the same result.
            ff = raw.find(b"\xff")
            n = len(raw)
            if ff < 0:
                plain, modes = raw, [False] * n
            elif ff == 0 and n >= 3 and raw[1] == 0 and raw.find(b"\xff", 3) < 0:
                plain, modes = raw[2:], [True] + [False] * (n - 3)
            elif ff == n - 3 and raw[n - 2] == 0:
                plain, modes = raw[:-3] + raw[-1:], [False] * (n - 3) + [True]
            else:
                return self._parse_decoding(raw, direction)
            if direction is None:
                direction = "host" if modes and modes[0] and len(plain) > 1 else "device"
            return self._parse(raw, plain, modes, direction)
        return self._parse_decoding(raw, direction)

    def _parse_decoding(self, data: bytes, direction: Direction | None = None) -> Frame:
        """The general parse: decode the 9-bit escapes word by word."""
        raw = bytes(data)
        if self.wire == "9bit":
            words, used = decode_9bit(raw)
            if used != len(raw):
                raise LengthError("incomplete 9-bit escape at the end", protocol=self.name,
                                  data=raw)
            plain = bytes(w for w, _ in words)
            modes = [m for _, m in words]
            if direction is None:
                direction = "host" if modes and modes[0] and len(plain) > 1 else "device"
        else:
            plain, modes = raw, []
        if direction is None:
            try:
                return self._parse(raw, plain, modes, "host")
            except FramingError:
                return self._parse(raw, plain, modes, "device")
        return self._parse(raw, plain, modes, direction)

    def _parse(self, raw: bytes, plain: bytes, modes: list[bool], direction: Direction) -> Frame:
        n = len(plain)
        if n == 0:
            raise LengthError("empty block", protocol=self.name, data=raw)
        if n > MAX_BLOCK:
            raise LengthError(f"block of {n} bytes exceeds {MAX_BLOCK}", protocol=self.name,
                              data=raw)
        if n == 1:
            code = plain[0]
            if code not in CONTROL or (direction == "device" and code == RET):
                allowed = "ACK/NAK/RET" if direction == "host" else "ACK/NAK"
                raise LengthError(f"a one-byte block must be {allowed}, got 0x{code:02X}",
                                  protocol=self.name, data=raw)
            return Frame(self.name, raw, {"command": CONTROL[code], "code": code}, direction)
        expected = sum(plain[:-1]) & 0xFF  # SUM8, inlined on the hot path
        if expected != plain[-1]:
            raise ChecksumError(protocol=self.name, algorithm=SUM8.name, expected=expected,
                                received=plain[-1], width=1, data=raw)
        if modes:
            self._check_modes(modes, direction, raw)
        if direction == "device":
            payload = plain[:-1]
            return Frame(self.name, raw, {"command": "DATA", "code": payload[0],
                                          "data": payload, "chk": plain[-1]}, direction)
        parsed = _BLOCK.parse(plain[:-1], self.name)
        head: int = parsed["head"]
        entry = _HEADS.get(head)
        if entry is None:
            raise FramingError(f"0x{head:02X} is not a peripheral address", protocol=self.name,
                               data=raw)
        name, device, subs = entry
        body: bytes = parsed["body"]
        fields: dict[str, Any] = {"command": name, "code": head, "address": head & 0xF8,
                                  "device": device}
        if subs and body:
            sub, full = subs.get(body[0]) or (f"0x{body[0]:02X}", f"{name} / 0x{body[0]:02X}")
            fields["command"] = full
            fields["subcommand"] = sub
        fields["data"] = body
        fields["chk"] = plain[-1]
        return Frame(self.name, raw, fields, direction)

    def _check_modes(self, modes: list[bool], direction: Direction, raw: bytes) -> None:
        if direction == "host":
            ok = modes[0] and not any(modes[1:])
            rule = "the VMC marks only the address byte"
        else:
            ok = modes[-1] and not any(modes[:-1])
            rule = "a peripheral marks only its CHK"
        if not ok:
            raise FramingError(f"mode bits out of place ({rule})", protocol=self.name, data=raw)

    # -- stream -----------------------------------------------------------------------------

    def hunt_bytes(self, direction: Direction | None) -> bytes | None:
        if self.wire == "9bit" and direction == "host":
            return bytes((0xFF, ACK, RET))  # a marked address byte (FF 00 b) or a control byte
        return None

    def compiled_scan(self, direction: Direction | None) -> dict[str, Any] | None:
        return {"proto": "MDB_9BIT" if self.wire == "9bit" else "MDB_PLAIN",
                "heads": _HEAD_FLAGS, "devices": _DEVICE_FLAGS}

    def measure(self, buf: bytes | bytearray, start: int, direction: Direction | None) -> int:
        if self.wire == "9bit":
            return self._measure_9bit(buf, start, direction)
        return self._measure_plain(buf, start, direction)

    def _measure_plain(self, buf: bytes | bytearray, start: int,
                       direction: Direction | None) -> int:
        """Without mode bits the only delimiter is the checksum: take the shortest block
        whose sum matches (single control bytes for the host direction)."""
        first = buf[start]
        if direction != "device" and first not in CONTROL and (
            (first & 0xF8) not in DEVICES or (first & 0xF8) == 0
        ):
            return -1
        total = first
        end = min(len(buf), start + MAX_BLOCK)
        for i in range(start + 1, end):
            if buf[i] == total & 0xFF:
                return i - start + 1
            total += buf[i]
        if direction != "device" and first in CONTROL:
            return 1
        return 0 if end - start < MAX_BLOCK else -1

    def _measure_9bit(self, buf: bytes | bytearray, start: int,
                      direction: Direction | None) -> int:
        n = len(buf)
        if direction != "device":
            return self._measure_9bit_host(buf, start, n)
        # Device: data bytes, then the marked CHK; a lone marked byte is ACK/NAK.
        pos, words = start, 0
        while pos < n:
            b = buf[pos]
            if b != 0xFF:
                pos += 1
            elif pos + 1 >= n:
                return 0
            elif buf[pos + 1] == 0x00:
                return pos + 3 - start if pos + 2 < n else 0
            else:
                pos += 2
            words += 1
            if words >= MAX_BLOCK:
                return -1
        return 0

    def _measure_9bit_host(self, buf: bytes | bytearray, start: int, n: int) -> int:
        """A marked address byte, unmarked data, then CHK. The block ends at a checksum match
        followed by a marked byte or by nothing yet; failing that (noise after the block), at
        the first match seen before the next marked byte."""
        if start > 0 and buf[start - 1] == 0xFF and buf[start] in (0x00, 0xFF):
            return -1  # the middle of an escape, not a word
        first = buf[start]
        if first != 0xFF:
            return 1 if first in CONTROL else -1
        if start + 1 >= n:
            return 0
        if buf[start + 1] != 0x00:
            return 2 if buf[start + 1] == 0xFF else -1  # FF FF: the VMC's NAK, unmarked
        if start + 2 >= n:
            return 0
        total = buf[start + 2]
        pos = start + 3
        words = 1
        first_match = 0
        while pos < n:
            b = buf[pos]
            if b == 0xFF:
                if pos + 1 >= n:
                    return 0
                if buf[pos + 1] == 0x00:
                    return first_match - start if first_match else -1  # next marked byte
                value, width = 0xFF, 2
            else:
                value, width = b, 1
            end = pos + width
            if value == total & 0xFF:
                if end >= n or (buf[end] == 0xFF and end + 1 < n and buf[end + 1] == 0x00):
                    return end - start
                first_match = first_match or end
            total += value
            pos = end
            words += 1
            if words >= MAX_BLOCK:
                return first_match - start if first_match else -1
        return 0

    @staticmethod
    def _word_len(buf: bytes | bytearray, pos: int) -> int:
        if buf[pos] != 0xFF:
            return 1
        return 3 if pos + 1 < len(buf) and buf[pos + 1] == 0x00 else 2
