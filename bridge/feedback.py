"""Feedback engine: studio-state changes -> per-device feedback, without duplicates.

* ``state`` devices get every changed key as ``Feedback(key, value)``.
* ``mapped`` devices get ``Feedback(control, shown_value)`` for each binding whose
  feedback key changed (a reverse index key -> bindings, like the X32 module's
  subscriptions); a value equal to the last one sent to that control is dropped.
* ``resync(device)`` forgets what was sent and returns the full picture (after a
  (re)connect); ``blackout(device)`` returns "off" for every mapped control.
* While the DAW is offline (``daw/status`` present and not ``ok``), a mapped control that
  follows a DAW key (``transport/*``, ``track/*``: the DAW's last report, not the truth)
  shows "off" (its binding's off value), so no REC or PLAY LED claims what nobody knows;
  continuous ones (faders, position) are left where they are (no motor fader drops and
  comes back). When the DAW is back they show the state again, each only if it differs
  from what the control shows. ``state`` devices get the keys as they are, plus
  ``daw/status`` (the Mackie driver shows the outage itself).

Pure: no I/O and no event loop; the hub puts the results into outboxes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from bridge import state as S
from bridge.mapping import Binding, StudioMap
from bridge.vocab import Feedback, TrackRef, Value

Resolve = Callable[[TrackRef], int | None]


class FeedbackEngine:
    def __init__(self) -> None:
        self._state_devices: set[str] = set()
        self._maps: dict[str, StudioMap] = {}
        self._index: dict[str, list[tuple[str, Binding]]] = {}  # key -> [(device, binding)]
        self._dynamic: list[tuple[str, Binding]] = []  # bindings whose key depends on track names
        self._last: dict[str, dict[str, Value]] = {}  # device -> control -> last value sent
        self.suppressed = 0
        #: the DAW is known to be away: mapped controls following its keys show "off"
        self.daw_offline = False

    # ---------------------------------------------------------------- devices

    def add_state_device(self, name: str) -> None:
        self._state_devices.add(name)
        self._last[name] = {}

    def add_mapped_device(self, name: str, studio_map: StudioMap, resolve: Resolve) -> None:
        self._maps[name] = studio_map
        self._last[name] = {}
        self.reindex(resolve)

    def remove_device(self, name: str) -> None:
        self._state_devices.discard(name)
        self._maps.pop(name, None)
        self._last.pop(name, None)
        self._index = {k: [(d, b) for d, b in v if d != name] for k, v in self._index.items()}
        self._dynamic = [(d, b) for d, b in self._dynamic if d != name]

    def reindex(self, resolve: Resolve) -> None:
        """Rebuild the key -> bindings index (after track names changed)."""
        index: dict[str, list[tuple[str, Binding]]] = {}
        dynamic: list[tuple[str, Binding]] = []
        for device, studio_map in self._maps.items():
            for binding in studio_map.bindings:
                if binding.feedback is None:
                    continue
                if binding.dynamic:
                    dynamic.append((device, binding))
                key = binding.feedback_key(resolve)
                if key is not None:
                    index.setdefault(key, []).append((device, binding))
        self._index = index
        self._dynamic = dynamic

    # ---------------------------------------------------------------- feedback

    def _emit(self, device: str, control: str, value: Value, continuous: bool, out: list[Feedback]) -> None:
        last = self._last.setdefault(device, {})
        if control in last and last[control] == value and type(last[control]) is type(value):
            self.suppressed += 1
            return
        last[control] = value
        out.append(Feedback(control, value, continuous))

    def _masked(self, key: str) -> bool:
        return self.daw_offline and S.is_daw_key(key) and not S.is_continuous_key(key)

    def _shown(self, binding: Binding, key: str, value: Value) -> Value:
        return binding.off_value() if self._masked(key) else binding.feedback_value(value)

    def _daw_flip(self, get: Callable[[str], Value], out: dict[str, list[Feedback]]) -> None:
        """The DAW went away or came back: every mapped control that follows one of its keys."""
        for key, bound in self._index.items():
            if not S.is_daw_key(key) or S.is_continuous_key(key):
                continue
            for device, binding in bound:
                shown = self._shown(binding, key, get(key))
                self._emit(device, binding.control, shown, False, out.setdefault(device, []))

    def on_changes(
        self, changes: Iterable[S.Change], get: Callable[[str], Value], resolve: Resolve
    ) -> dict[str, list[Feedback]]:
        """Feedback per device for a batch of state changes."""
        out: dict[str, list[Feedback]] = {}
        changes = list(changes)
        renamed = False
        for change in changes:
            key = change.key
            if key == S.DAW_STATUS:
                offline = S.daw_offline(change.new)
                if offline != self.daw_offline:
                    self.daw_offline = offline
                    self._daw_flip(get, out)
            elif key.endswith("/name"):
                renamed = True
        if renamed and self._dynamic:
            self.reindex(resolve)
            # a renamed track may now be what a named binding follows: show its values
            for device, binding in self._dynamic:
                dyn_key = binding.feedback_key(resolve)
                if dyn_key is not None:
                    shown = self._shown(binding, dyn_key, get(dyn_key))
                    continuous = S.is_continuous_key(dyn_key)
                    self._emit(device, binding.control, shown, continuous, out.setdefault(device, []))
        for change in changes:
            continuous = S.is_continuous_key(change.key)
            for device in self._state_devices:
                self._emit(device, change.key, change.new, continuous, out.setdefault(device, []))
            for device, binding in self._index.get(change.key, ()):
                value = self._shown(binding, change.key, change.new)
                self._emit(device, binding.control, value, continuous, out.setdefault(device, []))
        return {d: fb for d, fb in out.items() if fb}

    def resync(self, device: str, items: Iterable[tuple[str, Value]], resolve: Resolve) -> list[Feedback]:
        """Forget what was sent to ``device`` and return its full feedback picture."""
        self._last[device] = {}
        out: list[Feedback] = []
        values = dict(items)
        if device in self._state_devices:
            for key, value in values.items():
                self._emit(device, key, value, S.is_continuous_key(key), out)
        studio_map = self._maps.get(device)
        if studio_map is not None:
            if S.DAW_STATUS in values:
                self.daw_offline = S.daw_offline(values[S.DAW_STATUS])
            for binding in studio_map.bindings:
                bound = binding.feedback_key(resolve)
                if bound is None:
                    continue
                shown = self._shown(binding, bound, values.get(bound))
                self._emit(device, binding.control, shown, S.is_continuous_key(bound), out)
        return out

    def blackout(self, device: str) -> list[Feedback]:
        """ "Off" for every control of a mapped device that shows feedback."""
        studio_map = self._maps.get(device)
        if studio_map is None:
            return []
        out: list[Feedback] = []
        seen: set[str] = set()
        for binding in studio_map.bindings:
            if binding.feedback is None or binding.control in seen:
                continue
            seen.add(binding.control)
            out.append(Feedback(binding.control, binding.off_value()))
        self._last[device] = {}
        return out
