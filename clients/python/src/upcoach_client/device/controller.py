"""The adaptive controller: per request, answer on the device, on the server, or later, from the phone's state
(battery, charging, thermal, network), the request's privacy level and the server's routing advice. Like the
server's policy it is a pure function and returns its reasons.

Order: what makes the device unable to answer comes first (no model, heat, an empty battery); then whether a server
is reachable at all; then privacy (a sensitive request stays on the phone); then the server's advice; then cost
(a metered network keeps the answer on the phone).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from upcoach_client.models import PrivacyLevel, RouteAdvice

Target = Literal["device", "server", "later"]
Thermal = Literal["nominal", "fair", "serious", "critical"]
Network = Literal["offline", "metered", "unmetered"]

LOW_BATTERY = 20  # the server's threshold too (routing/policy.py LOW_BATTERY)


@dataclass(frozen=True)
class DeviceState:
    battery_level: float | None = None
    charging: bool = False
    thermal: Thermal = "nominal"
    network: Network = "unmetered"
    model_ready: bool = False


@dataclass(frozen=True)
class Choice:
    target: Target
    reasons: tuple[str, ...]


# (blocks on-device generation when true, why): every rule that holds is named in the reasons.
DEVICE_BLOCKERS: tuple[tuple[Callable[[DeviceState], bool], Callable[[DeviceState], str]], ...] = (
    (lambda s: not s.model_ready, lambda s: "no verified on-device model loaded"),
    (lambda s: s.thermal in ("serious", "critical"), lambda s: f"thermal state {s.thermal}: let the phone cool"),
    (
        lambda s: s.battery_level is not None and s.battery_level < LOW_BATTERY and not s.charging,
        lambda s: f"battery {s.battery_level:.0f}% < {LOW_BATTERY}% and not charging: spare the device",
    ),
)


def decide(state: DeviceState, privacy_level: PrivacyLevel = "private", advice: RouteAdvice | None = None) -> Choice:
    blockers = tuple(reason(state) for holds, reason in DEVICE_BLOCKERS if holds(state))
    if state.network == "offline":
        if blockers:
            return Choice("later", ("offline: no server reachable", *blockers))
        return Choice("device", ("offline: no server reachable", "the on-device model answers"))
    if blockers:
        return Choice("server", blockers)
    if privacy_level == "sensitive":
        return Choice("device", ("sensitive request: it stays on the phone",))
    if advice is not None:
        if advice.run_on_device:
            return Choice("device", ("server advice: run on the device", *advice.device_reasons))
        return Choice("server", (f"server advice: {advice.decision}", *advice.reasons, *advice.device_reasons))
    if state.network == "metered":
        return Choice("device", ("metered network: the answer is made on the phone",))
    return Choice("device", ("on-device model ready; no server advice",))
