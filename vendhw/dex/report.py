"""EVA-DTS audit reports: the :class:`Audit` figures, their text form, and a parser.

An EVA-DTS report ("DEX file") is ASCII text, one *segment* per line ended by CR LF, fields
separated by ``*``; an element is named by its segment and position (``VA101`` is the first
field of ``VA1``). A transmission is ``DXS ... DXE`` around one transaction set ``ST ... SE``;
``G85`` carries a CRC-16 of the set and ``SE01`` the number of segments in it.

Facts used here, with their sources (no code was copied):

* G85 is CRC-16/ARC (poly 0xA001 reflected, init 0, no final xor) over every byte from the
  ``S`` of ``ST`` up to and including the CR LF of the last segment before ``G85``, written
  as four upper-case hex digits. Checked by recomputing ``G85*E8BC`` of
  ``lanmark7/dex-utility@90ccbf1174cf7e76a1e582381f77a04f0bd12130: TestData/Test1.dex``
  (and ``Test-3.dex`` ``33B8``, ``Test-8.dex`` ``9938``); the table in
  ``docs/examples/CRC16.c`` of that repository is built from the same polynomial.
* ``SE01`` counts the segments from ``ST`` to ``SE`` inclusive (``Test-3.dex``,
  ``Test-8.dex``); ``Test1.dex`` leaves out the ``LS``/``LE`` loop markers. The parser
  accepts both and says which one a file used.
* Field meanings (``ID1``/``ID4``, ``VA1``-``VA3``, ``CA2``-``CA4``, ``DA2``/``DB2``,
  ``PA1``/``PA2``, ``EA1``-``EA3``, the event codes ``EJL``/``ELA``): EVA-DTS 6.1.2 as
  listed in the header comment of ``docs/examples/dex_comm_thread.c`` of the same
  repository and in ``/work/shared/research/boards-backend.md`` §2.1.

How vendhw's journals map onto it is described in ``docs/dex.md``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from vendhw.errors import VendhwError
from vendhw.framing.checksums import CRC16_ARC

CRLF = "\r\n"
SEPARATOR = "*"
SET_ID = "001"
"""``ST01``: the transaction set identifier of an audit report."""
CONTROL_NUMBER = "0001"
"""``ST02``/``SE02``: the transaction set control number (one set per transmission)."""
FUNCTIONAL_ID = "VA"
"""``DXS02``: "vending audit"."""
VERSION = "V1/1"
"""``DXS03``: the version/release of the standard the file claims (as in Test1.dex)."""
COMM_ID_LENGTH = 10
"""DXS01 and the DEX/UCS handshakes carry a 10-character communication id."""

EVENT_FAILED_DROP = "EJL"
"""EVA-DTS event: a product failed to drop (no drop seen by the drop sensor)."""
EVENT_FAILED_VEND = "ELA"
"""EVA-DTS event: a vend failed at the selection (motor jam, motor fault, timeout)."""
EVENT_COIN_FAULT = "EA"
"""EVA-DTS event: a coin mechanism fault."""
EVENT_BILL_FAULT = "EN"
"""EVA-DTS event: a bill validator fault."""
EVENT_CASHLESS_FAULT = "EK"
"""EVA-DTS event: a cashless 1 device fault."""
MANUFACTURER = "VENDHW"
"""Our manufacturer block (``MA5*VENDHW*...``) for figures EVA-DTS has no element for."""


class DexFormatError(VendhwError):
    """Text that is not an EVA-DTS report (or a report we cannot represent)."""


@dataclass
class Counter:
    """A value/number pair since initialisation and since the last reset."""

    value: int = 0
    count: int = 0
    value_reset: int = 0
    count_reset: int = 0

    def add(self, value: int, *, since_reset: bool) -> None:
        self.value += value
        self.count += 1
        if since_reset:
            self.value_reset += value
            self.count_reset += 1


@dataclass
class ProductAudit:
    """One selection: its price and paid vends (``PA1``/``PA2``)."""

    selection: str
    price: int | None = None
    paid: Counter = field(default_factory=Counter)


@dataclass
class EventAudit:
    """One event code: when it last happened and how often (``EA1``/``EA2``)."""

    code: str
    date: str = ""
    """``YYMMDD`` of the most recent occurrence."""
    time: str = ""
    """``HHMM`` of the most recent occurrence."""
    count_reset: int = 0
    count: int = 0


@dataclass
class CashFlow:
    """Money in and out of the cash devices (``CA3``/``CA4``), since reset and since init."""

    cash_in_reset: int = 0
    to_box_reset: int = 0
    to_tubes_reset: int = 0
    bills_in_reset: int = 0
    cash_in: int = 0
    to_box: int = 0
    to_tubes: int = 0
    bills_in: int = 0
    dispensed_reset: int = 0
    dispensed: int = 0


@dataclass
class Reads:
    """The audit reads themselves (``EA3``)."""

    with_reset: int = 0
    """EA301: reads with reset since initialisation."""
    date: str = ""
    """EA302: this read's date ``YYMMDD``."""
    time: str = ""
    """EA303: this read's time ``HHMM``."""
    last_date: str = ""
    last_time: str = ""
    total: int = 0
    """EA309: reads with or without reset since initialisation."""
    resets: int = 0
    """EA310: resets since initialisation."""


