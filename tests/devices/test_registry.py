"""The driver registry: built-in kinds, and the opt-in ways to add one (the test suite's
``fake`` is never a kind unless a test adds it)."""

from __future__ import annotations

import pytest
from peers.fake_device import FakeDevice, daemon_env

from bridge import devices
from bridge.devices import ENV_DRIVERS, known_kinds, load_driver, register
from bridge.errors import ConfigError


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_DRIVERS, raising=False)
    monkeypatch.setattr(devices, "_registered", {})


def test_builtin_kinds_load_and_fake_is_not_one() -> None:
    assert "fake" not in known_kinds()
    with pytest.raises(ConfigError, match="unknown device kind 'fake'"):
        load_driver("fake")
    for kind in ("internal", "mackie", "generic_midi", "mmc", "mmc_in", "talkback_midi"):
        assert load_driver(kind).kind == kind


def test_the_environment_adds_driver_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_DRIVERS, daemon_env()[ENV_DRIVERS])
    assert "fake" in known_kinds()
    assert load_driver("fake") is FakeDevice
    monkeypatch.setenv(ENV_DRIVERS, "mackie=peers.fake_device:FakeDevice")
    assert load_driver("mackie").__name__ == "MackieSurface"  # a built-in kind is never replaced
    monkeypatch.setenv(ENV_DRIVERS, "fake")
    with pytest.raises(ConfigError, match=ENV_DRIVERS):
        known_kinds()
    monkeypatch.setenv(ENV_DRIVERS, "gone=no.such.module:Driver")
    with pytest.raises(ConfigError, match="device kind 'gone' cannot be loaded"):
        load_driver("gone")


def test_register_in_the_process() -> None:
    register("fake", FakeDevice)
    assert "fake" in known_kinds() and load_driver("fake") is FakeDevice
    register("fake2", "peers.fake_device:FakeDevice")
    assert load_driver("fake2") is FakeDevice
    with pytest.raises(ValueError, match="built in"):
        register("mackie", FakeDevice)
