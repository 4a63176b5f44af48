"""dtune's live dashboard: a Bokeh server app that reads a study's store.

Serve it from the driver while a search runs (``study.optimize(..., dashboard=True)``),
or from any process for any store file (``dtune dashboard FILE``), running or finished.
It binds 127.0.0.1 unless given another ``address``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bokeh.server.server import Server

    from dtune.storage import BaseStorage

__all__ = ["DashboardServer", "announce", "serve_dashboard"]

logger = logging.getLogger("dtune")


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


class DashboardServer:
    """A running dashboard: its ``url``, and :meth:`stop`.

    Runs the Bokeh server on its own thread and event loop, so it serves while the
    caller's thread drives a search (or sleeps, as ``dtune dashboard`` does).
    """

    def __init__(self, server: Server, thread: threading.Thread, url: str) -> None:
        self._server = server
        self._thread = thread
        self.url = url

    def __repr__(self) -> str:
        return f"DashboardServer({self.url!r})"

    def _repr_html_(self) -> str:  # a clickable link when shown in a notebook
        return f'<a href="{self.url}" target="_blank">dtune dashboard: {self.url}</a>'

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        loop = self._server.io_loop
        if self._thread.is_alive():
            loop.add_callback(self._server.stop)
            loop.add_callback(loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> DashboardServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_dashboard(
    storage: str | os.PathLike[str] | BaseStorage,
    study: str | None = None,
    *,
    port: int = 0,
    address: str = "127.0.0.1",
    dask_dashboard: str | None = None,
) -> DashboardServer:
    """Start serving the dashboard of ``study`` and return at once.

    Parameters
    ----------
    storage
        The store (a SQLite file path or a store object).
    study
        The study's name; may be left out when the store holds exactly one.
    port
        0 (default) picks a free port.
    address
        The interface to listen on: 127.0.0.1 (default) is reachable from this machine
        only; ``"0.0.0.0"`` from anywhere that can reach it (there is no login: use an
        SSH tunnel rather than this on a shared network).
    dask_dashboard
        A link to Dask's own dashboard to show in the header.

    Examples
    --------
    >>> server = serve_dashboard("mnist.db", "mnist")   # doctest: +SKIP
    >>> server.url                                      # doctest: +SKIP
    'http://127.0.0.1:40123/'
    >>> server.stop()                                   # doctest: +SKIP
    """
    from bokeh.application import Application
    from bokeh.application.handlers.function import FunctionHandler
    from bokeh.server.server import Server
    from tornado.ioloop import IOLoop

    from dtune.dashboard.app import build_document
    from dtune.storage import open_storage

    store = open_storage(storage)
    names = store.study_names()
    if study is None:
        if len(names) != 1:
            raise ValueError(f"{store!r} holds studies {names}; choose one with study=...")
        study = names[0]
    elif study not in names:
        raise ValueError(f"no study named {study!r} in {store!r}; it holds {names}")
    port = port or _free_port(address)
    local = address in ("127.0.0.1", "localhost")
    origins = [f"127.0.0.1:{port}", f"localhost:{port}"] if local else ["*"]
    app = Application(
        FunctionHandler(
            partial(build_document, storage=store, study=study, dask_dashboard=dask_dashboard)
        )
    )
    started = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        loop = IOLoop.current()
        try:
            server = Server(
                {"/": app},
                io_loop=loop,
                port=port,
                address=address,
                allow_websocket_origin=origins,
            )
            server.start()
            box["server"] = server
        except BaseException as exc:
            box["error"] = exc
            return
        finally:
            started.set()
        loop.start()
        loop.close(all_fds=True)

    thread = threading.Thread(target=run, name="dtune-dashboard", daemon=True)
    thread.start()
    started.wait()
    if "error" in box:
        raise OSError(f"cannot serve the dashboard on {address}:{port}: {box['error']}")
    host = "127.0.0.1" if address in ("0.0.0.0", "") else address
    url = f"http://{host}:{port}/"
    logger.info("dtune: dashboard of study %r at %s", study, url)
    return DashboardServer(box["server"], thread, url)


def announce(server: DashboardServer) -> None:
    """Print the dashboard's URL: a clickable link in a notebook, text elsewhere."""
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None and "IPKernelApp" in get_ipython().config:
            display(server)
            return
    except ImportError:
        pass
    print(f"dtune: dashboard at {server.url}", flush=True)
