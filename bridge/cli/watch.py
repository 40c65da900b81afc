"""``bridge watch``: work the inbox without the HTTP service, and poll EHRs that have no working subscriptions."""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
import uuid
from typing import Annotated

import typer

from bridge.cli.common import ConfigOption, err_console, handles_errors, settings_from
from bridge.service.logs import configure_logging, event
from bridge.service.worker import Worker
from bridge.state import Inbox, InboxEvent, Subscriptions, SubscriptionState

HELP = """Run the worker alone: process the inbox and, with --poll, ask the EHR what changed every SECONDS.

Polling covers EHRs without working subscriptions: each poll queries Encounters, Conditions and Observations
updated since the previous poll (_lastUpdated, less a clock-skew margin) and re-screens exactly as a
notification would. The first poll looks back --since-hours. Stop with Ctrl-C (or SIGTERM).

Examples:

\b
    bridge watch --poll 60 --config bridge.yaml
    bridge watch --poll 60 --once --config bridge.yaml      (one poll, wait until processed, exit)

Exit codes: 0 ok, 5 configuration, 7 --once: not done in time or items failed, 8 state store unusable.
"""

log = logging.getLogger("bridge.cli.watch")
POLL_SUBSCRIPTION = "poll/default"
POLL_CHANNEL = "poll"


def register_poll(store: Subscriptions, now: float, since_hours: float, types: tuple[str, ...]) -> None:
    """The poll 'subscription' (kept across runs: the next poll continues where the last one ended)."""
    if store.subscription(POLL_SUBSCRIPTION) is None:
        store.register_subscription(SubscriptionState(POLL_SUBSCRIPTION, POLL_CHANNEL, "poll", resource_types=types,
                                                      created_at=now - since_hours * 3600))


def queue_poll(store: Inbox, now: float) -> None:
    key = f"poll:{POLL_SUBSCRIPTION}:{now:.3f}:{uuid.uuid4().hex[:8]}"
    store.enqueue([InboxEvent(key, "query", POLL_CHANNEL, POLL_SUBSCRIPTION, payload={"reason": "poll"})], now)


def drain(worker: Worker, timeout: float) -> bool:
    """Step until nothing is waiting (or ``timeout``); True when the inbox and the re-screens are empty."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not worker.step() and not worker.store.stats().depth:
            return True
        time.sleep(0.05)
    return False


@handles_errors
def command(
    config: ConfigOption = None,
    poll: Annotated[float | None, typer.Option("--poll", help="poll the EHR every SECONDS", min=1.0)] = None,
    once: Annotated[bool, typer.Option("--once", help="one poll (or one pass over the inbox), then exit")] = False,
    since_hours: Annotated[float, typer.Option("--since-hours", help="how far the very first poll looks back")
                           ] = 24.0,
    timeout: Annotated[float, typer.Option("--timeout", help="--once: give up after SECONDS")] = 600.0,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="first send failed inbox entries and "
                                               "re-screens back to pending (after an outage was fixed)")] = False,
) -> None:
    settings = settings_from(config)
    configure_logging(settings.log_level)
    from bridge.service.app import build_worker  # FastAPI loads only for this command

    worker = build_worker(settings, f"watch@{socket.gethostname()}")
    if retry_failed:
        err_console.print(f"{worker.store.requeue_failed(worker.clock())} failed item(s) queued again",
                          highlight=False)
    if poll is not None:
        register_poll(worker.store, worker.clock(), since_hours, worker.config.trigger_types)
    if once:
        worker.recover()
        if poll is not None:
            queue_poll(worker.store, worker.clock())
        if not drain(worker, timeout):
            raise typer.Exit(7)
        _report_failures(worker.store)
        return
    _run(worker, poll)


def _report_failures(store: Inbox) -> None:
    stats = store.stats()
    failed = stats.inbox.get("failed", 0) + stats.rescreens.get("failed", 0)
    if failed:
        err_console.print(f"{failed} item(s) failed (see the log); fix the cause, then run with --retry-failed",
                          highlight=False)
        raise typer.Exit(7)


def _run(worker: Worker, poll: float | None) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker.start()
    try:
        while not stop.is_set():
            if poll is not None:
                queue_poll(worker.store, worker.clock())
                event(log, "poll.queued", subscription=POLL_SUBSCRIPTION)
            stop.wait(poll if poll is not None else 3600.0)
    except KeyboardInterrupt:
        pass
    finally:
        worker.stop()


__all__ = ["HELP", "command", "drain", "queue_poll", "register_poll"]
