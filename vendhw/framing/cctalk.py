"""ccTalk packets (Crane Payment Innovations / Money Controls, Generic Specification v4.7).

Simple checksum: ``[dest][n][src][header][data...][checksum]`` where the checksum makes the
whole packet sum to 0 mod 256. CRC-16 variant: ``[dest][n][CRC LSB][header][data...][CRC MSB]``
with CRC-16/XMODEM over dest, n, header and data (the source slot carries the CRC's low
byte; devices always reply to address 1). Header 0 is a reply (ACK when it has no data),
5 is NAK, 6 BUSY.

ccTalk has no start byte. A host reading replies knows they are addressed to it (1), which
is what its deframer hunts for; otherwise every offset is a candidate and the checksum
decides. Sources: ``protocols/cctalk/README.md`` (Generic Spec v4.7 Parts 1-3).
"""

from __future__ import annotations

from typing import Any

import construct as cs

from vendhw.errors import ChecksumError, LengthError
from vendhw.framing.base import Direction, Frame, Framer, Layout
from vendhw.framing.checksums import CRC16_XMODEM, ZERO_SUM8

HOST_ADDRESS = 1
BROADCAST = 0
INTER_BYTE_GAP = 0.050
"""Part 1 §11: a receiver waits at most 50 ms for the next byte, then silently resets."""
TRANSMIT_GAP_MAX = 0.010
"""Part 1 §11: gaps between transmitted bytes stay under 10 ms (ideally under 2 ms)."""
REPLY_TIMEOUT = 0.1
"""Most replies come within 10 ms; slow commands (motors, solenoids) pass their own."""

