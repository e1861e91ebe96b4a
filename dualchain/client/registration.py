"""The client's registration (CLIENT_REGISTER on CMBC, then asking its node for a task until
the node has seen the registration final), sent again when it takes too long."""

from __future__ import annotations

import asyncio
import logging
import time

from dualchain.apps.cmbc.payloads import ClientRegistration
from dualchain.chain.types import TxKind
from dualchain.client.links import NotRegistered, Refused, Unreachable

log = logging.getLogger("dualchain.client")


class Registration:
    """A part of ``client.worker.ClientWorker``: its methods use the worker's state, set up
    there."""

    async def _send_registration(self) -> bytes:
        assert self._cmbc is not None
        payload = ClientRegistration(node=self.config.node_id, label=self.config.label).encode()
        backoff = self._backoff()
        while True:
            await self._sleep_online()
            try:
                return await self._cmbc.submit(TxKind.CLIENT_REGISTER, payload)
            except (Unreachable, Refused) as exc:
                log.warning("registration not accepted by CMBC %s: %s", self.config.cmbc, exc)
            await asyncio.sleep(backoff.next())

    async def register(self) -> None:
        """CLIENT_REGISTER on CMBC, then GetTask until the node knows this client."""
        assert self._node is not None
        began = time.monotonic()
        tx_hash = await self._send_registration()
        sent = time.monotonic()
        backoff = self._backoff(self.timing.register_poll_max_s)
        while True:
            await self._sleep_online()
            try:
                self._pending = await self._node.get_task()
                break
            except NotRegistered:
                log.debug("node does not know this client yet")
            except (Unreachable, Refused) as exc:
                log.info("waiting for node %s: %s", self.config.node, exc)
            if time.monotonic() - sent > self.timing.reregister_s:
                log.warning("registration still not final after %.0f s; sending it again",
                            self.timing.reregister_s)
                tx_hash = await self._send_registration()
                sent = time.monotonic()
            await asyncio.sleep(backoff.next())
        self.emit({"event": "registered", "tx": tx_hash.hex(),
                   "seconds": round(time.monotonic() - began, 3)})
