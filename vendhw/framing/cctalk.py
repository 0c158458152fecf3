"""ccTalk packets (Crane Payment Innovations / Money Controls, Generic Specification v4.7).

Simple checksum: ``[dest][n][src][header][data...][checksum]`` where the checksum makes the
whole packet sum to 0 mod 256. CRC-16 variant: ``[dest][n][CRC LSB][header][data...][CRC MSB]``
with CRC-16/XMODEM over dest, n, header and data (the source slot carries the CRC's low
byte; devices always reply to address 1). Header 0 is a reply (ACK when it has no data),
5 is NAK, 6 BUSY.

ccTalk has no start byte. A host reading replies knows they are addressed to it (1), which
is what its deframer hunts for; otherwise every offset is a candidate and the checksum
decides. Reply payloads (``*_REPLY``) are declared here once: the hosts read them and the
simulators write them. Sources: ``protocols/cctalk/README.md`` (Generic Spec v4.7 Parts 1-3).
"""

from __future__ import annotations

from enum import IntEnum
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

class Header(IntEnum):
    """ccTalk headers (Generic Specification Part 2 and 3; 0, 5 and 6 are the replies)."""

    FACTORY_SET_UP_AND_TEST = 255
    SIMPLE_POLL = 254
    ADDRESS_POLL = 253
    ADDRESS_CLASH = 252
    ADDRESS_CHANGE = 251
    ADDRESS_RANDOM = 250
    REQUEST_POLLING_PRIORITY = 249
    REQUEST_STATUS = 248
    REQUEST_VARIABLE_SET = 247
    REQUEST_MANUFACTURER_ID = 246
    REQUEST_EQUIPMENT_CATEGORY_ID = 245
    REQUEST_PRODUCT_CODE = 244
    REQUEST_DATABASE_VERSION = 243
    REQUEST_SERIAL_NUMBER = 242
    REQUEST_SOFTWARE_REVISION = 241
    TEST_SOLENOIDS = 240
    OPERATE_MOTORS = 239
    TEST_OUTPUT_LINES = 238
    READ_INPUT_LINES = 237
    READ_OPTO_STATES = 236
    READ_DH_PUBLIC_KEY = 235
    SEND_DH_PUBLIC_KEY = 234
    LATCH_OUTPUT_LINES = 233
    PERFORM_SELF_CHECK = 232
    MODIFY_INHIBIT_STATUS = 231
    REQUEST_INHIBIT_STATUS = 230
    READ_BUFFERED_CREDIT_OR_ERROR_CODES = 229
    MODIFY_MASTER_INHIBIT_STATUS = 228
    REQUEST_MASTER_INHIBIT_STATUS = 227
    REQUEST_INSERTION_COUNTER = 226
    REQUEST_ACCEPT_COUNTER = 225
    REQUEST_ENCRYPTED_PRODUCT_ID = 224
    MODIFY_ENCRYPTED_INHIBIT_AND_OVERRIDE_REGISTERS = 223
    MODIFY_SORTER_OVERRIDE_STATUS = 222
    REQUEST_SORTER_OVERRIDE_STATUS = 221
    ACMI_ENCRYPTED_DATA = 220
    ENTER_NEW_PIN_NUMBER = 219
    ENTER_PIN_NUMBER = 218
    REQUEST_PAYOUT_HIGH_LOW_STATUS = 217
    REQUEST_DATA_STORAGE_AVAILABILITY = 216
    READ_DATA_BLOCK = 215
    WRITE_DATA_BLOCK = 214
    REQUEST_OPTION_FLAGS = 213
    REQUEST_COIN_POSITION = 212
    POWER_MANAGEMENT_CONTROL = 211
    MODIFY_SORTER_PATHS = 210
    REQUEST_SORTER_PATHS = 209
    MODIFY_PAYOUT_ABSOLUTE_COUNT = 208
    REQUEST_PAYOUT_ABSOLUTE_COUNT = 207
    METER_CONTROL = 204
    DISPLAY_CONTROL = 203
    TEACH_MODE_CONTROL = 202
    REQUEST_TEACH_STATUS = 201
    ACMI_UNENCRYPTED_PRODUCT_ID = 200
    CONFIGURATION_TO_EEPROM = 199
    COUNTERS_TO_EEPROM = 198
    CALCULATE_ROM_CHECKSUM = 197
    REQUEST_CREATION_DATE = 196
    REQUEST_LAST_MODIFICATION_DATE = 195
    REQUEST_REJECT_COUNTER = 194
    REQUEST_FRAUD_COUNTER = 193
    REQUEST_BUILD_CODE = 192
    KEYPAD_CONTROL = 191
    MODIFY_DEFAULT_SORTER_PATH = 189
    REQUEST_DEFAULT_SORTER_PATH = 188
    MODIFY_PAYOUT_CAPACITY = 187
    REQUEST_PAYOUT_CAPACITY = 186
    MODIFY_COIN_ID = 185
    REQUEST_COIN_ID = 184
    UPLOAD_WINDOW_DATA = 183
    DOWNLOAD_CALIBRATION_INFO = 182
    MODIFY_SECURITY_SETTING = 181
    REQUEST_SECURITY_SETTING = 180
    MODIFY_BANK_SELECT = 179
    REQUEST_BANK_SELECT = 178
    HANDHELD_FUNCTION = 177
    REQUEST_ALARM_COUNTER = 176
    MODIFY_PAYOUT_FLOAT = 175
    REQUEST_PAYOUT_FLOAT = 174
    REQUEST_THERMISTOR_READING = 173
    EMERGENCY_STOP = 172
    REQUEST_HOPPER_COIN = 171
    REQUEST_BASE_YEAR = 170
    REQUEST_ADDRESS_MODE = 169
    REQUEST_HOPPER_DISPENSE_COUNT = 168
    DISPENSE_HOPPER_COINS = 167
    REQUEST_HOPPER_STATUS = 166
    MODIFY_VARIABLE_SET = 165
    ENABLE_HOPPER = 164
    TEST_HOPPER = 163
    MODIFY_INHIBIT_AND_OVERRIDE_REGISTERS = 162
    PUMP_RNG = 161
    REQUEST_CIPHER_KEY = 160
    READ_BUFFERED_BILL_EVENTS = 159
    MODIFY_BILL_ID = 158
    REQUEST_BILL_ID = 157
    REQUEST_COUNTRY_SCALING_FACTOR = 156
    REQUEST_BILL_POSITION = 155
    ROUTE_BILL = 154
    MODIFY_BILL_OPERATING_MODE = 153
    REQUEST_BILL_OPERATING_MODE = 152
    TEST_LAMPS = 151
    REQUEST_INDIVIDUAL_ACCEPT_COUNTER = 150
    REQUEST_INDIVIDUAL_ERROR_COUNTER = 149
    READ_OPTO_VOLTAGES = 148
    PERFORM_STACKER_CYCLE = 147
    OPERATE_BI_DIRECTIONAL_MOTORS = 146
    REQUEST_CURRENCY_REVISION = 145
    UPLOAD_BILL_TABLES = 144
    BEGIN_BILL_TABLE_UPGRADE = 143
    FINISH_BILL_TABLE_UPGRADE = 142
    REQUEST_FIRMWARE_UPGRADE_CAPABILITY = 141
    UPLOAD_FIRMWARE = 140
    BEGIN_FIRMWARE_UPGRADE = 139
    FINISH_FIRMWARE_UPGRADE = 138
    SWITCH_ENCRYPTION_CODE = 137
    STORE_ENCRYPTION_CODE = 136
    SET_ACCEPT_LIMIT = 135
    DISPENSE_HOPPER_VALUE = 134
    REQUEST_HOPPER_POLLING_VALUE = 133
    EMERGENCY_STOP_VALUE = 132
    REQUEST_HOPPER_COIN_VALUE = 131
    REQUEST_INDEXED_HOPPER_DISPENSE_COUNT = 130
    READ_BARCODE_DATA = 129
    REQUEST_MONEY_IN = 128
    REQUEST_MONEY_OUT = 127
    CLEAR_MONEY_COUNTERS = 126
    PAY_MONEY_OUT = 125
    VERIFY_MONEY_OUT = 124
    REQUEST_ACTIVITY_REGISTER = 123
    REQUEST_ERROR_STATUS = 122
    PURGE_HOPPER = 121
    MODIFY_HOPPER_BALANCE = 120
    REQUEST_HOPPER_BALANCE = 119
    MODIFY_CASHBOX_VALUE = 118
    REQUEST_CASHBOX_VALUE = 117
    MODIFY_REAL_TIME_CLOCK = 116
    REQUEST_REAL_TIME_CLOCK = 115
    REQUEST_USB_ID = 114
    SWITCH_BAUD_RATE = 113
    READ_ENCRYPTED_EVENTS = 112
    REQUEST_ENCRYPTION_SUPPORT = 111
    SWITCH_ENCRYPTION_KEY = 110
    REQUEST_ENCRYPTED_HOPPER_STATUS = 109
    REQUEST_ENCRYPTED_MONETARY_ID = 108
    BUSY = 6
    NAK = 5
    REQUEST_COMMS_REVISION = 4
    CLEAR_COMMS_STATUS_VARIABLES = 3
    REQUEST_COMMS_STATUS_VARIABLES = 2
    RESET_DEVICE = 1
    REPLY = 0


