"""Feedback engine: studio-state changes -> per-device feedback, without duplicates.

* ``state`` devices get every changed key as ``Feedback(key, value)``.
* ``mapped`` devices get ``Feedback(control, shown_value)`` for each binding whose
  feedback key changed (a reverse index key -> bindings, like the X32 module's
  subscriptions); a value equal to the last one sent to that control is dropped.
* ``resync(device)`` forgets what was sent and returns the full picture (after a
  (re)connect); ``blackout(device)`` returns "off" for every mapped control.

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

    def on_changes(
        self, changes: Iterable[S.Change], get: Callable[[str], Value], resolve: Resolve
    ) -> dict[str, list[Feedback]]:
        """Feedback per device for a batch of state changes."""
        out: dict[str, list[Feedback]] = {}
        changes = list(changes)
        if self._dynamic and any(c.key.endswith("/name") for c in changes):
            self.reindex(resolve)
            # a renamed track may now be what a named binding follows: show its values
            for device, binding in self._dynamic:
                dyn_key = binding.feedback_key(resolve)
                if dyn_key is not None:
                    shown = binding.feedback_value(get(dyn_key))
                    continuous = S.is_continuous_key(dyn_key)
                    self._emit(device, binding.control, shown, continuous, out.setdefault(device, []))
        for change in changes:
            continuous = S.is_continuous_key(change.key)
            for device in self._state_devices:
                self._emit(device, change.key, change.new, continuous, out.setdefault(device, []))
            for device, binding in self._index.get(change.key, ()):
                value = binding.feedback_value(change.new)
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
            for binding in studio_map.bindings:
                bound = binding.feedback_key(resolve)
                if bound is None:
                    continue
                shown = binding.feedback_value(values.get(bound))
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
