"""Starting the service (``bridge serve``, ``server.py``): nothing is touched before the port is ours.

The order, each step only after the one before succeeded::

    1. settings      every service secret at least 32 bytes (config.check_service_secrets)      exit 5
    2. the port      bind + listen on listen_host:listen_port                                  exit 5
    3. the state     the database opened and migrated                                          exit 8 / 5
    4. the slot      a free replica slot held while serving (``bridge.service.replicas``)     exit 5
    5. serving       the worker and the app built, uvicorn on the bound socket; its lifespan starts the
                     worker, which only now releases the claims left in its slot by a dead replica and, unless
                     another replica runs the checks, queues the start-up catch-ups

Several ``bridge serve`` processes on one database are *replicas* of one service (issue #15): each takes the
first free slot and a name of its own (``serve/<slot>@<host>:<pid>:<random>``), so none can release another's
claims. A second ``bridge serve`` started while the port is taken stops at step 2 with one line and exit 5,
having opened no database, released no claim, queued no catch-up and asked the EHR nothing; one started when
``MAX_REPLICAS`` replicas already hold every slot stops at step 4 the same way. The heavy modules (FastAPI,
the rules, pint) load only after step 4, so a refused start prints nothing else.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import TYPE_CHECKING

from bridge.config import Settings, check_service_secrets
from bridge.errors import ConfigError

if TYPE_CHECKING:
    from bridge.state import State

log = logging.getLogger("bridge.service")
BACKLOG = 2048


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; a port in use (or any other refusal) is a ``ConfigError``."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise ConfigError(f"cannot listen on {host}:{port}: listen_host does not resolve") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT, never a listening one
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        reason = "the port is in use (another bridge serve?)" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ConfigError(f"cannot listen on {host}:{port}: {reason}") from None
    sock.set_inheritable(True)
    return sock


def run(settings: Settings) -> None:
    """Serve ``settings`` in the order of the module docstring; returns when uvicorn stops."""
    check_service_secrets(settings)
    sock = bind(settings.listen_host, settings.listen_port)
    try:
        from bridge.service.replicas import replica_name, replica_slot
        from bridge.state import open_state

        state = open_state(settings.state_location())
        try:
            with replica_slot(state) as slot:
                _serve(settings, sock, state, slot, replica_name(slot))
        finally:
            state.close()
    finally:
        sock.close()


def _serve(settings: Settings, sock: socket.socket, state: State, slot: int, name: str) -> None:
    import uvicorn  # the heavy modules load only once the port, the state and the slot are ours

    from bridge.service.app import build_app
    from bridge.service.logs import event

    app = build_app(settings, name=name, state=state, election=state, slot=slot)
    event(log, "service.listening", path=f"{settings.listen_host}:{settings.listen_port}", worker=name)
    config = uvicorn.Config(app, access_log=False, log_config=None, timeout_graceful_shutdown=10)
    uvicorn.Server(config).run(sockets=[sock])


__all__ = ["BACKLOG", "bind", "run"]
