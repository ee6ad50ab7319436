"""TalkbackRecorder against real PortAudio on a private JACK server (dummy driver), and through the daemon."""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import math
import subprocess
import sys
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from peers.daemon import Daemon, OscClient, cli
from peers.jack_audio import JackAudio, ToneProcess

from bridge.devices.base import DeviceContext
from bridge.devices.talkback_recorder import TalkbackOptions, TalkbackRecorder
from bridge.errors import DeviceLost, DeviceUnavailable
from bridge.vocab import AudioCaptured, Feedback

pytestmark = pytest.mark.jack

T = 30.0  # generous: 2 shared cores
RATE = 48000


def make(tmp_path: Path, **opts: object) -> TalkbackRecorder:
    ctx = DeviceContext(config_dir=tmp_path, data_dir=tmp_path / "data")
    return TalkbackRecorder("tb", TalkbackOptions(**opts), ctx)  # type: ignore[arg-type]


class Events:
    """Collects what ``receive()`` yields, in a task."""

    def __init__(self, dev: TalkbackRecorder) -> None:
        self.queue: asyncio.Queue[AudioCaptured | BaseException] = asyncio.Queue()
        self.task = asyncio.create_task(self._run(dev))

    async def _run(self, dev: TalkbackRecorder) -> None:
        try:
            async for item in dev.receive():
                assert isinstance(item, AudioCaptured)
                await self.queue.put(item)
        except Exception as exc:
            await self.queue.put(exc)

    async def next(self, timeout: float = T) -> AudioCaptured | BaseException:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            return await self.queue.get()

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def press(dev: TalkbackRecorder, seconds: float) -> None:
    await dev.send(Feedback("talkback", True))
    await asyncio.sleep(seconds)
    await dev.send(Feedback("talkback", False))


def read_wav(path: str) -> tuple[int, int, int, array.array[int]]:
    with wave.open(path, "rb") as w:
        samples = array.array("h", w.readframes(w.getnframes()))
        return w.getnchannels(), w.getframerate(), w.getsampwidth(), samples


