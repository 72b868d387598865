"""Listening to libvirt: what happens to our domains that no op of ours asked for.

A guest that panics, shuts itself down, is paused on an I/O error, or is started or stopped by
hand on the host: libvirt's lifecycle events say so at once. ``DomainEvents`` keeps its own
connection with libvirt's event loop on a thread of its own (the ops' connection in
``hypervisor.py`` is never blocked by it), reopens it when libvirtd restarts, and hands each
change of one of *our* domains (``Hypervisor.is_ours``: local clouds share one libvirtd between
backends) to a callback as a ``DomainChange``.

An event is reported only if the domain is still in the state it implies when it is handled:
a reboot's "stopped" handled after the guest is up again is history, not news. Events missed
while libvirtd is away are not replayed; the frontend's reconcile asks every host's inventory
and catches what was missed.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any, Callable

import libvirt
import structlog

from .hypervisor import DomainState, Hypervisor, ensure_event_loop, state_of

__all__ = ["DomainChange", "DomainEvents"]

log = structlog.get_logger("backend.compute.events")

#: how long to wait before opening the connection again after libvirtd went away
_RECONNECT_S = 2.0

_E = libvirt
#: (event, detail) -> the state it leaves the domain in and why, in words for the instance's owner;
#: (event, None) covers the event's other details. Events missing here (defined, undefined, a
#: shutdown in progress) are our own ops' doing or followed by one that is here.
_CHANGES: dict[tuple[int, int | None], tuple[DomainState, str]] = {
    (_E.VIR_DOMAIN_EVENT_STARTED, None): (DomainState.RUNNING, "started"),
    (_E.VIR_DOMAIN_EVENT_SUSPENDED, _E.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR):
        (DomainState.PAUSED, "paused by the hypervisor on a disk I/O error (a full or failing disk)"),
    (_E.VIR_DOMAIN_EVENT_SUSPENDED, _E.VIR_DOMAIN_EVENT_SUSPENDED_WATCHDOG):
        (DomainState.PAUSED, "paused by its watchdog"),
    (_E.VIR_DOMAIN_EVENT_SUSPENDED, _E.VIR_DOMAIN_EVENT_SUSPENDED_API_ERROR):
        (DomainState.PAUSED, "paused after a hypervisor error"),
    (_E.VIR_DOMAIN_EVENT_SUSPENDED, None): (DomainState.PAUSED, "paused"),
    (_E.VIR_DOMAIN_EVENT_PMSUSPENDED, None): (DomainState.PMSUSPENDED, "suspended by its guest"),
    (_E.VIR_DOMAIN_EVENT_RESUMED, None): (DomainState.RUNNING, "resumed"),
    (_E.VIR_DOMAIN_EVENT_STOPPED, _E.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN):
        (DomainState.SHUTOFF, "shut down from inside the guest"),
    (_E.VIR_DOMAIN_EVENT_STOPPED, _E.VIR_DOMAIN_EVENT_STOPPED_DESTROYED):
        (DomainState.SHUTOFF, "powered off on its hypervisor"),
    (_E.VIR_DOMAIN_EVENT_STOPPED, _E.VIR_DOMAIN_EVENT_STOPPED_CRASHED): (DomainState.CRASHED, "crashed"),
    (_E.VIR_DOMAIN_EVENT_STOPPED, _E.VIR_DOMAIN_EVENT_STOPPED_FAILED):
        (DomainState.CRASHED, "crashed: its QEMU process failed"),
    (_E.VIR_DOMAIN_EVENT_STOPPED, None): (DomainState.SHUTOFF, "stopped"),
    (_E.VIR_DOMAIN_EVENT_CRASHED, _E.VIR_DOMAIN_EVENT_CRASHED_PANICKED):
        (DomainState.CRASHED, "crashed: its kernel panicked"),
    (_E.VIR_DOMAIN_EVENT_CRASHED, None): (DomainState.CRASHED, "crashed"),
}


@dataclass(frozen=True, slots=True)
class DomainChange:
    name: str
    state: DomainState
    #: what happened, in words: "crashed: its kernel panicked"
    cause: str


def change_of(event: int, detail: int) -> tuple[DomainState, str] | None:
    """The state a lifecycle event leaves a domain in, and why; None for an event that is no news."""
    return _CHANGES.get((event, detail)) or _CHANGES.get((event, None))


class DomainEvents:
    """Calls ``on_change`` (on libvirt's event thread) for each change of our domains, from ``start`` to ``stop``."""

    def __init__(self, hypervisor: Hypervisor, on_change: Callable[[DomainChange], None]) -> None:
        self._hv = hypervisor
        self._on_change = on_change
        self._stopped = threading.Event()
        #: set when the connection closes, so the watch opens another
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None
        #: libvirtd is away and that was logged: said once per outage, not every retry
        self._away = False

    def start(self) -> None:
        # Once per process and before the connection that listens is opened: libvirt delivers
        # events only to connections opened with an event loop registered.
        ensure_event_loop()
        self._thread = threading.Thread(target=self._watch, name="libvirt-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._lost.set()
        if self._thread is not None:
            self._thread.join(5)

    def _watch(self) -> None:
        while not self._stopped.is_set():
            conn, callback = self._listen()
            if conn is None:
                self._stopped.wait(_RECONNECT_S)
                continue
            self._lost.wait()
            with contextlib.suppress(libvirt.libvirtError):
                conn.domainEventDeregisterAny(callback)
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()
            if not self._stopped.is_set():
                log.warning("libvirt_events_lost", uri=self._hv.uri)
                self._stopped.wait(_RECONNECT_S)

    def _listen(self) -> tuple[Any, int]:
        self._lost.clear()
        try:
            conn = libvirt.open(self._hv.uri)
        except libvirt.libvirtError as exc:
            if not self._away:
                log.warning("libvirt_events_unavailable", uri=self._hv.uri, reason=exc.get_error_message())
                self._away = True
            return None, 0
        try:
            conn.registerCloseCallback(lambda *_: self._lost.set(), None)
            callback = conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._event, None)
        except libvirt.libvirtError as exc:
            log.warning("libvirt_events_unavailable", uri=self._hv.uri, reason=exc.get_error_message())
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()
            return None, 0
        self._away = False
        log.info("libvirt_events_listening", uri=self._hv.uri)
        return conn, callback

    def _event(self, _conn: Any, domain: Any, event: int, detail: int, _opaque: Any) -> None:
        change = change_of(event, detail)
        if change is None:
            return
        state, cause = change
        try:
            if not self._hv.owns(domain):
                return
            now = state_of(*domain.state())
            name = str(domain.name())
        except libvirt.libvirtError:  # undefined meanwhile: its delete said all there was to say
            return
        if now is not state:
            log.debug("domain_event_stale", domain=name, libvirt_event=event, detail=detail, now=now.value)
            return
        log.info("domain_changed", domain=name, state=state.value, cause=cause)
        try:
            self._on_change(DomainChange(name, state, cause))
        except Exception:  # the loop thread must live on whatever one listener does
            log.exception("domain_change_listener_failed", domain=name)
