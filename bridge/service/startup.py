"""Starting the service (``bridge serve``, ``server.py``): nothing is touched before the port is ours.

The order, each step only after the one before succeeded::

    1. settings      every service secret at least 32 bytes (config.check_service_secrets)      exit 5
    2. the port      bind + listen on listen_host:listen_port                                  exit 5
    3. the identity  an exclusive lock on <db_path>.<worker name>.lock, held while serving      exit 5
    4. the state     the database opened and migrated; the worker and the app built            exit 8 / 5
    5. serving       uvicorn on the bound socket; its lifespan starts the worker, which only now releases the
                     stale claims of its name and queues the start-up catch-ups

A second ``bridge serve`` started while the port is taken therefore stops at step 2 with one line and exit 5,
having opened no database, released no claim, queued no catch-up and asked the EHR nothing. One started on
another port over the same database from the same host stops at step 3: the worker name (``serve@<host>``) is
what its claims are recorded under, and a second worker of that name would release the first one's claims.
The heavy modules (FastAPI, the rules, pint) load only after step 3, so a refused start prints nothing else.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from bridge.config import Settings, check_service_secrets
from bridge.errors import ConfigError

log = logging.getLogger("bridge.service")
BACKLOG = 2048


def worker_name() -> str:
    """The name the service's worker records its claims under."""
    return f"serve@{socket.gethostname()}"


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


def lock_path(db_path: str, name: str) -> Path:
    return Path(f"{db_path}.{name}.lock")


@contextmanager
def identity(db_path: str, name: str) -> Iterator[Path]:
    """Hold the exclusive lock that makes ``name`` this process's own on the database at ``db_path``."""
    path = lock_path(db_path, name)
    if not path.parent.is_dir():
        raise ConfigError(f"cannot claim the worker name {name}: the directory of db_path {db_path} does not exist")
    handle: IO[str] = path.open("a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another bridge serve already runs as {name} on {db_path} "
                              f"(it holds {path.name}): stop it first") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield path
    finally:
        handle.close()  # closing releases the lock; the file stays (removing it would race a new owner)


def run(settings: Settings) -> None:
    """Serve ``settings`` in the order of the module docstring; returns when uvicorn stops."""
    check_service_secrets(settings)
    sock = bind(settings.listen_host, settings.listen_port)
    try:
        name = worker_name()
        with identity(settings.db_path, name):
            _serve(settings, sock, name)
    finally:
        sock.close()


def _serve(settings: Settings, sock: socket.socket, name: str) -> None:
    import uvicorn  # the heavy modules load only once the port and the identity are ours

    from bridge.service.app import build_app
    from bridge.service.logs import event

    app = build_app(settings, name=name)
    event(log, "service.listening", path=f"{settings.listen_host}:{settings.listen_port}", worker=name)
    config = uvicorn.Config(app, access_log=False, log_config=None, timeout_graceful_shutdown=10)
    uvicorn.Server(config).run(sockets=[sock])


__all__ = ["BACKLOG", "bind", "identity", "lock_path", "run", "worker_name"]
