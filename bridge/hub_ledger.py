"""The hub's side of the take ledger: it carries out the ledger's effects (appends its records
to the session log, applies its events, sends its DAW markers, answers, starts a new session)
and feeds each record's fate back (``Ledger.durable`` / ``Ledger.failed``) in the hub's order:
a ``_Call`` in the hub's inbox, never from inside the log's callback."""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import TYPE_CHECKING, Any

from bridge.errors import CommandError, SessionLogClosed, SessionLogUnavailable
from bridge.ledger_load import Answer, Append, Apply, Effect, Send, StartSession
from bridge.vocab import DeviceStatus

if TYPE_CHECKING:
    from bridge.hub import Hub
    from bridge.log.records import Record, SessionInfo

log = logging.getLogger("bridge.hub")

#: what appending gave: the record's future, or why the log refused it at once
Appended = asyncio.Future[Any] | BaseException

#: the answer to a command whose record came after the log was closed (the bridge is stopping)
NOT_CARRIED_OUT = "not carried out: the session log is closed (the bridge is stopping); send it again"


class LedgerDriver:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._told_closed = False

    def run(self, effects: list[Effect]) -> list[Appended]:
        """Carry out the ledger's effects, in order; the appended records' futures."""
        hub = self.hub
        futures: list[Appended] = []
        for effect in effects:
            if isinstance(effect, Append):
                futures.append(self.append(effect))
            elif isinstance(effect, Apply):
                hub._apply_event("core", effect.event)
            elif isinstance(effect, Answer):
                effect.done(effect.error)
            elif isinstance(effect, Send):
                self._send(effect)
            elif isinstance(effect, StartSession):
                self._start_session(effect)
        return futures

    def append(self, append: Append) -> Appended:
        try:
            fut: asyncio.Future[Any] = self.hub.log.append(append.kind, **append.fields)
        except SessionLogClosed as exc:  # stopping: no fault, said once
            if not self._told_closed:
                self._told_closed = True
                log.info("session log closed: what still arrives is answered 'not carried out'")
            if append.follows:
                self.hub.submit_call(partial(self._settled, append, None, NOT_CARRIED_OUT))
            return exc
        except Exception as exc:  # a broken log: the caller still gets an answer
            log.error("session log write failed: %s", exc)
            if append.follows:
                reason = f"session log write failed: {exc}"
                self.hub.submit_call(partial(self._settled, append, None, reason))
            return exc
        fut.add_done_callback(partial(self._written, append))
        return fut

    def _written(self, append: Append, fut: asyncio.Future[Any]) -> None:
        error = failure(fut)
        if error is not None and not fut.cancelled():
            exc = fut.exception()
            if isinstance(exc, SessionLogUnavailable):  # the log reported the failure once itself
                log.debug("session log record refused: %s", exc)
            else:
                log.error("session log write failed: %s", exc)
        if append.follows:
            record = fut.result() if error is None else None
            self.hub.submit_call(partial(self._settled, append, record, error))

    def _settled(self, append: Append, record: Record | None, error: str | None) -> None:
        hub = self.hub
        if error is None and record is not None:
            self.run(hub.ledger.durable(append, record, hub._moment()))
        else:
            self.run(hub.ledger.failed(append, error or "not written", hub._moment()))

    def _send(self, effect: Send) -> None:
        hub = self.hub
        target = hub._target(effect.role, effect.command)
        if target is None or hub.slots[target].status != DeviceStatus.OK:
            return
        if effect.sent is not None:
            effect.sent()
        try:
            hub._send(target, effect.command, effect.done)
        except CommandError as exc:
            effect.done(str(exc))

    def _start_session(self, effect: StartSession) -> None:
        hub = self.hub
        task = asyncio.get_running_loop().create_task(hub.log.new_session(effect.name))

        def run(t: asyncio.Task[SessionInfo]) -> None:
            if t.cancelled() or t.exception() is not None:
                reason = "cancelled" if t.cancelled() else str(t.exception())
                self.run(hub.ledger.session_failed(reason, effect.done, hub._moment()))
                return
            info = t.result()
            hub.loaded(info, hub.ledger.session_started(info, effect.done, hub._moment()))

        task.add_done_callback(lambda t: hub.submit_call(partial(run, t)))


def failure(fut: asyncio.Future[Any]) -> str | None:
    """Why a record's future says it was not written (None: it is durable)."""
    if fut.cancelled():
        return "session log closed before the record was written"
    if fut.exception() is not None:
        return f"session log write failed: {fut.exception()}"
    return None
