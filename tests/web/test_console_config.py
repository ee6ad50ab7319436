"""The [web] config section: on by default, validated with one-line errors that name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from peers.daemon import cli

from bridge.config import parse_config
from bridge.devices.web import DEFAULT_PORT
from bridge.errors import ConfigError


def test_on_by_default_on_the_documented_port() -> None:
    config = parse_config({}, None)
    web = config.devices["web"]
    assert web.kind == "web" and web.options.port == DEFAULT_PORT == 9124
    assert web.options.bind == "0.0.0.0" and "192.168.0.0/16" in web.options.allow
    assert web.options.producer_transport is True and web.options.token == ""


def test_switched_off() -> None:
    assert "web" not in parse_config({"web": {"enabled": False}}, None).devices


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"port": 0}, "web.port: expected an integer 1-65535"),
        ({"bind": "everywhere"}, 'web.bind: expected an IP address such as "0.0.0.0", got "everywhere"'),
        ({"allow": ["lan"]}, "web.allow: expected IP networks"),
        ({"hosts": ["evil.example/x"]}, "web.hosts: expected host names"),
        ({"producer_transport": "yes"}, "web.producer_transport: expected true or false"),
        ({"max_message": 10}, "web.max_message: expected an integer 256-1048576 (bytes), got 10"),
        ({"tokne": "x"}, "web.tokne: unknown key"),
    ],
)
def test_bad_values_one_line_errors(table: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"web": table}, Path("studio.toml"))
    assert expected in str(info.value) and "studio.toml" in str(info.value)
    assert "\n" not in str(info.value)


def test_devices_web_is_reserved(tmp_path: Path) -> None:
    path = tmp_path / "studio.toml"
    path.write_text('[devices.web]\nkind = "web"\n')
    result = cli("check", "-c", str(path))
    assert result.returncode == 2 and "the name 'web' is reserved" in result.stderr
