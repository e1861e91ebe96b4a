"""The server node process: client API, upload verification, aggregation, model distribution,
the chains' follower and the two-stage join.

Modules: ``config``, ``main`` (the process), ``service`` (the gRPC servicer), ``server`` (the
node's state, start-up and model store) with one mixin per job (``cmbc_follow``, ``joins``,
``ctbc_follow``, ``aggregator``, ``client_api``), ``gate`` (update checks), ``pool`` (pending
updates, when to aggregate), ``planner`` (groups and task plans from final CMBC blocks),
``uploads``, ``metrics``. A compromised aggregator is a strategy from ``dualchain.adversary.node``
named in the config (``adversary``)."""
