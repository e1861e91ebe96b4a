"""Pure scheduling algorithms: state vectors, clustering, join placement, DDMLTS, OLAR, baselines.

No I/O; deterministic for a given seed so every CMBC replica can re-execute them.
"""

from dualchain.scheduler.grouping import (
    Grouping,
    assign_nodes,
    cluster,
    dispersion,
    place_newcomer,
)
from dualchain.scheduler.plan import SchedulerParams, c_gmax, drifted, plan_tasks
from dualchain.scheduler.state import ClientState, StateWeights, gamma
from dualchain.scheduler.tasks import Worker, ddmlts, equal_split, makespan, olar

__all__ = [
    "ClientState",
    "Grouping",
    "SchedulerParams",
    "StateWeights",
    "Worker",
    "assign_nodes",
    "c_gmax",
    "cluster",
    "ddmlts",
    "dispersion",
    "drifted",
    "equal_split",
    "gamma",
    "makespan",
    "olar",
    "place_newcomer",
    "plan_tasks",
]
