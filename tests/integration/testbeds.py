"""Starting a whole `dualchain up` testbed in a test: one way for every test module.

    with running_testbed(tmp / "testbed", nodes=2, clients=4, batches=10) as tb:
        tb.wait_for(lambda proc, event: event["event"] == "version", timeout=120)

``running_testbed`` writes the testbed (``Testbed.write``), lets ``prepare`` edit its files,
starts every role and waits for each process's ready line, and stops every process when the
block ends, pass or fail (SIGTERM, then SIGKILL of each process group; the processes also die
with the test process, whatever ends it). Module-scoped fixtures use it directly; a test of its
own uses the ``make_testbed`` fixture (``conftest.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dualchain.deploy.up import Testbed, UpConfig


@contextlib.contextmanager
def running_testbed(workdir: Path, prepare: Callable[[Testbed], None] | None = None,
                    **config: Any) -> Iterator[Testbed]:
    tb = Testbed(UpConfig(workdir=str(workdir), **config), progress=lambda line: None)
    try:
        tb.write()
        if prepare is not None:
            prepare(tb)
        tb.start_roles()
        yield tb
    finally:
        tb.stop()
