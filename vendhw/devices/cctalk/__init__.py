"""ccTalk hosts: coin acceptor, hopper and bill validator, reporting CashEvents.

Layers (sans-I/O core, thin runner):

* **Core.** Every operation (start, poll, payout, route bill...) is a generator that yields
  :class:`Request` steps (one ccTalk command each) and receives the reply data back, and
  yields :class:`Deliver` steps for events that must reach the sink before the host moves
  on. It never touches a port and never sleeps, so the same core runs under
  :meth:`CcTalkBus.run` (threads), :meth:`CcTalkBus.arun` (asyncio) and in tests that drive
  it against a simulator directly.
* **Runner.** :class:`CcTalkBus` builds packets with :class:`~vendhw.framing.cctalk.CcTalkFramer`,
  sends them through :class:`~vendhw.devices.link.FrameLink` with local-echo removal (one
  data wire: the host hears itself), reads replies under the 50 ms inter-byte rule and
  retries idempotent commands (a slave drops a bad packet silently, Part 1 §11).

Credit safety rests on the **event counter** of headers 229/159: the host diffs each reading
against the last one it *committed*, and commits an event only after the sink accepted it, so
a failing journal means the same events (with the same ``event_id``) come again at the next
poll. The counter runs 1..255 then wraps to 1; 0 means the device was reset. More than five
new events means some fell out of the device's five-event buffer: they are reported as one
``fault`` event that says how many were lost.

Facts and sources: ``protocols/cctalk/README.md``.
"""

from __future__ import annotations

# Every name of the former single module stays importable from here (not only __all__).
# ruff: noqa: F401
from vendhw.devices.cctalk.acceptors import CcTalkBillValidator, CcTalkCoinAcceptor
from vendhw.devices.cctalk.bus import CcTalkBus, Request, Step, log, run_async
from vendhw.devices.cctalk.counter import (
    BufferRead,
    CounterState,
    counter_advance,
    counter_distance,
    read_buffer,
)
from vendhw.devices.cctalk.device import CcTalkDevice, Identity, _ascii, _BufferedAcceptor, _drain
from vendhw.devices.cctalk.hopper import (
    CcTalkHopper,
    HopperStatus,
    Payout,
    hopper_flags,
)
from vendhw.devices.cctalk.openers import (
    _BUS_OPTIONS,  # read by vendhw.devices.registry: the -o keys that go to the bus
    _OPENERS,
    _split,
    open_bill_validator,
    open_bus,
    open_coin_acceptor,
    open_device,
    open_hopper,
)
from vendhw.devices.cctalk.tables import (
    _FACTORS,
    BARCODE_TICKET,
    BAUDRATE,
    BILL_STATUS,
    BILL_VALIDATOR_ADDRESS,
    BUFFER_EVENTS,
    BUFFER_REPLY_LENGTH,
    COIN_ACCEPTOR_ADDRESS,
    COIN_ERRORS,
    CURRENCIES,
    ENABLE_HOPPER_CODE,
    HOPPER_ADDRESS,
    HOPPER_FLAGS,
    INHIBIT_CHECK_POLLS,
    MAX_DISPENSE,
    POLL_INTERVAL,
    RECEIVE_GAP,
    REPLY_TIMEOUT,
    RESET_TIMEOUT,
    RETRIES,
    ROUTE_ERRORS,
    ROUTE_EXTEND_ESCROW,
    ROUTE_RETURN,
    ROUTE_STACK,
    ZERO_DECIMAL,
    K,
    currency_of,
    decimals_of,
    parse_value_id,
)
from vendhw.devices.engine import Deliver, Op

__all__ = [
    "BUFFER_EVENTS", "POLL_INTERVAL", "RECEIVE_GAP", "REPLY_TIMEOUT", "BufferRead",
    "CcTalkBillValidator", "CcTalkBus", "CcTalkCoinAcceptor", "CcTalkDevice", "CcTalkHopper",
    "CounterState", "Deliver", "HopperStatus", "Identity", "Payout", "Request",
    "counter_advance", "counter_distance", "hopper_flags", "open_bill_validator", "open_bus",
    "open_coin_acceptor", "open_device", "open_hopper", "parse_value_id", "read_buffer",
    "run_async",
]