@dataclass
class Audit:
    """The figures of one audit report; :func:`generate` writes them, :func:`parse` reads."""

    machine_id: str
    model: str = "vendhw"
    currency: str = "EUR"
    decimals: int = 2
    paid: Counter = field(default_factory=Counter)
    """VA1: every paid vend (cash, cashless 1, cashless 2)."""
    test: Counter = field(default_factory=Counter)
    """VA2: test vends (vends no sale paid for: ``vendhw dispense``, service)."""
    cash: Counter = field(default_factory=Counter)
    """CA2: cash sales."""
    cashless1: Counter = field(default_factory=Counter)
    """DA2: cashless 1 sales (an MDB card reader)."""
    cashless2: Counter = field(default_factory=Counter)
    """DB2: cashless 2 sales (vendhw books QR / mobile-wallet orders here)."""
    cash_flow: CashFlow = field(default_factory=CashFlow)
    products: list[ProductAudit] = field(default_factory=list)
    events: list[EventAudit] = field(default_factory=list)
    reads: Reads = field(default_factory=Reads)
    unknown_vends: int = 0
    """Vends whose outcome nobody knows yet (for an operator; not counted as paid)."""

    @property
    def comm_id(self) -> str:
        return comm_id_for(self.machine_id)

    def product(self, selection: str) -> ProductAudit:
        for product in self.products:
            if product.selection == selection:
                return product
        product = ProductAudit(selection)
        self.products.append(product)
        return product

    def event(self, code: str) -> EventAudit:
        for event in self.events:
            if event.code == code:
                return event
        event = EventAudit(code)
        self.events.append(event)
        return event

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def comm_id_for(machine_id: str) -> str:
    """A 10-character communication id from a machine id (EVA-DTS allows letters and digits)."""
    cleaned = "".join(ch for ch in machine_id.upper() if ch.isalnum())
    return (cleaned[-COMM_ID_LENGTH:] if cleaned else "VENDHW").ljust(COMM_ID_LENGTH, "0")


# -- writing ------------------------------------------------------------------------------

def _num(value: int | None) -> str:
    return "" if value is None else str(int(value))


def _clean(text: str) -> str:
    """A field value: no separators, line breaks or non-ASCII (they would break the file)."""
    return "".join(ch for ch in text if 32 <= ord(ch) < 127 and ch != SEPARATOR)


def segment(seg_id: str, *fields: object) -> str:
    """One segment line without its CR LF; trailing empty fields are left out."""
    values = ["" if f is None else str(f) for f in fields]
    while values and values[-1] == "":
        values.pop()
    return SEPARATOR.join([seg_id, *values])


def g85(segments: list[str]) -> str:
    """The G85 value of a transaction set: CRC-16/ARC over ``ST``.. with each CR LF."""
    body = "".join(line + CRLF for line in segments).encode("ascii")
    return f"{CRC16_ARC(body):04X}"


def _counter(seg_id: str, counter: Counter) -> str:
    return segment(seg_id, counter.value, counter.count, counter.value_reset,
                   counter.count_reset)


def transaction_set(audit: Audit) -> list[str]:
    """The segments from ``ST`` to the one before ``G85``."""
    lines = [segment("ST", SET_ID, CONTROL_NUMBER),
             segment("ID1", _clean(audit.machine_id), _clean(audit.model)),
             segment("ID4", audit.decimals, currency_number(audit.currency),
                     _clean(audit.currency)),
             _counter("VA1", audit.paid),
             _counter("VA2", audit.test),
             _counter("CA2", audit.cash)]
    flow = audit.cash_flow
    lines.append(segment("CA3", flow.cash_in_reset, flow.to_box_reset, flow.to_tubes_reset,
                         flow.bills_in_reset, flow.cash_in, flow.to_box, flow.to_tubes,
                         flow.bills_in))
    lines.append(segment("CA4", flow.dispensed_reset, 0, flow.dispensed, 0))
    lines.append(_counter("DA2", audit.cashless1))
    lines.append(_counter("DB2", audit.cashless2))
    if audit.products:
        lines.append(segment("LS", "0100"))
        for product in audit.products:
            lines.append(segment("PA1", _clean(product.selection), _num(product.price)))
            paid = product.paid
            lines.append(segment("PA2", paid.count, paid.value, paid.count_reset,
                                 paid.value_reset))
        lines.append(segment("LE", "0100"))
    for event in audit.events:
        lines.append(segment("EA1", event.code, event.date, event.time))
        lines.append(segment("EA2", event.code, event.count_reset, event.count))
    reads = audit.reads
    lines.append(segment("EA3", reads.with_reset, reads.date, reads.time, "",
                         reads.last_date, reads.last_time, "", "", reads.total, reads.resets))
    if audit.unknown_vends:
        lines.append(segment("MA5", MANUFACTURER, "UNKNOWN", audit.unknown_vends))
    for line in lines:
        if "\r" in line or "\n" in line:
            raise DexFormatError(f"segment {line[:20]!r} contains a line break")
    return lines


