"""The export formats of the take sheet, one module per format, in one registry.

Each module in this package calls :func:`register` with an :class:`ExportFormat`: its ``name``
(``log export --format NAME``, the web console's ``/export/NAME``), file ``suffix``, a one-line
``description`` (the CLI help), a ``media_type`` and ``render(sheet, records=..., room=...)``
returning the whole file (``str``, or ``bytes`` for a binary format). :func:`formats` imports
every module of the package, so adding a format is one new file here (and its test); ``rank``
orders the list the CLI shows.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bridge.log.records import Record
from bridge.log.takesheet import TakeSheet


class Render(Protocol):
    def __call__(self, sheet: TakeSheet, *, records: Sequence[Record] = (), room: str = "") -> str | bytes:
        """The whole export. ``records``: what the sheet was built from; ``room``: the studio's name."""


@dataclass(frozen=True, slots=True)
class ExportFormat:
    name: str
    suffix: str  # with the dot: ".csv"
    description: str  # one line, for the CLI help
    media_type: str
    render: Render
    rank: int = 100  # the CLI lists formats by rank, then name


_REGISTRY: dict[str, ExportFormat] = {}
_loaded = False


def register(fmt: ExportFormat) -> ExportFormat:
    """Add a format (called once by its module at import). Raises ValueError for a taken name."""
    known = _REGISTRY.get(fmt.name)
    if known is not None and known != fmt:
        raise ValueError(f"export format {fmt.name!r} is registered twice")
    _REGISTRY[fmt.name] = fmt
    return fmt


def formats() -> list[ExportFormat]:
    """Every format, by rank then name (the modules of this package are imported on first use)."""
    global _loaded
    if not _loaded:
        for module in pkgutil.iter_modules(__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{__name__}.{module.name}")
        _loaded = True
    return sorted(_REGISTRY.values(), key=lambda f: (f.rank, f.name))


def get(name: str) -> ExportFormat:
    """The format called ``name``. Raises KeyError (with the known names) for another."""
    for fmt in formats():
        if fmt.name == name:
            return fmt
    raise KeyError(f"no export format {name!r} (known: {', '.join(f.name for f in formats())})")
