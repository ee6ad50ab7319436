"""Command line: ``studio-bridge run | check | status | log | learn``."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from bridge import __version__
from bridge.config import default_data_dir, load_config
from bridge.errors import BridgeError, ConfigError, DataDirError, SessionLogDamaged, SessionLogError

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_CONFIG = 2

log = logging.getLogger("bridge")


class _JournalFormatter(logging.Formatter):
    """``<N>`` syslog priority prefixes, understood by journald for stderr lines."""

    PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", "\n  ")
        return f"<{self.PRIORITY.get(record.levelno, 6)}>{text}"


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer 1-65535, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected an integer 1-65535, got {value}")
    return value


def _data_dir(args: argparse.Namespace, config_dir: str | None = None) -> Path:
    if getattr(args, "data_dir", None):
        return Path(args.data_dir)
    if config_dir:
        path = Path(config_dir).expanduser()
        config = getattr(args, "config", None)
        if not path.is_absolute() and config:
            # relative to the config file, like its mapping and profile paths (not to the cwd:
            # `log list -c` from elsewhere, or a unit's cwd /, found no log or wrote elsewhere)
            path = Path(config).resolve().parent / path
        return path
    return default_data_dir()


def build_parser(export_formats: bool = True) -> argparse.ArgumentParser:
    """The CLI. ``export_formats``: read the export registry (it imports every format module:
    ~12 ms that ``run`` does not need before it is ready) for ``log export --format``."""
    parser = argparse.ArgumentParser(
        prog="studio-bridge",
        description="Control bridge for recording studios: surfaces, tablets, DAWs, mixers and MQTT "
        "around one durable take log.",
    )
    parser.add_argument("--version", action="version", version=f"studio-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser(
        "run", help="run the daemon", description="Run the daemon in the foreground (logs to stderr)."
    )
    run.add_argument(
        "-c", "--config", metavar="FILE", help="TOML config file (default: the built-in default)"
    )
    run.add_argument(
        "--osc-port", type=_port, metavar="N", help="UDP port of the OSC API (wins over the file)"
    )
    run.add_argument(
        "--web-port", type=_port, metavar="N", help="TCP port of the web console (wins over the file)"
    )
    run.add_argument("--data-dir", metavar="DIR", help="where the session log lives (wins over the file)")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="wins over the file")
    run.add_argument(
        "--new-session", action="store_true", help="start a new session even if the last one was not ended"
    )
    run.add_argument("--exit-when-ready", action="store_true", help="exit right after start-up (benchmarks)")

    check = sub.add_parser(
        "check",
        help="validate a config file",
        description="Validate a config without starting; exit 0 if valid, 2 if not.",
    )
    check.add_argument("-c", "--config", metavar="FILE", help="TOML config file")
    check.add_argument("--kinds", action="store_true", help="list the known device kinds")

    status = sub.add_parser(
        "status",
        help="ask a running daemon whether its session log can write",
        description="Ask a running daemon (over its OSC API) whether its session log can write. "
        "Prints one line; exit 0 when the log is ok, 1 when it is failing or the daemon does not "
        "answer. For health checks (no log parsing).",
    )
    status.add_argument("-c", "--config", metavar="FILE", help="take the OSC API port from this config")
    status.add_argument(
        "--osc-port", type=_port, metavar="N", help="UDP port of the OSC API (wins over the file)"
    )
    status.add_argument("--host", default="127.0.0.1", help="where the daemon runs (default 127.0.0.1)")
    status.add_argument("--timeout", type=float, default=2.0, metavar="S", help="seconds to wait (default 2)")

    logp = sub.add_parser(
        "log", help="read the session log", description="Read the session log (works while a daemon writes)."
    )
    logsub = logp.add_subparsers(dest="log_command", metavar="ACTION")
    logsub.required = True
    for name, helptext in (
        ("list", "list sessions"),
        ("show", "print a session's records"),
        ("export", "export a session's take sheet and talkback cues"),
        ("recover", "move a damaged log aside and salvage its records into a new one"),
    ):
        p = logsub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + ".")
        p.add_argument("--data-dir", metavar="DIR", help=f"data directory (default {default_data_dir()})")
        p.add_argument("-c", "--config", metavar="FILE", help="take the data directory from this config")
        if name in ("show", "export"):
            p.add_argument("session", nargs="?", type=int, help="session id (default: the latest)")
        if name == "show":
            p.add_argument("--json", action="store_true", help="one JSON object per line")
        if name == "export":
            if export_formats:
                from bridge.log import formats

                known = formats.formats()
                p.add_argument(
                    "--format",
                    choices=[f.name for f in known],
                    default="csv",
                    help="; ".join(f"{f.name}: {f.description}" for f in known),
                )
            else:  # not a log command: the parser is never asked about formats
                p.add_argument("--format", default="csv")
            p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")

    layout = sub.add_parser(
        "layout",
        help="write a tablet layout for the OSC API",
        description="Write a TouchOSC (Mk2 .tosc) layout or an Open Stage Control session that uses the "
        "OSC API as it is (buttons light from its feedback). See docs/console.md for the reply-port setup.",
    )
    layout.add_argument("format", choices=["touchosc", "open-stage-control"])
    layout.add_argument("--view", choices=["producer", "engineer"], default="producer")
    layout.add_argument("-o", "--output", metavar="FILE", required=True, help="the file to write")

    try:
        learn = importlib.import_module("bridge.devices.midi.learn")
    except ImportError:  # pragma: no cover - learn ships with the MIDI drivers
        pass
    else:
        learn.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    parser = build_parser(export_formats="log" in args_in)
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "check":
            return _check(args)
        if args.command == "status":
            return _status(args)
        if args.command == "log":
            return _log(args)
        if args.command == "layout":
            from bridge import layouts

            layouts.write(args.format, args.view, Path(args.output))
            return EXIT_OK
        if args.command == "learn":
            return int(importlib.import_module("bridge.devices.midi.learn").run(args))
    except ConfigError as exc:
        print(f"studio-bridge: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
        return EXIT_CONFIG
    except SessionLogDamaged as exc:
        print(f"studio-bridge: {exc}", file=sys.stderr)  # noqa: T201
        return EXIT_CONFIG
    except BridgeError as exc:
        print(f"studio-bridge: {exc}", file=sys.stderr)  # noqa: T201
        return EXIT_FAIL
    except KeyboardInterrupt:
        return EXIT_FAIL
    except BrokenPipeError:  # `log show | head`: the reader went away; no traceback for that
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush must not fail too
        return EXIT_FAIL
    parser.error(f"unknown command {args.command}")
    return EXIT_FAIL


def _run(args: argparse.Namespace) -> int:
    config = load_config(Path(args.config) if args.config else None)
    setup_logging(args.log_level or config.bridge.log_level)
    faulthandler.enable()  # a crash in native code leaves a Python traceback in the journal
    from bridge.app import App

    app = App(
        config,
        data_dir=_data_dir(args, config.bridge.data_dir),
        osc_port=args.osc_port,
        web_port=args.web_port,
        new_session=args.new_session,
    )
    try:
        return asyncio.run(app.run(exit_when_ready=args.exit_when_ready))
    except (SessionLogError, DataDirError) as exc:  # damaged, unwritable, locked: one line, exit 2
        log.critical("%s", exc)
        return EXIT_CONFIG
    except BridgeError as exc:
        log.critical("%s", exc)
        return EXIT_FAIL


def _check(args: argparse.Namespace) -> int:
    if args.kinds:
        from bridge.devices import known_kinds

        print("\n".join(known_kinds()))  # noqa: T201
        return EXIT_OK
    if not args.config:
        print("studio-bridge check: -c FILE is required", file=sys.stderr)  # noqa: T201
        return EXIT_CONFIG
    config = load_config(Path(args.config))
    names = ", ".join(
        f"{n} ({s.kind}{', role ' + s.role if s.role else ''})" for n, s in config.devices.items()
    )
    print(f"{args.config}: OK: room {config.bridge.room!r}; devices: {names}")  # noqa: T201
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    import socket

    from bridge.devices._osc import OscDecodeError, decode, encode

    port = args.osc_port
    if port is None:
        spec = load_config(Path(args.config) if args.config else None).devices.get("osc")
        if spec is None:
            raise ConfigError(f"{args.config}: no [devices.osc] OSC API in this config; use --osc-port")
        port = int(getattr(spec.options, "port"))  # noqa: B009 - OscApiOptions
    where = f"udp {args.host}:{port}"
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(args.timeout)
        try:
            sock.sendto(encode("/status"), (args.host, port))
            while True:
                messages = decode(sock.recv(65536))
                reply = next((m for m in messages if m[0] == "/status"), None)
                if reply is not None:
                    break
        except (TimeoutError, OSError, OscDecodeError) as exc:
            reason = "no answer" if isinstance(exc, TimeoutError) else str(exc)
            print(f"studio-bridge status: {reason} from the OSC API on {where}", file=sys.stderr)  # noqa: T201
            return EXIT_FAIL
    values = dict(zip(reply[1][::2], reply[1][1::2], strict=False))
    state, reason, unwritten = values.get("log"), values.get("reason") or "", values.get("unwritten", 0)
    if state == "ok":
        print(f"log ok ({unwritten} record(s) refused since start)")  # noqa: T201
        return EXIT_OK
    print(f"log {state}: {reason} ({unwritten} record(s) not written)")  # noqa: T201
    return EXIT_FAIL


def _out(path: str | None) -> TextIO:
    if path:
        return open(path, "w", encoding="utf-8", newline="")  # closed by the caller
    return sys.stdout


def _log(args: argparse.Namespace) -> int:
    from bridge.log import reader, recovery

    config = load_config(Path(args.config)) if args.config else None
    config_dir = config.bridge.data_dir if config is not None else None
    path = _data_dir(args, config_dir) / "session-log.sqlite3"
    if args.log_command == "recover":
        from bridge.app import DataDirLock

        lock = DataDirLock(path.parent)
        if path.parent.is_dir():
            lock.acquire()  # never move the file away under a running daemon
        try:
            backup = recovery.recover(path)
        finally:
            lock.release()
        print(f"moved the damaged log to {backup}; salvaged records are in {path}")  # noqa: T201
        return EXIT_OK
    if not path.exists():
        raise SessionLogError(f"no session log at {path} (use --data-dir to point at another one)")
    if args.log_command == "list":
        sessions = reader.list_sessions(path)
        if not sessions:
            print("no sessions")  # noqa: T201
        for s in sessions:
            _print_session(s)
        return EXIT_OK
    if args.session is not None:
        ids = [s.id for s in reader.list_sessions(path)]
        if args.session not in ids:
            known = f"sessions {ids[0]}-{ids[-1]}" if ids else "no sessions yet"
            raise SessionLogError(
                f"no session {args.session} in {path} ({known}; see `studio-bridge log list`)"
            )
    records = reader.read_records(path, args.session, amending=args.log_command != "show")
    if args.log_command == "show":
        for record in records:
            if args.json:
                print(json.dumps(record.to_json(), ensure_ascii=False))  # noqa: T201
            else:
                print(_format_record(record.to_json()))  # noqa: T201
        return EXIT_OK
    from bridge.log import formats
    from bridge.log.takesheet import build_take_sheet

    fmt = formats.get(args.format)
    room = config.bridge.room if config is not None else "studio"
    rendered = fmt.render(build_take_sheet(records), records=records, room=room)
    if isinstance(rendered, bytes):
        if args.output:
            Path(args.output).write_bytes(rendered)
        else:
            sys.stdout.buffer.write(rendered)
        return EXIT_OK
    out = _out(args.output)
    try:
        for i in range(0, len(rendered), 8192):  # a pipe whose reader went away fails the next write
            out.write(rendered[i : i + 8192])
    finally:
        if out is not sys.stdout:
            out.close()
    return EXIT_OK


def _print_session(summary: Any) -> None:
    data = (
        summary.__dict__
        if hasattr(summary, "__dict__")
        else {f: getattr(summary, f) for f in getattr(summary, "__slots__", ())}
    )
    ended = data.get("ended") or "not ended"
    songs = data.get("songs") or []
    song_list = ", ".join(songs) if isinstance(songs, list | tuple) else str(songs)
    print(  # noqa: T201
        f"{data.get('session_id', data.get('id'))}\t{data.get('name')}\tstarted {data.get('started')}\t"
        f"{ended}\t{data.get('takes', 0)} takes\t{song_list}"
    )


def _format_record(r: dict[str, Any]) -> str:
    parts = [f"#{r['seq']}", str(r["ts"]), str(r["kind"])]
    if r.get("song"):
        parts.append(f"song={r['song']!r}")
    if r.get("take") is not None:
        parts.append(f"take={r['take']}")
    if r.get("daw_seconds") is not None:
        parts.append(f"at={float(r['daw_seconds']):.3f}s")
    if r.get("source"):
        parts.append(f"from={r['source']}")
    if r.get("text"):
        parts.append(repr(r["text"]))
    if r.get("amends") is not None:
        parts.append(f"amends=#{r['amends']}")
    if r.get("data"):
        parts.append(json.dumps(r["data"], ensure_ascii=False))
    return "  ".join(parts)