REPLY, NAK, BUSY = Header.REPLY, Header.NAK, Header.BUSY
_PUNCTUATED = {
    Header.FACTORY_SET_UP_AND_TEST: "FACTORY SET-UP AND TEST",
    Header.PERFORM_SELF_CHECK: "PERFORM SELF-CHECK",
    Header.REQUEST_PAYOUT_HIGH_LOW_STATUS: "REQUEST PAYOUT HIGH / LOW STATUS",
    Header.OPERATE_BI_DIRECTIONAL_MOTORS: "OPERATE BI-DIRECTIONAL MOTORS",
}
HEADERS: dict[int, str] = {int(h): _PUNCTUATED.get(h, h.name.replace("_", " ")) for h in Header}
"""Header -> the name the specification prints (``vendhw decode cctalk``)."""

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

    def compiled_scan(self, direction: Direction | None) -> dict[str, Any] | None:
        return {"proto": "CCTALK" if self.checksum == "simple" else "CCTALK_CRC"}

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


# -- reply payloads (Part 2 v4.7), declared once: the hosts parse and the simulators build here --
# Plain fixed-width fields only, so every layout takes the stdlib ``struct`` path of Layout
# (about a microsecond per reply). Multi-byte numbers are little-endian ("LSB first").


def _reply(header: Header, *fields: Any) -> Layout:
    return Layout(cs.Struct(*fields), f"{HEADERS[header]} ({int(header)}) reply")


