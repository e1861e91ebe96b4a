"""Runs one client (FL device) process until SIGTERM/SIGINT or its ``max_tasks``.

Standard output carries JSON lines only (logs go to standard error):

- ``{"event": "ready", "id", "node", "cmbc", "dataset", "samples", "partition", ...}`` once the
  key is loaded and this client's part of the dataset is ready;
- ``{"event": "registered", "tx", "seconds"}`` once the node knows the client;
- ``{"event": "task", "version", "task", "batches", "samples", "loss", "seconds", "outcome"}``
  per trained task, outcome ``accepted``, ``refused:<code>``, ``buffered`` or ``dropped``
  (buffered local tasks also carry ``local``, their index in the buffered run; a task of the
  node's also ``train_s``, its training wall time, and ``trained_at``, the Unix time it ended);
- ``{"event": "disconnected", "reason"}`` / ``{"event": "reconnected", "seconds"}``;
- ``{"event": "flush", "version", "task", "updates", "samples", "norm", "outcome"}`` when the
  average of a buffered run is uploaded;
- ``{"event": "report", "tx", "task", "rtt_ms", ...}`` per STATE_REPORT transaction (with
  local DP also ``privacy``: spent epsilon, budget, releases, noise multiplier);
- with local DP (``client.privacy``): ``{"event": "privacy_noise", "version", "accuracy",
  "noise_multiplier"}`` when adaptive noise drops, and ``{"event": "privacy_budget",
  "epsilon_spent", "epsilon_budget", "releases", "reason", ...}`` once the budget is spent (the
  client then uploads nothing more and stops);
- with ``mining`` (``client.mining``): ``{"event": "miner", "pid", "theta", "duty",
  "reward_account"}`` once its miner process started, ``{"event": "mined", "height", "hash",
  "reward_account"}`` per block its miner got connected, ``{"event": "miner_exited", "code"}``
  when the miner ends, and ``mining`` (theta, duty, the miner's totals) in ``stopped``;
- ``{"event": "stopped", ...totals}`` at the end (with ``error`` when a fatal error ended it).

Operations: a client runs no gRPC server (it only calls its node and a CMBC daemon), so it has
no health service; ``metrics_port`` in its config (0: off) serves Prometheus metrics counted off
the events above (``client.metrics``). SIGTERM or SIGINT stop it: the training thread abandons
its task after the batch it is on, the channels close, it prints ``stopped`` and exits with code
0. It keeps no store: buffered local models live in memory only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path

import uvloop

from dualchain.chain import heartbeat
from dualchain.chain.identity import load_key_file
from dualchain.chain.lifecycle import stop_on_signals
from dualchain.client.config import ClientConfig
from dualchain.client.metrics import ClientMetrics
from dualchain.client.mining import ClientMiner, MiningTurns
from dualchain.client.worker import ClientError, ClientWorker, emit_json, load_client_data

log = logging.getLogger("dualchain.client")


async def _serve(worker: ClientWorker, miner: ClientMiner | None) -> None:
    beat = heartbeat.start()
    if miner is not None:
        miner.relay(asyncio.get_running_loop(), worker.emit)
    try:
        await worker.run_until(stop_on_signals())
    finally:
        heartbeat.stop(beat)


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
    metrics = ClientMetrics()
    metrics.serve(config.metrics_port)
    worker = ClientWorker(config, signer, data, emit=metrics.observing(emit_json),
                          started=started)
    emit_json({"event": "ready", "id": signer.id.hex(), "node": config.node,
               "cmbc": config.cmbc, "dataset": config.dataset, "samples": int(data.y.size),
               "partition": config.partition.index, "slowdown": config.slowdown,
               "drop_prob": config.drop_prob, "metrics_port": config.metrics_port})
    miner = None
    if config.mining is not None:  # it dies with this process (its lifeline), or stops below
        miner = ClientMiner(config.mining, config.cmbc, signer.id, config.tls, Path.cwd())
        miner.start()
        worker.mining_turns = MiningTurns(miner, config.mining.theta)
        emit_json({"event": "miner", "pid": miner.pid, "theta": config.mining.theta,
                   "duty": config.mining.duty, "reward_account": signer.id.hex()})
    mined: dict = {}
    try:
        uvloop.run(_serve(worker, miner))
    except ClientError as exc:
        log.error("%s", exc.reason)
        print(json.dumps({**worker.summary(), "error": f"{exc.code}: {exc.reason}"}),
              flush=True)
        return 2
    finally:
        worker.close()
        if miner is not None:
            assert worker.mining_turns is not None
            mined = {"mining": {**miner.stop(), **worker.mining_turns.totals()}}
    emit_json({**worker.summary(), **mined})
    return 0
