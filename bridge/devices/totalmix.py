"""RME TotalMix FX talkback over OSC (``kind = "totalmix"``; protocols.md §6.2).

* ``/1/mainTalkback`` is a toggle: TotalMix flips talkback when it receives ``1.0`` and sends
  the new state back on the same address (``0.0`` / ``1.0``) to its remote controller's
  address and *outgoing* port (it does not answer to the sender's port). So the driver binds
  that port (``local_port``) and never toggles blind: it toggles only from the state TotalMix
  reported, one toggle at a time (see :mod:`bridge.devices.talkback_osc`, ``mode = "toggle"``).
* Starting state and liveness: TotalMix re-sends every parameter of a page when a message
  selects another page; the driver asks with ``refresh`` (default ``/2/busInput 1.0`` then
  ``/1/busInput 1.0``: page 2, then back to page 1, whose burst includes
  ``/1/mainTalkback``). This comes from a transcription of RME's OSC table (v1.96, comments:
  "selecting a new page ... triggers a complete re-send of all parameters of the newly
  selected page") in the code index, not from RME's own PDF: **UNCONFIRMED**, as are the
  default ports (7001 in / 9001 out here; other sources say 8000 / 9000: protocols.md §11.7).
  The refresh is sent at connect (no answer within ``connect_timeout``: DeviceUnavailable) and
  after ``probe_interval`` seconds of silence.
* TotalMix has one talkback: channel A.
* Setup in TotalMix: Options > Settings > OSC: a Remote Controller "In use", its Port incoming
  = ``port``, Port outgoing = ``local_port``, Remote Controller Address = this machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from bridge.devices._talkback import max_on_check
from bridge.devices.base import DeviceContext
from bridge.devices.talkback_osc import OscProfile, OscTalkbackCore
from bridge.options import in_range, port_check, positive

TALKBACK = "/1/mainTalkback"
DEFAULT_REFRESH = ["/2/busInput", "/1/busInput"]


def _refresh_check(value: Any) -> str | None:
    if not value or any(not a.startswith("/") for a in value):
        return 'a list of OSC addresses (sent with 1.0), e.g. ["/2/busInput", "/1/busInput"]'
    return None


@dataclass(frozen=True)
class TotalMixOptions:
    #: The computer running TotalMix FX.
    host: str = "127.0.0.1"
    #: TotalMix's OSC "Port incoming" (UNCONFIRMED default).
    port: int = field(default=7001, metadata={"check": port_check})
    local_host: str = "0.0.0.0"
    #: TotalMix's OSC "Port outgoing": where TotalMix sends feedback (we bind it).
    local_port: int = field(default=9001, metadata={"check": port_check})
    #: Messages (sent with 1.0) that make TotalMix re-send page 1 (UNCONFIRMED, see above).
    refresh: list[str] = field(
        default_factory=lambda: list(DEFAULT_REFRESH), metadata={"check": _refresh_check}
    )
    #: Seconds of silence before the refresh is sent as a liveness probe.
    probe_interval: float = field(default=10.0, metadata={"check": in_range(0.5, 3600)})
    answer_timeout: float = field(default=1.0, metadata={"check": in_range(0.05, 10)})
    connect_timeout: float = field(default=3.0, metadata={"check": positive})
    max_on: float = field(default=120.0, metadata={"check": max_on_check})


class TotalMixTalkback(OscTalkbackCore[TotalMixOptions]):
    """TotalMix FX's talkback button (see the module docstring)."""

    kind: ClassVar[str] = "totalmix"
    what: ClassVar[str] = "TotalMix FX"
    Options: ClassVar[type[TotalMixOptions]] = TotalMixOptions

    def __init__(self, name: str, options: TotalMixOptions, ctx: DeviceContext | None = None) -> None:
        profile = OscProfile(
            address={"A": TALKBACK},
            on=1.0,
            off=1.0,
            feedback={"A": TALKBACK},
            feedback_on=1.0,
            feedback_off=0.0,
            toggle=True,
            query=[(address, [1.0]) for address in options.refresh],
            query_after_command=False,
            probe_interval=options.probe_interval,
        )
        super().__init__(name, options, ctx, profile)