RESULT_FIELDS: tuple[tuple[str, str], ...] = tuple(
    (f"result_{i}a", f"result_{i}b") for i in range(1, 6))
"""The (result A, result B) field names of the five buffered events, newest first."""
_EVENT_BUFFER = ("counter" / cs.Int8ub,
                 *(name / cs.Int8ub for pair in RESULT_FIELDS for name in pair))
BUFFERED_CREDIT_REPLY = _reply(Header.READ_BUFFERED_CREDIT_OR_ERROR_CODES, *_EVENT_BUFFER)
"""229: ``[event counter][result 1A][result 1B]...[result 5A][result 5B]``, newest first."""
BUFFERED_BILL_EVENTS_REPLY = _reply(Header.READ_BUFFERED_BILL_EVENTS, *_EVENT_BUFFER)
"""159: the same layout as 229 (bill type / status code pairs)."""
MASTER_INHIBIT_STATUS_REPLY = _reply(Header.REQUEST_MASTER_INHIBIT_STATUS,
                                     "status" / cs.Int8ub)
"""227: bit 0 = 1 normal operation, 0 master inhibit active (accepting nothing)."""
ROUTE_BILL_REPLY = _reply(Header.ROUTE_BILL, "error" / cs.Int8ub)
"""154: an ACK when routed, else an error code (254 escrow empty, 255 failed to route)."""
HOPPER_STATUS_REPLY = _reply(
    Header.REQUEST_HOPPER_STATUS, "counter" / cs.Int8ub, "remaining" / cs.Int8ub,
    "paid" / cs.Int8ub, "unpaid" / cs.Int8ub)
"""166: ``[event counter][payout coins remaining][last payout: coins paid][... unpaid]``."""
HOPPER_DISPENSE_COUNT_REPLY = _reply(Header.REQUEST_HOPPER_DISPENSE_COUNT,
                                     "count" / cs.Bytes(3))
"""168: the lifetime dispense count, 3 bytes LSB first (kept as bytes: ``struct`` has no
24-bit integer, and construct's own costs five times the parse)."""
TEST_HOPPER_REPLY = _reply(Header.TEST_HOPPER, "register_1" / cs.Int8ub,
                           "register_2" / cs.Int8ub, "register_3" / cs.Int8ub)
"""163: three flag registers, bit 0 first (names: ``devices.cctalk.HOPPER_FLAGS``)."""
DISPENSE_HOPPER_COINS_REPLY = _reply(Header.DISPENSE_HOPPER_COINS, "counter" / cs.Int8ub)
"""167: the hopper's event counter after it took the dispense (some hoppers just ACK)."""
EMERGENCY_STOP_REPLY = _reply(Header.EMERGENCY_STOP, "unpaid" / cs.Int8ub)
"""172: the payout coins remaining when the motor stopped (now unpaid)."""
COUNTRY_SCALING_FACTOR_REPLY = _reply(Header.REQUEST_COUNTRY_SCALING_FACTOR,
                                      "factor" / cs.Int16ul, "decimals" / cs.Int8ub)
"""156: ``[scaling factor LSB][MSB][decimal places]``; factor 0: country not supported."""
COMMS_REVISION_REPLY = _reply(Header.REQUEST_COMMS_REVISION, "release" / cs.Int8ub,
                              "major" / cs.Int8ub, "minor" / cs.Int8ub)
"""4: ``[release][major revision][minor revision]`` of the ccTalk specification."""
SERIAL_NUMBER_REPLY = _reply(Header.REQUEST_SERIAL_NUMBER, "serial" / cs.Bytes(3))
"""242: 3 bytes, LSB first (kept as bytes: the hopper's dispense check sends them back)."""
COIN_ID_REPLY = _reply(Header.REQUEST_COIN_ID, "id" / cs.Bytes(6))
"""184: 6 ASCII characters (``EU200A``; ``......`` for an empty channel)."""
BILL_ID_REPLY = _reply(Header.REQUEST_BILL_ID, "id" / cs.Bytes(7))
"""157: 7 ASCII characters (``EU0005A``; ``.......`` for an empty channel)."""
HOPPER_COIN_REPLY = _reply(Header.REQUEST_HOPPER_COIN, "id" / cs.Bytes(6))
"""171: the hopper's coin id, 6 ASCII characters as in header 184."""