def generate(audit: Audit) -> str:
    """The whole transmission ``DXS`` .. ``DXE`` as text with CR LF line ends."""
    body = transaction_set(audit)
    check = g85(body)
    lines = [segment("DXS", audit.comm_id, FUNCTIONAL_ID, VERSION, 1), *body,
             segment("G85", check), segment("SE", len(body) + 2, CONTROL_NUMBER),
             segment("DXE", 1, 1)]
    return "".join(line + CRLF for line in lines)


# ISO 4217 numeric codes of the currencies vendhw's backends sell in (ID402).
_CURRENCY_NUMBERS = {"CNY": 156, "EUR": 978, "USD": 840, "GBP": 826, "JPY": 392, "CHF": 756,
                     "HKD": 344, "SGD": 702, "AUD": 36, "CAD": 124, "THB": 764, "INR": 356,
                     "MYR": 458, "PLN": 985, "SEK": 752, "NOK": 578, "DKK": 208, "CZK": 203}


def currency_number(code: str) -> str:
    """ID402: the ISO 4217 numeric code, 3 digits (empty when we do not know it)."""
    number = _CURRENCY_NUMBERS.get(code.upper())
    return "" if number is None else f"{number:03d}"


# -- reading ------------------------------------------------------------------------------

@dataclass
class DexDocument:
    """One parsed transmission: its segments, its checks, and the figures read back."""

    segments: list[tuple[str, list[str]]]
    comm_id: str
    g85_stated: str | None
    g85_computed: str | None
    se_stated: int | None
    se_counted: int
    se_convention: str
    """``"all"`` (ST..SE), ``"without loops"`` (LS/LE left out), or ``"mismatch"``."""
    audit: Audit
    problems: list[str] = field(default_factory=list)

    @property
    def g85_ok(self) -> bool | None:
        if self.g85_stated is None:
            return None
        return self.g85_stated.upper() == self.g85_computed

    @property
    def valid(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"comm_id": self.comm_id, "valid": self.valid, "problems": self.problems,
                "g85": {"stated": self.g85_stated, "computed": self.g85_computed,
                        "ok": self.g85_ok},
                "se": {"stated": self.se_stated, "counted": self.se_counted,
                       "convention": self.se_convention},
                "segments": len(self.segments), "audit": self.audit.to_dict()}


def _split_lines(text: str) -> list[tuple[int, str]]:
    out = []
    for number, raw in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"),
                                 start=1):
        line = raw.strip()
        if line:
            out.append((number, line))
    return out


def _int(fields: list[str], index: int, where: str) -> int:
    if index >= len(fields) or fields[index].strip() == "":
        return 0
    try:
        return int(fields[index].strip())
    except ValueError:
        raise DexFormatError(f"{where}: field {index + 1} is {fields[index]!r}, "
                             f"not a number") from None


def _str(fields: list[str], index: int) -> str:
    return fields[index] if index < len(fields) else ""


def _read_counter(fields: list[str], where: str) -> Counter:
    return Counter(*(_int(fields, i, where) for i in range(4)))


def parse_all(text: str) -> list[DexDocument]:
    """Every transmission in ``text`` (files may hold several, one after the other)."""
    lines = _split_lines(text)
    if not lines:
        raise DexFormatError("empty file: no DXS segment")
    groups: list[list[tuple[int, str]]] = []
    for number, line in lines:
        if line.startswith("DXS*") or line == "DXS" or not groups:
            groups.append([])
        groups[-1].append((number, line))
    return [_parse_one(group) for group in groups]


def parse(text: str) -> DexDocument:
    """The first (usually the only) transmission in ``text``."""
    return parse_all(text)[0]


