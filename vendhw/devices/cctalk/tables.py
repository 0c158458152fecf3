"""ccTalk tables: timing and limits, addresses, coin error and bill status codes, hopper
flags, currencies, and the value strings of coin and bill ids.

Facts and sources: ``protocols/cctalk/README.md``.
"""

from __future__ import annotations

from typing import Any

from vendhw.devices.cash import CashEventKind
from vendhw.errors import UnexpectedReplyError
from vendhw.framing.base import Layout
from vendhw.framing.cctalk import BUFFERED_CREDIT_REPLY, INTER_BYTE_GAP, RESULT_FIELDS

# --- timing and limits (Generic Specification v4.7) -------------------------------------------

BAUDRATE = 9600
"""Part 1 §10: 9600 baud, 8N1, one open-collector data line."""
RECEIVE_GAP = INTER_BYTE_GAP
"""Part 1 §11: a receiver waits at most 50 ms for the next byte of a packet, then drops it."""
REPLY_TIMEOUT = 0.2
"""Seconds for a reply's first byte. Part 1 §11: most devices answer within 10 ms; the rest
is margin for USB-serial adapters and ptys (pass ``reply_timeout`` to tighten it)."""
RETRIES = 2
"""Resends of an idempotent command after silence or a corrupt reply (Part 1 §11: a slave
discards a bad packet silently and the host retries at application level)."""
POLL_INTERVAL = 0.2
"""Part 3 Appendices 4/11/16: poll coin acceptors every 200 ms (their buffer holds 5 events)."""
INHIBIT_CHECK_POLLS = 25
"""While enabled, ask for the master inhibit every this many polls (5 s at 200 ms) to catch
a reset the event counter cannot show (no event since the previous reset)."""
RESET_TIMEOUT = 2.0
"""Seconds a device may stay silent after RESET DEVICE (header 1) before it answers polls."""
BUFFER_EVENTS = len(RESULT_FIELDS)
"""Part 2 header 229/159: the reply carries the last five events, newest first."""
BUFFER_REPLY_LENGTH = BUFFERED_CREDIT_REPLY.fixed_size
"""Data bytes of a 229/159 reply: the event counter and five (A, B) result pairs."""
MAX_DISPENSE = 255
"""Part 2 header 167: one byte of coin count per dispense command."""

# --- addresses and headers (Part 3 Table 1, Part 2) -------------------------------------------

COIN_ACCEPTOR_ADDRESS = 2
HOPPER_ADDRESS = 3
BILL_VALIDATOR_ADDRESS = 40

ENABLE_HOPPER_CODE = 165
"""Part 2 header 164: data 165 enables the payout, anything else disables it."""
BARCODE_TICKET = 255
"""Part 3 Appendix 16: bill type 255 in header 159 events is a barcode ticket."""
ROUTE_RETURN, ROUTE_STACK, ROUTE_EXTEND_ESCROW = 0, 1, 255
"""Part 2 header 154 route codes."""
ROUTE_ERRORS = {254: "escrow is empty", 255: "failed to route bill"}
"""Part 2 header 154: a one-byte reply instead of ACK."""

# --- event tables (Part 3 Table 3 coin error codes; header 159 bill event codes) --------------

