"""Runs one client (FL device) process until SIGTERM/SIGINT or its ``max_tasks``.

Standard output carries JSON lines only (logs go to standard error):

- ``{"event": "ready", "id", "node", "cmbc", "dataset", "samples", "partition", ...}`` once the
  key is loaded and this client's part of the dataset is ready;
- ``{"event": "registered", "tx", "seconds"}`` once the node knows the client;
- ``{"event": "task", "version", "task", "batches", "samples", "loss", "seconds", "outcome"}``
  per trained task, outcome ``accepted``, ``refused:<code>``, ``buffered`` or ``dropped``
  (buffered local tasks also carry ``local``, their index in the buffered run);
- ``{"event": "disconnected", "reason"}`` / ``{"event": "reconnected", "seconds"}``;
- ``{"event": "flush", "version", "task", "updates", "samples", "norm", "outcome"}`` when the
  average of a buffered run is uploaded;
- ``{"event": "report", "tx", "task", "rtt_ms", ...}`` per STATE_REPORT transaction;
- ``{"event": "stopped", ...totals}`` at the end (with ``error`` when a fatal error ended it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path

import uvloop

from dualchain.chain.identity import load_key_file
from dualchain.client.config import ClientConfig
from dualchain.client.worker import ClientError, ClientWorker, emit_json, load_client_data

log = logging.getLogger("dualchain.client")


async def _serve(worker: ClientWorker) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await worker.run_until(stop)


def run(config_path: Path, log_level: str = "INFO", *, slowdown: float | None = None,
        drop_prob: float | None = None) -> int:
    """Loads the config (``slowdown`` / ``drop_prob`` override it), runs the client, returns 0.

    Config, key and dataset problems raise ``DualchainError`` (the CLI prints them, exit 2).
    """
    started = time.monotonic()  # offline windows count from here
    logging.basicConfig(level=log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ClientConfig.load(config_path).with_overrides(slowdown=slowdown,
                                                           drop_prob=drop_prob)
    signer = load_key_file(config.key, config.backend)
    data = load_client_data(config)
    worker = ClientWorker(config, signer, data, emit=emit_json, started=started)
    emit_json({"event": "ready", "id": signer.id.hex(), "node": config.node,
               "cmbc": config.cmbc, "dataset": config.dataset, "samples": int(data.y.size),
               "partition": config.partition.index, "slowdown": config.slowdown,
               "drop_prob": config.drop_prob})
    try:
        uvloop.run(_serve(worker))
    except ClientError as exc:
        log.error("%s", exc.reason)
        print(json.dumps({**worker.summary(), "error": f"{exc.code}: {exc.reason}"}),
              flush=True)
        return 2
    finally:
        worker.close()
    emit_json(worker.summary())
    return 0
