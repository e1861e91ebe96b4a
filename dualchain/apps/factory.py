"""The composition root of a chain daemon: which application it runs, built for its genesis.

``dualchain chain --kind ctbc|cmbc`` calls ``run`` here, which starts the daemon
(``chain/daemon/main.py``) with ``app_factory``: the daemon calls the factory of its kind with
its ``AppContext`` once its verifier exists. A CTBC with an ``fl`` genesis section keeps model
blobs in ``<data_dir>/blobs``. The engine imports nothing of this package; this module is where
the two meet.
"""

from __future__ import annotations

from pathlib import Path

from dualchain.apps.cmbc.app import CmbcApp
from dualchain.apps.ctbc.registry import RegistryApp
from dualchain.apps.genesis import Genesis
from dualchain.chain.app import Application
from dualchain.chain.app_context import AppContext, AppFactory
from dualchain.chain.blobs import BlobStore
from dualchain.chain.daemon import main as daemon_main

# Undo journals a CMBC keeps beyond its finality depth: every block a permitted reorg can take
# back, plus headroom.
UNDO_HEADROOM = 16


def ctbc_app(context: AppContext) -> RegistryApp:
    genesis = Genesis.of(context.genesis)  # refuses a section no application knows
    blobs = BlobStore(context.data_dir / "blobs") if genesis.fl is not None else None
    return RegistryApp(genesis, context.verifier, blobs)


def cmbc_app(context: AppContext) -> CmbcApp:
    genesis = Genesis.of(context.genesis)
    return CmbcApp(max_undo=genesis.pow.finality_depth + UNDO_HEADROOM, sched=genesis.sched,
                   block_reward=genesis.pow.block_reward)


FACTORIES: dict[str, AppFactory] = {"ctbc": ctbc_app, "cmbc": cmbc_app}


def app_factory(kind: str) -> AppFactory:
    """The application factory of a chain kind ("ctbc" or "cmbc")."""
    return FACTORIES[kind]


def run(config_path: Path, log_level: str = "INFO") -> int:
    """Runs the chain daemon of a config file with the application of its kind."""
    return daemon_main.run(config_path, log_level, make_app=app_factory)


__all__ = ["FACTORIES", "Application", "app_factory", "cmbc_app", "ctbc_app", "run"]
