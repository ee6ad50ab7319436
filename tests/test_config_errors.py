"""``studio-bridge check``: a config that names a missing profile or mapping file says which
config file and which key (it named only the missing file, e.g. ``mappings/none.toml: mapping
file not found``, leaving the user to guess which device and which config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import load_config
from bridge.errors import ConfigError

CASES = {
    "missing mapping": (
        'profile = "korg_nanokontrol2"\nmapping = "mappings/none.toml"\n',
        r"^room\.toml: devices\.nano\.mapping: .*mappings/none\.toml: mapping file not found$",
    ),
    "missing profile file": (
        'profile = "profiles/missing.toml"\nmapping = "m.toml"\n',
        r"^room\.toml: devices\.nano: .*profiles/missing\.toml: cannot read profile",
    ),
    "unknown shipped profile": (
        'profile = "korg_nanokontrol"\nmapping = "m.toml"\n',
        r"^room\.toml: devices\.nano: profile 'korg_nanokontrol': no such shipped profile",
    ),
    "broken mapping": (
        'profile = "korg_nanokontrol2"\nmapping = "bad.toml"\n',
        r"^room\.toml: devices\.nano\.mapping: .*bad\.toml: ",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_missing_files_name_the_config_and_the_key(
    tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body, pattern = CASES[case]
    (tmp_path / "m.toml").write_text('[[binding]]\ncontrol = "transport.play"\ncommand = "transport.play"\n')
    (tmp_path / "bad.toml").write_text("[[binding]\n")
    (tmp_path / "room.toml").write_text('[devices.nano]\nkind = "generic_midi"\n' + body)
    monkeypatch.chdir(tmp_path)  # the config given as a relative path, as on the command line
    with pytest.raises(ConfigError, match=pattern):
        load_config(Path("room.toml"))


def test_a_good_room_still_loads(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text('[[binding]]\ncontrol = "transport.play"\ncommand = "transport.play"\n')
    (tmp_path / "room.toml").write_text(
        '[devices.nano]\nkind = "generic_midi"\nprofile = "korg_nanokontrol2"\nmapping = "m.toml"\n'
    )
    config = load_config(tmp_path / "room.toml")
    assert config.devices["nano"].mapping is not None


def test_a_relative_data_dir_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``data_dir = "takes"`` was taken relative to the cwd: the daemon started from / wrote
    /takes, and ``log list -c room/room.toml`` from elsewhere found no log."""
    import argparse

    from bridge.cli import _data_dir

    room = tmp_path / "room"
    room.mkdir()
    (room / "room.toml").write_text('[bridge]\ndata_dir = "takes"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    args = argparse.Namespace(config="../room/room.toml", data_dir=None)
    config = load_config(Path(args.config))
    assert _data_dir(args, config.bridge.data_dir) == room / "takes"
    args.data_dir = "cli-wins"
    assert _data_dir(args, config.bridge.data_dir) == Path("cli-wins")