REPLY, NAK, BUSY = 0, 5, 6
HEADERS: dict[int, str] = {
    255: "FACTORY SET-UP AND TEST", 254: "SIMPLE POLL", 253: "ADDRESS POLL",
    252: "ADDRESS CLASH", 251: "ADDRESS CHANGE", 250: "ADDRESS RANDOM",
    249: "REQUEST POLLING PRIORITY", 248: "REQUEST STATUS", 247: "REQUEST VARIABLE SET",
    246: "REQUEST MANUFACTURER ID", 245: "REQUEST EQUIPMENT CATEGORY ID",
    244: "REQUEST PRODUCT CODE", 243: "REQUEST DATABASE VERSION",
    242: "REQUEST SERIAL NUMBER", 241: "REQUEST SOFTWARE REVISION", 240: "TEST SOLENOIDS",
    239: "OPERATE MOTORS", 238: "TEST OUTPUT LINES", 237: "READ INPUT LINES",
    236: "READ OPTO STATES", 235: "READ DH PUBLIC KEY", 234: "SEND DH PUBLIC KEY",
    233: "LATCH OUTPUT LINES", 232: "PERFORM SELF-CHECK", 231: "MODIFY INHIBIT STATUS",
    230: "REQUEST INHIBIT STATUS", 229: "READ BUFFERED CREDIT OR ERROR CODES",
    228: "MODIFY MASTER INHIBIT STATUS", 227: "REQUEST MASTER INHIBIT STATUS",
    226: "REQUEST INSERTION COUNTER", 225: "REQUEST ACCEPT COUNTER",
    224: "REQUEST ENCRYPTED PRODUCT ID", 223: "MODIFY ENCRYPTED INHIBIT AND OVERRIDE REGISTERS",
    222: "MODIFY SORTER OVERRIDE STATUS", 221: "REQUEST SORTER OVERRIDE STATUS",
    220: "ACMI ENCRYPTED DATA", 219: "ENTER NEW PIN NUMBER", 218: "ENTER PIN NUMBER",
    217: "REQUEST PAYOUT HIGH / LOW STATUS", 216: "REQUEST DATA STORAGE AVAILABILITY",
    215: "READ DATA BLOCK", 214: "WRITE DATA BLOCK", 213: "REQUEST OPTION FLAGS",
    212: "REQUEST COIN POSITION", 211: "POWER MANAGEMENT CONTROL",
    210: "MODIFY SORTER PATHS", 209: "REQUEST SORTER PATHS",
    208: "MODIFY PAYOUT ABSOLUTE COUNT", 207: "REQUEST PAYOUT ABSOLUTE COUNT",
    204: "METER CONTROL", 203: "DISPLAY CONTROL", 202: "TEACH MODE CONTROL",
    201: "REQUEST TEACH STATUS", 200: "ACMI UNENCRYPTED PRODUCT ID",
    199: "CONFIGURATION TO EEPROM", 198: "COUNTERS TO EEPROM", 197: "CALCULATE ROM CHECKSUM",
    196: "REQUEST CREATION DATE", 195: "REQUEST LAST MODIFICATION DATE",
    194: "REQUEST REJECT COUNTER", 193: "REQUEST FRAUD COUNTER", 192: "REQUEST BUILD CODE",
    191: "KEYPAD CONTROL", 189: "MODIFY DEFAULT SORTER PATH",
    188: "REQUEST DEFAULT SORTER PATH", 187: "MODIFY PAYOUT CAPACITY",
    186: "REQUEST PAYOUT CAPACITY", 185: "MODIFY COIN ID", 184: "REQUEST COIN ID",
    183: "UPLOAD WINDOW DATA", 182: "DOWNLOAD CALIBRATION INFO",
    181: "MODIFY SECURITY SETTING", 180: "REQUEST SECURITY SETTING",
    179: "MODIFY BANK SELECT", 178: "REQUEST BANK SELECT", 177: "HANDHELD FUNCTION",
    176: "REQUEST ALARM COUNTER", 175: "MODIFY PAYOUT FLOAT", 174: "REQUEST PAYOUT FLOAT",
    173: "REQUEST THERMISTOR READING", 172: "EMERGENCY STOP", 171: "REQUEST HOPPER COIN",
    170: "REQUEST BASE YEAR", 169: "REQUEST ADDRESS MODE",
    168: "REQUEST HOPPER DISPENSE COUNT", 167: "DISPENSE HOPPER COINS",
    166: "REQUEST HOPPER STATUS", 165: "MODIFY VARIABLE SET", 164: "ENABLE HOPPER",
    163: "TEST HOPPER", 162: "MODIFY INHIBIT AND OVERRIDE REGISTERS", 161: "PUMP RNG",
    160: "REQUEST CIPHER KEY", 159: "READ BUFFERED BILL EVENTS", 158: "MODIFY BILL ID",
    157: "REQUEST BILL ID", 156: "REQUEST COUNTRY SCALING FACTOR",
    155: "REQUEST BILL POSITION", 154: "ROUTE BILL", 153: "MODIFY BILL OPERATING MODE",
    152: "REQUEST BILL OPERATING MODE", 151: "TEST LAMPS",
    150: "REQUEST INDIVIDUAL ACCEPT COUNTER", 149: "REQUEST INDIVIDUAL ERROR COUNTER",
    148: "READ OPTO VOLTAGES", 147: "PERFORM STACKER CYCLE",
    146: "OPERATE BI-DIRECTIONAL MOTORS", 145: "REQUEST CURRENCY REVISION",
    144: "UPLOAD BILL TABLES", 143: "BEGIN BILL TABLE UPGRADE",
    142: "FINISH BILL TABLE UPGRADE", 141: "REQUEST FIRMWARE UPGRADE CAPABILITY",
    140: "UPLOAD FIRMWARE", 139: "BEGIN FIRMWARE UPGRADE", 138: "FINISH FIRMWARE UPGRADE",
    137: "SWITCH ENCRYPTION CODE", 136: "STORE ENCRYPTION CODE", 135: "SET ACCEPT LIMIT",
    134: "DISPENSE HOPPER VALUE", 133: "REQUEST HOPPER POLLING VALUE",
    132: "EMERGENCY STOP VALUE", 131: "REQUEST HOPPER COIN VALUE",
    130: "REQUEST INDEXED HOPPER DISPENSE COUNT", 129: "READ BARCODE DATA",
    128: "REQUEST MONEY IN", 127: "REQUEST MONEY OUT", 126: "CLEAR MONEY COUNTERS",
    125: "PAY MONEY OUT", 124: "VERIFY MONEY OUT", 123: "REQUEST ACTIVITY REGISTER",
    122: "REQUEST ERROR STATUS", 121: "PURGE HOPPER", 120: "MODIFY HOPPER BALANCE",
    119: "REQUEST HOPPER BALANCE", 118: "MODIFY CASHBOX VALUE", 117: "REQUEST CASHBOX VALUE",
    116: "MODIFY REAL TIME CLOCK", 115: "REQUEST REAL TIME CLOCK", 114: "REQUEST USB ID",
    113: "SWITCH BAUD RATE", 112: "READ ENCRYPTED EVENTS", 111: "REQUEST ENCRYPTION SUPPORT",
    110: "SWITCH ENCRYPTION KEY", 109: "REQUEST ENCRYPTED HOPPER STATUS",
    108: "REQUEST ENCRYPTED MONETARY ID", 4: "REQUEST COMMS REVISION",
    3: "CLEAR COMMS STATUS VARIABLES", 2: "REQUEST COMMS STATUS VARIABLES",
    1: "RESET DEVICE", 0: "REPLY", 5: "NAK", 6: "BUSY",
}