K = CashEventKind
COIN_ERRORS: dict[int, tuple[CashEventKind | None, str]] = {
    0: (None, "null event"),
    1: (K.REJECTED, "reject coin"),
    2: (K.REJECTED, "inhibited coin"),
    3: (K.REJECTED, "multiple window"),
    4: (K.JAM, "wake-up timeout"),
    5: (K.JAM, "validation timeout"),
    6: (K.JAM, "credit sensor timeout"),
    7: (K.JAM, "sorter opto timeout"),
    8: (K.REJECTED, "2nd close coin error"),
    9: (K.REJECTED, "accept gate not ready"),
    10: (K.REJECTED, "credit sensor not ready"),
    11: (K.REJECTED, "sorter not ready"),
    12: (K.REJECTED, "reject coin not cleared"),
    13: (K.REJECTED, "validation sensor not ready"),
    14: (K.FAULT, "credit sensor blocked"),
    15: (K.FAULT, "sorter opto blocked"),
    16: (K.FRAUD, "credit sequence error"),
    17: (K.FRAUD, "coin going backwards"),
    18: (K.FRAUD, "coin too fast (over credit sensor)"),
    19: (K.FRAUD, "coin too slow (over credit sensor)"),
    20: (K.FRAUD, "C.O.S. mechanism activated (coin-on-string)"),
    21: (K.JAM, "DCE opto timeout"),
    22: (K.FRAUD, "DCE opto not seen"),
    23: (K.FRAUD, "credit sensor reached too early"),
    24: (K.FRAUD, "reject coin (repeated sequential trip)"),
    25: (K.REJECTED, "reject slug"),
    26: (K.FAULT, "reject sensor blocked"),
    27: (K.FAULT, "games overload"),
    28: (K.FAULT, "max. coin meter pulses exceeded"),
    29: (K.FAULT, "accept gate open not closed"),
    30: (K.FAULT, "accept gate closed not open"),
    31: (K.JAM, "manifold opto timeout"),
    32: (K.FAULT, "manifold opto blocked"),
    33: (K.REJECTED, "manifold not ready"),
    34: (K.FRAUD, "security status changed"),
    35: (K.FAULT, "motor exception"),
    36: (K.FRAUD, "swallowed coin"),
    37: (K.FRAUD, "coin too fast (over validation sensor)"),
    38: (K.FRAUD, "coin too slow (over validation sensor)"),
    39: (K.FAULT, "coin incorrectly sorted"),
    40: (K.FRAUD, "external light attack"),
    253: (None, "data block request"),
    254: (K.RETURNED, "coin return mechanism activated (flight deck open)"),
    255: (K.FAULT, "unspecified alarm code"),
}
BILL_STATUS: dict[int, tuple[CashEventKind | None, str]] = {
    0: (K.DISABLED, "master inhibit active"),
    1: (K.RETURNED, "bill returned from escrow"),
    2: (K.REJECTED, "invalid bill (validation fail)"),
    3: (K.REJECTED, "invalid bill (transport problem)"),
    4: (K.REJECTED, "inhibited bill (on serial)"),
    5: (K.REJECTED, "inhibited bill (on DIP switches)"),
    6: (K.JAM, "bill jammed in transport (unsafe mode)"),
    7: (K.JAM, "bill jammed in stacker"),
    8: (K.FRAUD, "bill pulled backwards"),
    9: (K.FRAUD, "bill tamper"),
    10: (None, "stacker OK"),
    11: (K.CASHBOX_REMOVED, "stacker removed"),
    12: (K.CASHBOX_REPLACED, "stacker inserted"),
    13: (K.FAULT, "stacker faulty"),
    14: (K.CASHBOX_FULL, "stacker full"),
    15: (K.JAM, "stacker jammed"),
    16: (K.JAM, "bill jammed in transport (safe mode)"),
    17: (K.FRAUD, "opto fraud detected"),
    18: (K.FRAUD, "string fraud detected"),
    19: (K.FAULT, "anti-string mechanism faulty"),
    20: (None, "barcode detected"),  # the ticket follows as bill type 255
    21: (K.FAULT, "unknown bill type stacked"),
}
HOPPER_FLAGS: tuple[tuple[str, ...], ...] = (
    ("absolute maximum current exceeded", "payout timeout occurred",
     "motor reversed during last payout to clear a jam", "opto fraud: path blocked during idle",
     "opto fraud: short-circuit during idle", "opto blocked permanently during payout",
     "power-up detected", "payout disabled"),
    ("opto fraud: short-circuit during payout", "single coin payout mode",
     "use other hopper for change", "opto fraud: finger / slider mis-match",
     "motor reverse limit reached", "inductive coil fault", "NV memory checksum error",
     "PIN number mechanism"),
    ("power down during payout", "unknown coin type paid", "PIN number incorrect",
     "incorrect cipher key", "encryption enabled", "", "", ""),
)
"""Part 2 v4.7 header 163 (test hopper, SCH3 format): three status registers, bit 0 first.
Register 2 bits 2-6 follow v4.7 (Kosta-Git/cc-talk-docs ``docs/cctalk-part-2-v4-7.pdf``
§3.90; the same in Kosta-Git/cc-talk-rs ``cc_talk_core/src/common/hopper_flags.rs``), not
the "checksum A-D" labels of older issues."""

