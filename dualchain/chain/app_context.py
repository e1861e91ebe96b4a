"""What a chain daemon lends the application it runs, and the factory that builds one.

The composition root (``dualchain.apps.factory``) gives the daemon an ``AppFactory``; the daemon
calls it with its ``AppContext`` once its verifier exists, and checks that what comes back is
the kind of ``Application`` its consensus drives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dualchain.chain.app import Application
from dualchain.chain.genesis import Genesis
from dualchain.chain.verifier import SignatureVerifier


@dataclass(frozen=True)
class AppContext:
    """What a daemon lends the application it runs."""

    genesis: Genesis
    verifier: SignatureVerifier  # the daemon's (its cache and thread pool are shared)
    data_dir: Path  # the daemon's data directory (an application keeps its blobs there)


AppFactory = Callable[[AppContext], Application]