def _parse_one(lines: list[tuple[int, str]]) -> DexDocument:
    first_no, first = lines[0]
    if not first.startswith("DXS"):
        raise DexFormatError(f"line {first_no}: expected a DXS segment, found {first[:20]!r}")
    segments: list[tuple[str, list[str]]] = []
    for number, line in lines:
        seg_id, *fields = line.split(SEPARATOR)
        if not seg_id or not seg_id.isalnum() or len(seg_id) > 4:
            raise DexFormatError(f"line {number}: {line[:30]!r} is not a segment")
        segments.append((seg_id, fields))
    ids = [seg_id for seg_id, _ in segments]
    if "ST" not in ids:
        raise DexFormatError("no ST segment: not an EVA-DTS transaction set")
    problems: list[str] = []
    st = ids.index("ST")
    se = ids.index("SE") if "SE" in ids else None
    g85_at = ids.index("G85") if "G85" in ids else None
    raw = [line for _, line in lines]
    stated_g85 = computed_g85 = None
    if g85_at is not None and g85_at > st:
        stated_g85 = _str(segments[g85_at][1], 0)
        computed_g85 = g85(raw[st:g85_at])
        if stated_g85.upper() != computed_g85:
            problems.append(f"G85 says {stated_g85} but the set's CRC-16 is {computed_g85}")
    se_stated = None
    counted = 0
    convention = "mismatch"
    if se is None:
        problems.append("no SE segment (the transmission is cut short)")
    else:
        counted = se - st + 1
        loops = sum(1 for seg_id in ids[st:se + 1] if seg_id in ("LS", "LE"))
        se_stated = _int(segments[se][1], 0, f"SE (line {lines[se][0]})")
        if se_stated == counted:
            convention = "all"
        elif se_stated == counted - loops:
            convention = "without loops"
        else:
            problems.append(f"SE says {se_stated} segments, the set has {counted}")
    if "DXE" not in ids:
        problems.append("no DXE segment")
    comm_id = _str(segments[0][1], 0)
    return DexDocument(segments, comm_id, stated_g85, computed_g85, se_stated, counted,
                       convention, _audit_of(segments, lines), problems)


def _audit_of(segments: list[tuple[str, list[str]]],
              lines: list[tuple[int, str]]) -> Audit:
    audit = Audit(machine_id="")
    product: ProductAudit | None = None
    for (seg_id, fields), (number, _) in zip(segments, lines, strict=True):
        where = f"line {number} ({seg_id})"
        if seg_id == "ID1":
            audit.machine_id, audit.model = _str(fields, 0), _str(fields, 1)
        elif seg_id == "ID4":
            audit.decimals = _int(fields, 0, where)
            audit.currency = _str(fields, 2)
        elif seg_id == "VA1":
            audit.paid = _read_counter(fields, where)
        elif seg_id == "VA2":
            audit.test = _read_counter(fields, where)
        elif seg_id == "CA2":
            audit.cash = _read_counter(fields, where)
        elif seg_id == "DA2":
            audit.cashless1 = _read_counter(fields, where)
        elif seg_id == "DB2":
            audit.cashless2 = _read_counter(fields, where)
        elif seg_id == "CA3":
            values = [_int(fields, i, where) for i in range(8)]
            flow = audit.cash_flow
            (flow.cash_in_reset, flow.to_box_reset, flow.to_tubes_reset, flow.bills_in_reset,
             flow.cash_in, flow.to_box, flow.to_tubes, flow.bills_in) = values
        elif seg_id == "CA4":
            audit.cash_flow.dispensed_reset = _int(fields, 0, where)
            audit.cash_flow.dispensed = _int(fields, 2, where)
        elif seg_id == "PA1":
            product = audit.product(_str(fields, 0))
            price = _str(fields, 1).strip()
            product.price = _int(fields, 1, where) if price else None
        elif seg_id == "PA2":
            if product is None:
                raise DexFormatError(f"{where}: PA2 without a PA1 before it")
            product.paid = Counter(value=_int(fields, 1, where), count=_int(fields, 0, where),
                                   value_reset=_int(fields, 3, where),
                                   count_reset=_int(fields, 2, where))
        elif seg_id == "EA1" and _str(fields, 0):
            event = audit.event(_str(fields, 0))
            event.date, event.time = _str(fields, 1), _str(fields, 2)
        elif seg_id == "EA2" and _str(fields, 0):
            event = audit.event(_str(fields, 0))
            event.count_reset, event.count = _int(fields, 1, where), _int(fields, 2, where)
        elif seg_id == "EA3":
            audit.reads = Reads(with_reset=_int(fields, 0, where), date=_str(fields, 1),
                                time=_str(fields, 2), last_date=_str(fields, 4),
                                last_time=_str(fields, 5), total=_int(fields, 8, where),
                                resets=_int(fields, 9, where))
        elif seg_id == "MA5" and _str(fields, 0) == MANUFACTURER:
            if _str(fields, 1) == "UNKNOWN":
                audit.unknown_vends = _int(fields, 2, where)
    return audit


__all__ = ["Audit", "CashFlow", "Counter", "DexDocument", "DexFormatError", "EventAudit",
           "ProductAudit", "Reads", "comm_id_for", "g85", "generate", "parse", "parse_all",
           "segment"]