CURRENCIES = {
    "EU": "EUR", "GB": "GBP", "US": "USD", "CH": "CHF", "JP": "JPY", "CN": "CNY", "RU": "RUB",
    "AU": "AUD", "CA": "CAD", "SE": "SEK", "NO": "NOK", "DK": "DKK", "PL": "PLN", "CZ": "CZK",
    "HU": "HUF", "TR": "TRY", "IN": "INR", "ZA": "ZAR", "NZ": "NZD", "MX": "MXN", "BR": "BRL",
    "KR": "KRW", "RO": "RON", "BG": "BGN", "UA": "UAH", "IL": "ILS", "AR": "ARS",
}
"""ccTalk two-letter country codes of coin and bill ids -> ISO 4217 currency."""
ZERO_DECIMAL = {"JP", "KR", "HU"}


# --- reply payloads (declared in vendhw.framing.cctalk) ------------------------------------------


def parse_reply(layout: Layout, data: bytes, what: str = "") -> dict[str, Any]:
    """A reply's fields by its declared layout, or one line naming the header when short.

    Bytes past the declared ones are ignored, as this host always did (a later issue of a
    header may append fields). ``what`` replaces the layout's name in the error.
    """
    size = layout.fixed_size
    n = len(data)
    if n < size:
        raise UnexpectedReplyError(f"{what or layout.name} has {n} byte{'s' * (n != 1)}, "
                                   f"need {size}")
    fields: dict[str, Any] = layout.parse(bytes(data[:size]) if n > size else bytes(data),
                                          "cctalk")
    return fields


def ascii_text(data: bytes) -> str:
    """Text of an ASCII reply without its padding (spaces, NULs)."""
    return data.decode("ascii", "replace").strip(" \x00")


def reply_id(layout: Layout, data: bytes) -> str:
    """The text of a coin, bill or hopper coin id reply (headers 184, 157, 171).

    A reply of the declared width is read through its layout; one of another width is read
    whole, as this host always did: an empty reply (an ACK) is no id, a longer one is not cut.
    """
    if len(data) == layout.fixed_size:
        return ascii_text(parse_reply(layout, data)["id"])
    return ascii_text(data)


# --- value strings (Part 3 coin/bill naming; cc-talk-rs cc_talk_core/src/common/currency.rs) --

_FACTORS = {"K": 1000, "M": 1_000_000, "G": 1_000_000_000}


def currency_of(country: str) -> str:
    """ISO currency for a ccTalk country code (``EU`` -> ``EUR``); unknown codes stay as is."""
    return CURRENCIES.get(country, country)


def decimals_of(country: str) -> int:
    return 0 if country in ZERO_DECIMAL else 2


def parse_value_id(text: str) -> tuple[str, int | None]:
    """``(country, value in minor units)`` from a coin id (``EU200A``) or bill id (``EU0005A``).

    Coin ids (6 characters) carry the value in the currency's smallest unit (``EU200A`` is
    200 cents); bill ids (7 characters) in the main unit (``EU0005A`` is 5 euros). A factor
    letter stands for the decimal point (``2K5`` = 2500) and ``.`` is a decimal point in the
    same unit (Part 3 v4.7 §2.1: ``.50`` = 0.50, ``2.5`` = 2.5; a bill ``BN0.10A`` is 10
    cents). ``None`` for tokens (``TK``), empty channels (``..``), values below the smallest
    unit (coin ``EU.50A``, ``CH2.5A``, ``CH5m0A``) and values that cannot be read.
    """
    text = text.strip()
    if len(text) < 6:
        return "", None
    country = text[:2]
    if country in ("..", "TK") or not country.isalpha():
        return country if country == "TK" else "", None
    digits = text[2:-1]
    try:
        for letter, factor in _FACTORS.items():
            if letter in digits:
                whole, _, frac = digits.partition(letter)
                value = int(whole or "0") * factor + (
                    int(frac) * factor // 10 ** len(frac) if frac else 0)
                return country, value * (10 ** decimals_of(country) if len(text) == 7 else 1)
        if "." in digits:
            # Part 3 §2.1 table: "." is a decimal point in the id's own unit (".50" = 0.50,
            # "2.5" = 2.5 of what "001" is 1 of): the smallest unit for coins, the main
            # unit for bills. A value below the smallest unit cannot be credited.
            whole, _, frac = digits.partition(".")
            dec = decimals_of(country) if len(text) == 7 else 0
            if frac[dec:].strip("0"):
                return country, None
            frac = (frac + "0" * dec)[:dec]
            return country, int(whole or "0") * 10 ** dec + int(frac or "0")
        value = int(digits)
    except ValueError:
        return country, None
    return country, value * (10 ** decimals_of(country) if len(text) == 7 else 1)