def goertzel(samples: array.array[int], rate: int, hz: float) -> float:
    coeff = 2 * math.cos(2 * math.pi * hz / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return math.sqrt(max(s1 * s1 + s2 * s2 - coeff * s1 * s2, 0.0)) / len(samples)


@pytest.fixture
async def recorder(tmp_path: Path, audio_env: JackAudio) -> AsyncIterator[TalkbackRecorder]:
    dev = make(tmp_path)
    async with asyncio.timeout(T):
        await dev.__aenter__()
    try:
        yield dev
    finally:
        await dev.__aexit__(None, None, None)


async def test_press_and_release_writes_one_wav_of_the_right_length(
    recorder: TalkbackRecorder, tmp_path: Path
) -> None:
    events = Events(recorder)
    try:
        await asyncio.sleep(0.8)  # let the pre-roll ring fill
        await press(recorder, 0.5)
        got = await events.next()
    finally:
        await events.close()
    assert isinstance(got, AudioCaptured), got
    path = Path(got.path)
    assert path.parent == tmp_path / "data" / "talkback"
    assert path.name.endswith("_talkback.wav")
    channels, rate, width, samples = read_wav(got.path)
    assert (channels, rate, width) == (1, RATE, 2)
    frames = len(samples)
    assert got.seconds == pytest.approx(frames / RATE)
    # 0.5 s held + 0.5 s pre-roll; the sleep and two shared cores may stretch the hold
    assert 0.9 * RATE <= frames <= 2.5 * RATE, frames
    assert recorder.info["samplerate"] == RATE
    assert recorder.stats()["captured"] == 1


async def test_tone_played_into_the_input_is_in_the_file(
    recorder: TalkbackRecorder,
    audio_env: JackAudio,
) -> None:
    before = await asyncio.to_thread(audio_env.ports)
    rec_in = [p for p in before if p.startswith("PortAudio") and ":in" in p]
    assert rec_in, before
    tone = await asyncio.to_thread(ToneProcess, audio_env, 1000.0)
    events = Events(recorder)
    try:
        for port in rec_in:  # the recorder's port(s); the tone's own client has no inputs
            await asyncio.to_thread(tone.connect_to, port)
        await asyncio.sleep(0.8)
        await press(recorder, 0.6)
        got = await events.next()
    finally:
        await events.close()
        await asyncio.to_thread(tone.stop)
    assert isinstance(got, AudioCaptured), got
    _, rate, _, samples = read_wav(got.path)
    tail = samples[-rate // 4 :]
    rms = math.sqrt(sum(x * x for x in tail) / len(tail))
    assert rms > 5000, rms  # sine of amplitude 16384: rms ~ 11585
    at_tone = goertzel(tail, rate, 1000.0)
    assert at_tone > 10 * goertzel(tail, rate, 700.0)
    assert at_tone > 10 * goertzel(tail, rate, 2500.0)


async def test_short_press_keeps_no_file_and_max_length_splits(
    tmp_path: Path,
    audio_env: JackAudio,
) -> None:
    dev = make(tmp_path, min_seconds=0.3, max_seconds=0.4, preroll=0.0)
    async with asyncio.timeout(T):
        await dev.__aenter__()
    events = Events(dev)
    try:
        await press(dev, 0.0)  # a mis-press: no file
        await asyncio.sleep(0.5)
        assert events.queue.empty()
        await press(dev, 1.3)  # held past max_seconds: 0.4 s files, then the rest
        files = [await events.next() for _ in range(3)]
    finally:
        await events.close()
        await dev.__aexit__(None, None, None)
    assert dev.stats()["skipped"] == 1
    for got in files:
        assert isinstance(got, AudioCaptured), got
    for got in files[:2]:
        assert isinstance(got, AudioCaptured)
        assert got.seconds == pytest.approx(0.4, abs=0.02)
        assert len(read_wav(got.path)[3]) == round(got.seconds * RATE)
    assert len({f.path for f in files if isinstance(f, AudioCaptured)}) == 3
    leftovers = sorted((tmp_path / "data" / "talkback").iterdir())
    assert len(leftovers) >= 3  # the mis-press left nothing; only whole files remain


async def test_keep_open_false_opens_the_stream_per_press(
    tmp_path: Path,
    audio_env: JackAudio,
) -> None:
    dev = make(tmp_path, keep_open=False, directory="tb-files")
    async with asyncio.timeout(T):
        await dev.__aenter__()
    events = Events(dev)
    try:
        ports = await asyncio.to_thread(audio_env.ports)
        assert not [p for p in ports if p.startswith("PortAudio") and ":in" in p], ports  # idle: no stream
        await press(dev, 0.6)
        got = await events.next()
    finally:
        await events.close()
        await dev.__aexit__(None, None, None)
    assert isinstance(got, AudioCaptured), got
    assert Path(got.path).parent == tmp_path / "tb-files"
    frames = len(read_wav(got.path)[3])
    assert 0.2 * RATE <= frames <= 2.5 * RATE, frames  # no pre-roll; the open eats a little


async def test_unknown_input_device_is_unavailable(tmp_path: Path, audio_env: JackAudio) -> None:
    dev = make(tmp_path, device="No Such Interface 99")
    expected = r"'No Such Interface 99' not found.*input devices: 0: system"
    with pytest.raises(DeviceUnavailable, match=expected):
        async with asyncio.timeout(T):
            await dev.__aenter__()
    await dev.__aexit__(None, None, None)


async def test_no_audio_host_is_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a JACK server name nobody runs: PortAudio finds no input device at all (ALSA has none here)
    monkeypatch.setenv("JACK_DEFAULT_SERVER", "sbtalk-nobody-runs-this")
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    dev = make(tmp_path)
    with pytest.raises(DeviceUnavailable, match="no default audio input device"):
        async with asyncio.timeout(T):
            await dev.__aenter__()


async def test_jack_server_stopped_mid_press_finishes_the_file_then_lost(
    tmp_path: Path,
    audio_env: JackAudio,
) -> None:
    dev = make(tmp_path)
    async with asyncio.timeout(T):
        await dev.__aenter__()
    events = Events(dev)
    try:
        await dev.send(Feedback("talkback", True))
        await asyncio.sleep(0.6)
        await asyncio.to_thread(audio_env.stop)  # SIGTERM: clients get JACK's shutdown notice
        got = await events.next()
        lost = await events.next()
    finally:
        await events.close()
        await dev.__aexit__(None, None, None)
    assert isinstance(got, AudioCaptured), got
    assert isinstance(lost, DeviceLost), lost
    channels, rate, _, samples = read_wav(got.path)  # a complete, readable WAV
    assert channels == 1 and len(samples) == round(got.seconds * rate) and got.seconds > 0.3


def test_module_import_does_not_load_portaudio() -> None:
    code = "import sys, bridge.devices.talkback_recorder; assert 'sounddevice' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.slow
async def test_daemon_logs_talkback_audio_against_the_cue(
    tmp_path: Path,
    audio_env: JackAudio,
) -> None:
    config = '[devices.tb]\nkind = "talkback_recorder"\n'
    daemon = Daemon(tmp_path, config, env=audio_env.env)
    await asyncio.to_thread(daemon.start)
    client = OscClient(daemon.osc_port, timeout=T)
    try:
        await asyncio.to_thread(daemon.wait_for_log, "recording talkback from", T)
        assert (await asyncio.to_thread(client.command, "/talkback", 1, timeout=T))[0] == "/ok"
        await asyncio.sleep(0.6)
        assert (await asyncio.to_thread(client.command, "/talkback", 0, timeout=T))[0] == "/ok"
        records: list[dict[str, object]] = []
        async with asyncio.timeout(T):
            while not any(r.get("kind") == "talkback_audio" for r in records):
                await asyncio.sleep(0.3)
                out = await asyncio.to_thread(
                    cli, "log", "show", "--json", "--data-dir", str(daemon.data_dir)
                )
                assert out.returncode == 0, out.stderr
                records = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    finally:
        client.close()
        await asyncio.to_thread(daemon.stop)
        daemon.kill()
    start = next(r for r in records if r.get("kind") == "talkback_start")
    audio = next(r for r in records if r.get("kind") == "talkback_audio")
    assert audio["amends"] == start["seq"]
    path = Path(str(audio["text"]))
    assert await asyncio.to_thread(path.is_file)
    assert path.parent == daemon.data_dir / "talkback"
    channels, rate, width, samples = read_wav(str(path))
    assert (channels, width) == (1, 2) and len(samples) > 0.5 * rate


def test_example_room_config_is_valid_and_typos_are_named(tmp_path: Path) -> None:
    room = Path(__file__).resolve().parents[2] / "configs" / "talkback-room.toml"
    ok = cli("check", "-c", str(room))
    assert ok.returncode == 0, ok.stderr
    assert "talkback_mic (talkback_recorder)" in ok.stdout + ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[devices.tb]\nkind = "talkback_recorder"\npreroll = -1\n')
    out = cli("check", "-c", str(bad))
    assert out.returncode != 0
    assert "devices.tb.preroll" in out.stdout + out.stderr