_PACKET = Layout(cs.Struct("dest" / cs.Int8ub, "length" / cs.Int8ub, "third" / cs.Int8ub,
                           "header" / cs.Int8ub, "data" / cs.GreedyBytes), "ccTalk packet")


class CcTalkFramer(Framer):
    """ccTalk packets with the simple checksum (default) or the CRC-16 variant."""

    name = "cctalk"
    description = "ccTalk (coin acceptors, hoppers, bill validators); --checksum simple|crc16"

    def __init__(self, checksum: str = "simple") -> None:
        if checksum not in ("simple", "crc16"):
            raise ValueError("checksum must be 'simple' or 'crc16'")
        self.checksum = checksum

    def hunt_bytes(self, direction: Direction | None) -> bytes | None:
        return bytes((HOST_ADDRESS,)) if direction == "device" else None

    def build(self, *, direction: Direction | None = None, **fields: Any) -> bytes:
        """Fields: ``dest``, ``header``, ``data`` and, for the simple checksum, ``src``
        (default: the host, 1, for commands; the device's address is the caller's choice)."""
        data = bytes(fields.get("data", b""))
        if len(data) > 255:
            raise LengthError(f"at most 255 data bytes, got {len(data)}", protocol=self.name)
        dest = int(fields.get("dest", HOST_ADDRESS if direction == "device" else 2))
        header = int(fields.get("header", REPLY))
        if self.checksum == "crc16":
            crc = CRC16_XMODEM.func(bytes((dest, len(data), header)) + data)
            body = _PACKET.build({"dest": dest, "length": len(data), "third": crc & 0xFF,
                                  "header": header, "data": data}, self.name)
            return body + bytes((crc >> 8,))
        src = int(fields.get("src", HOST_ADDRESS))
        body = _PACKET.build({"dest": dest, "length": len(data), "third": src,
                              "header": header, "data": data}, self.name)
        return body + bytes((ZERO_SUM8.func(body),))

    def parse(self, data: bytes, direction: Direction | None = None) -> Frame:
        raw = bytes(data)
        n = len(raw)
        if n < 5:
            raise LengthError(f"a ccTalk packet has at least 5 bytes, got {n}",
                              protocol=self.name, data=raw)
        if raw[1] + 5 != n:
            raise LengthError(f"length byte says {raw[1]} data bytes, packet holds {n - 5}",
                              protocol=self.name, data=raw)
        parsed = _PACKET.parse(raw[:-1], self.name)
        header: int = parsed["header"]
        payload: bytes = parsed["data"]
        fields: dict[str, Any] = {"command": "", "code": header, "dest": parsed["dest"]}
        if self.checksum == "crc16":
            expected = CRC16_XMODEM.func(bytes((raw[0], raw[1])) + raw[3:-1])
            received = parsed["third"] | raw[-1] << 8
            if expected != received:
                raise ChecksumError(protocol=self.name, algorithm=CRC16_XMODEM.name,
                                    expected=expected, received=received, width=2, data=raw)
            fields["crc"] = received
        else:
            if sum(raw) & 0xFF:
                expected = ZERO_SUM8.func(raw[:-1])
                raise ChecksumError(protocol=self.name, algorithm=ZERO_SUM8.name,
                                    expected=expected, received=raw[-1], width=1, data=raw)
            fields["src"] = parsed["third"]
        if direction is None:
            direction = "device" if header in (REPLY, NAK, BUSY) else "host"
        if direction == "device" and header == REPLY:
            fields["command"] = "ACK" if not payload else "REPLY"
        else:
            fields["command"] = HEADERS.get(header, f"HEADER {header}")
        fields["header"] = header
        fields["data"] = payload
        return Frame(self.name, raw, fields, direction)

    def reject(self, buf: bytes | bytearray, start: int, length: int) -> int:
        """1 when the checksum fails, as :meth:`parse` finds it for a well-sized candidate."""
        if length < 5 or buf[start + 1] + 5 != length:
            return 0
        end = start + length
        if self.checksum == "crc16":
            expected = CRC16_XMODEM.func(bytes((buf[start], buf[start + 1]))
                                         + bytes(buf[start + 3:end - 1]))
            return 0 if expected == buf[start + 2] | buf[end - 1] << 8 else 1
        return 1 if sum(buf[start:end]) & 0xFF else 0

    def hunt_pattern(self, direction: Direction | None) -> bytes | None:
        """Where :meth:`measure` does not say -1, as a regex: the same rules, read by ``re``."""
        near_end = rb"|.{0,3}\Z"
        simple = self.checksum == "simple"
        if direction == "host":
            src = rb"\x01" if simple else rb"."
            return rb"(?=.." + src + rb"[^\x00\x05\x06]" + near_end + rb")"
        if direction == "device":
            src = rb"[\x02-\xff]" if simple else rb"."
            # hunt_bytes' start byte (replies go to the host, 1) first, then measure's rules.
            return (rb"(?=\x01(?:." + src + rb"\x00|\x00" + src + rb"[\x05\x06]|.{0,2}\Z))")
        return None

    def measure(self, buf: bytes | bytearray, start: int, direction: Direction | None) -> int:
        """Packet length from the length byte, after plausibility checks that cost nothing.

        With a known direction a candidate must look like that direction's traffic: replies
        carry header 0, 5 or 6 (the last two without data) and, with the simple checksum, a
        device's address (2..255) as source; the host's simple-checksum commands carry its own
        address (1) as source. Without these an 8-bit checksum alone lets about 1 in 256
        random windows pass, and such a false packet can swallow the start of a real one.
        """
        if start + 3 >= len(buf):
            return 0
        if direction == "device":
            header = buf[start + 3]
            if header not in (REPLY, NAK, BUSY) or (header != REPLY and buf[start + 1]):
                return -1  # NAK and BUSY carry no data
            if self.checksum == "simple" and buf[start + 2] <= HOST_ADDRESS:
                return -1  # a reply comes from a device address, never 0 or 1
            return buf[start + 1] + 5
        if direction == "host" and (buf[start + 3] in (REPLY, NAK, BUSY) or (
                self.checksum == "simple" and buf[start + 2] != HOST_ADDRESS)):
            return -1
        return buf[start + 1] + 5
