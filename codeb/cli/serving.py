"""How `codeb serve` runs waitress. The bench's bare waitress app (bench/projects_throughput.py)
is served with exactly these settings, so the comparison prices codeb's own work only."""

from __future__ import annotations

import logging
import warnings
from typing import Any

# waitress flushes a response's bytes to the socket as soon as this many are buffered (its
# default, 1, sends the status line and headers with one send() and the body with another).
# At 64 KiB a response up to that size leaves in one send(), made by waitress's main loop
# once the request is answered; a larger one is sent as it is written, from 64 KiB on. Every
# send() releases the GIL, and with waitress's threads waiting for it each release hands it
# to another thread. Measured on `GET /api/projects` (39 KB, wrk -c16, 8 threads), bare
# waitress: CPU per request 328 -> 240 µs, voluntary context switches 6.1 -> 4.7 per
# request (issue 15). codeb's API answers whole bodies, never a stream that would wait for
# 64 KiB to accumulate.
SEND_BYTES = 65536


def waitress_options(threads: int, ident: str = "codeb") -> dict[str, Any]:
    """Keyword arguments for `waitress.serve` besides the app, host and port."""
    from waitress.adjustments import Adjustments

    options: dict[str, Any] = {"threads": threads, "ident": ident}
    # waitress marks send_bytes as deprecated; should a release drop it, serve without it
    # rather than fail to start ("Unknown adjustment").
    if hasattr(Adjustments, "send_bytes"):
        options["send_bytes"] = SEND_BYTES
    return options


def serve(app: Any, host: str, port: int, threads: int, ident: str = "codeb") -> None:
    """waitress.serve with codeb's settings (blocks until the server stops)."""
    import waitress

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "send_bytes", DeprecationWarning)
        waitress.serve(app, host=host, port=port, **waitress_options(threads, ident))


def quiet_queue_log() -> None:
    """waitress logs "Task queue depth is N" for every request that finds its threads busy,
    with its dispatcher's lock held: under load that was a tenth of the server's time and
    stalled the threads taking work. Saturation shows in the request latency histogram
    (GET /metrics); CODEB_LOG_LEVEL=DEBUG brings the lines back."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
