"""The take ledger's talkback cues, pure: a cue starts at the confirmed on of a talk channel
and ends at its off; a recorder's WAV amends the channel's last cue (see ``bridge.ledger``)."""

from __future__ import annotations

from typing import Any

from bridge.ledger_load import Append, Effect, Moment
from bridge.log.kinds import RecordKind
from bridge.vocab import AudioCaptured


class Cues:
    def __init__(self) -> None:
        #: per channel: the open cue's seq and start (clock), the last cue's seq (for its WAV)
        self._open: dict[str, int] = {}
        self._start: dict[str, float] = {}
        self._last: dict[str, int] = {}

    def cue_open(self, channel: str) -> bool:
        return channel in self._open

    def talkback(
        self,
        channel: str,
        on: bool,
        *,
        song: str,
        take: int | None,
        who: str,
        mixer: str | None,
        assumed: bool,
        at: Moment,
        next_seq: int,
        auto_released: float | None = None,
    ) -> list[Effect]:
        """A talk channel's state changed: on starts a cue, off ends the open one (during
        ``song``'s ``take``; ``who`` pressed; ``mixer`` confirmed it, None for the bridge's
        own talkback state; ``next_seq``: the seq the log gives the next record;
        ``auto_released``: the max_on past which the bridge released it)."""
        data: dict[str, Any] = {
            "channel": channel,
            "mixer": mixer,
            "confirmed": mixer is not None and not assumed,
            "assumed": assumed,
        }
        fields = {"song": song, "take": take, "daw_seconds": at.position, "source": who}
        if on:
            self._start[channel] = at.clock
            self._open[channel] = self._last[channel] = next_seq
            return [Append(RecordKind.TALKBACK_START, {**fields, "data": data})]
        amends = self._open.pop(channel, None)
        if amends is None:
            return []  # off with no cue open (the first report after connecting)
        data["duration"] = round(at.clock - self._start.pop(channel, at.clock), 3)
        text = ""
        if auto_released is not None:
            data.update(auto_released=True, max_on=auto_released)
            text = f"auto-released: talkback {channel} was on for more than max_on = {auto_released:g} s"
            fields["source"] = "auto_release"
        return [Append(RecordKind.TALKBACK_END, {**fields, "amends": amends, "text": text, "data": data})]

    def audio(self, source: str, event: AudioCaptured) -> list[Effect]:
        """A recorder saved a talkback cue's audio: it amends the channel's last cue."""
        fields = {
            "source": source,
            "amends": self._last.get(event.channel),
            "text": event.path,
            "data": {"seconds": round(event.seconds, 3), "channel": event.channel},
        }
        return [Append(RecordKind.TALKBACK_AUDIO, fields)]
