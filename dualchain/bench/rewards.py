"""`dualchain bench paper --experiment rewards` (seed 002 Fig. 9): who the reward lists pay.

**The matrix, in process.** Federated training of digits clients in synchronous rounds with the
project's own parts: real torch training, the client attacks of ``adversary.client``, and per
round the very functions a committee replica runs on a pool: ``learning.incentive`` (theta and
the reward list, with the chain's default clustering ``contribution.ROBUST_PARAMS``) and the fair
rule (``learning.fair``, seed 002 eq. II.4) for the new model. No processes: 2 settings x rounds
aggregations would be as many testbeds.

- Clients: 20% free riders (upload N(0, 1e-3^2) noise, no training), 20% malicious (train, then
  upload the sign-flipped delta), the rest honest. Data shares are unequal on purpose: honest
  client h holds a share proportional to h + 1, every free rider and malicious client the mean
  honest share. Each client trains ``STEPS`` SGD steps of 32 samples per round whatever its
  data, as a testbed task has a fixed number of batches: more data, less overfitting of the
  same steps. (With one local epoch each instead, the small clients' one or two steps pointed
  closer to the mean than the large clients' many: rewards ranked against data share.)
- ``iid``: each client's samples drawn uniformly; ``non_iid``: its label mix drawn from a
  Dirichlet(0.5) over the 10 digits (same sizes).
- **Detection rate** per aggregation: the fraction of the free riders' and malicious clients'
  updates that the clustering puts outside the anchor's cluster (seed 002's "low contribution");
  the JSON has its mean over the aggregations and the per-round curve, and the honest updates
  flagged (false positives). ``detection_rate`` is the chain's default clustering (the one the
  rewards use, ``ROBUST_PARAMS``); ``cosine_detection_rate`` seed 002's own (cosine distance to
  the mean, eps 0.5), measured on the same pools.
- **Reward share**: each class's part of all micro-units paid (the base per round), over both
  settings (and per setting); each client's cumulative reward per round.
- **Ranking with data share**: Spearman's rank correlation between the honest clients' data
  shares and their total rewards, per setting, under the reward weight ``dualchain up`` writes
  (``theta_samples``: theta_i times the samples the update declares, here the client's data
  size) and, from the same pools, under theta alone (``spearman_honest_theta_only``).

**Replicas agree, live.** A real testbed (``dualchain up``: 3 server nodes, so 3 CTBC replicas,
8 clients of which one free rider and one sign-flipping, ``--reward-base``, ``--aggregation
fair``) runs until ``live_versions`` versions are committed; then every replica's
``GetBalances`` is read at one height (``deploy.balances``). ``replicas_agree``: every replica
answers the same balances and they sum to a multiple of the base, at most versions x base (a
version whose pool could not be judged pays nothing).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dualchain.adversary.client import AttackContext, attack_rng, make_client_attack
from dualchain.learning.aggregation import Update
from dualchain.learning.contribution import ROBUST_PARAMS, ClusterParams, identify_contributions
from dualchain.learning.fair import aggregate_fair
from dualchain.learning.incentive import pool_incentives

Progress = Callable[[str], None]
BASE = 1_000_000  # micro-units per version
BATCH = 32
WEIGHT = "theta_samples"  # the reward weight `dualchain up` writes (learning.incentive)
STEPS = 10  # SGD steps per client and round, whatever its data: a testbed task's fixed batches
LR = 0.05
ROLES = ("honest", "free_rider", "malicious")
ATTACK = {"free_rider": {"kind": "free_rider", "mode": "random", "std": 1e-3},
          "malicious": {"kind": "sign_flip"}}


def roles(clients: int) -> list[str]:
    """20% free riders and 20% malicious (at least one each), the rest honest, honest first."""
    bad = max(1, round(0.2 * clients))
    if clients < 2 * bad + 2:
        raise ValueError(f"rewards needs at least {2 * bad + 2} clients, got {clients}")
    return ["honest"] * (clients - 2 * bad) + ["free_rider"] * bad + ["malicious"] * bad


def sizes(role_of: list[str], total: int) -> list[int]:
    """Samples per client: honest h gets a share proportional to h + 1, the others the mean."""
    honest = sum(r == "honest" for r in role_of)
    weights = [float(i + 1) if r == "honest" else (honest + 1) / 2
               for i, r in enumerate(role_of)]
    scale = total / sum(weights)
    return [max(BATCH, int(w * scale)) for w in weights]


def split(labels: np.ndarray, counts: list[int], scheme: str, seed: int) -> list[np.ndarray]:
    """Disjoint index sets of the given sizes: uniform (iid) or Dirichlet(0.5) label mixes."""
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        order = rng.permutation(labels.size)
        ends = np.cumsum(counts)
        return [np.sort(order[e - n:e]) for n, e in zip(counts, ends, strict=True)]
    classes = np.unique(labels)
    pools = {int(k): list(rng.permutation(np.flatnonzero(labels == k))) for k in classes}
    parts = []
    for n in counts:
        want = np.floor(rng.dirichlet([0.5] * classes.size) * n).astype(int)
        take: list[int] = []
        for k, w in zip(classes, want, strict=True):
            take += [pools[int(k)].pop() for _ in range(min(int(w), len(pools[int(k)])))]
        while len(take) < n:  # short pools: fill from the largest left
            take.append(pools[max(pools, key=lambda k: len(pools[k]))].pop())
        parts.append(np.sort(np.array(take)))
    return parts


def _key(c: int) -> bytes:
    return hashlib.sha256(b"bench-rewards-client" + c.to_bytes(4, "big")).digest()


def spearman(x: list[float], y: list[float]) -> float | None:
    from scipy.stats import spearmanr

    if len(set(x)) < 2 or len(set(y)) < 2:
        return None  # no ranking to correlate
    rho = spearmanr(x, y).statistic
    return None if rho is None or math.isnan(rho) else round(float(rho), 4)


def run_setting(scheme: str, role_of: list[str], rounds: int, seed: int,
                progress: Progress) -> dict[str, Any]:
    """One federated run: per round the detection, the reward list and the fair aggregate."""
    from dualchain.learning.datasets import load_dataset
    from dualchain.learning.models import build_model, get_flat, set_flat
    from dualchain.learning.training import evaluate, train_local

    data = load_dataset("digits", seed=seed)
    counts = sizes(role_of, int(0.9 * data.train_y.size))
    parts = split(data.train_y, counts, scheme, seed)
    model = build_model("digits", data.num_classes, seed=0)
    params = get_flat(model)
    honest_attack = make_client_attack({"kind": "none"})
    attack = {r: make_client_attack(a) for r, a in ATTACK.items()}
    paid = [0] * len(role_of)
    paid_theta = [0] * len(role_of)  # the same pools paid by theta alone (seed 002 as written)
    cumulative: list[list[int]] = [[] for _ in role_of]
    detection: list[float] = []
    false_positives: list[float] = []
    cosine_detection: list[float] = []  # seed 002's own setting: cosine distance to the mean
    cosine_fp: list[float] = []
    for version in range(rounds):
        pool = []
        for c, role in enumerate(role_of):
            act = attack.get(role, honest_attack)
            ctx = AttackContext(version, params.size, attack_rng(seed, version, _key(c)))
            delta = None
            if not act.skips_training(version):
                set_flat(model, params.copy())
                idx = parts[c]
                train_local(model, data.train_x[idx], data.train_y[idx],
                            batches=STEPS, batch_size=BATCH, lr=LR,
                            seed=seed * 100_003 + version * 101 + c)
                delta = (get_flat(model) - params).astype(np.float32)
            delta = act.transform(delta, ctx)
            pool.append(Update(_key(c), version, int(parts[c].size), delta))
        bad = [_key(c) for c, r in enumerate(role_of) if r != "honest"]
        good = [_key(c) for c, r in enumerate(role_of) if r == "honest"]
        for cluster, found, wrong in ((ROBUST_PARAMS, detection, false_positives),
                                      (ClusterParams(), cosine_detection, cosine_fp)):
            flags = identify_contributions(pool, cluster)
            low = {k for k, high in zip(flags.client_ids, flags.high, strict=True) if not high}
            found.append(sum(k in low for k in bad) / len(bad))
            wrong.append(sum(k in low for k in good) / len(good))
        client_of = {_key(c): _key(c) for c in range(len(role_of))}
        theta, rewards = pool_incentives(pool, client_of, (), ROBUST_PARAMS, BASE, WEIGHT)
        _, by_theta = pool_incentives(pool, client_of, (), ROBUST_PARAMS, BASE, "theta")
        amounts, theta_amounts = dict(rewards or ()), dict(by_theta or ())
        for c in range(len(role_of)):
            paid[c] += amounts.get(_key(c), 0)
            paid_theta[c] += theta_amounts.get(_key(c), 0)
            cumulative[c].append(paid[c])
        if any(t > 0 for t in theta.values()):
            params = aggregate_fair(params, pool, version, theta).params
    set_flat(model, params.copy())
    accuracy = evaluate(model, data.test_x, data.test_y)[0]
    total = sum(paid)
    share = {r: round(sum(p for p, q in zip(paid, role_of, strict=True) if q == r) / total, 4)
             for r in ROLES}
    honest = [c for c, r in enumerate(role_of) if r == "honest"]
    rho = spearman([counts[c] for c in honest], [paid[c] for c in honest])
    rho_theta = spearman([counts[c] for c in honest], [paid_theta[c] for c in honest])
    progress(f"{scheme}: detection {np.mean(detection):.3f}, false positives "
             f"{np.mean(false_positives):.3f}, shares {share}, spearman {rho} "
             f"(theta alone {rho_theta}), "
             f"accuracy {accuracy:.3f}")
    return {"detection_rate": round(float(np.mean(detection)), 4),
            "false_positive_rate": round(float(np.mean(false_positives)), 4),
            "detection_curve": [round(d, 4) for d in detection],
            "cosine_detection_rate": round(float(np.mean(cosine_detection)), 4),
            "cosine_false_positive_rate": round(float(np.mean(cosine_fp)), 4),
            "reward_share": share, "paid": paid, "spearman_honest": rho,
            "spearman_honest_theta_only": rho_theta,
            "final_accuracy": round(accuracy, 4), "data_sizes": counts,
            "cumulative_reward": cumulative}


def live_testbed(workdir: Path, versions: int, progress: Progress) -> dict[str, Any]:
    """A real testbed with rewards on; every CTBC replica's balances at one height."""
    from dualchain.chain.identity import load_key_file
    from dualchain.deploy.balances import balances_at_one_height
    from dualchain.deploy.up import Testbed, UpConfig

    nodes, clients = 3, 8  # 6 honest: a pool is judged with 3 clients in the anchor's group
    config = UpConfig(nodes=nodes, clients=clients, miners=1, rounds=versions, batches=10,
                      workdir=str(workdir), min_updates=clients, window_s=4.0,
                      max_staleness=60, reward_base=BASE, aggregation="fair",
                      client_attacks={"6": ATTACK["free_rider"], "7": ATTACK["malicious"]})
    role_of = ["honest"] * 6 + ["free_rider", "malicious"]
    tb = Testbed(config, progress=lambda line: None)
    started = time.monotonic()
    try:
        tb.write()
        tb.start_roles()
        tb.wait_for(lambda p, e: e["event"] == "version" and e["version"] >= versions, 420.0,
                    past=True)
        height, version, balances = balances_at_one_height(
            [tb.proc(f"ctbc-{i}").address for i in range(nodes)])
    finally:
        tb.stop()
    ids = [load_key_file(workdir / "keys" / f"client-{j}.key").id for j in range(clients)]
    first = balances[0]
    total = sum(first.values())
    # A version pays its base, or nothing when its pool could not be judged (learning.incentive)
    agree = (all(b == first for b in balances[1:]) and total % BASE == 0
             and total <= version * BASE)
    share = {r: round(sum(first.get(i, 0) for i, q in zip(ids, role_of, strict=True) if q == r)
                      / total, 4) if total else None for r in ROLES}
    progress(f"live: {nodes} replicas at height {height}, version {version}: agree {agree}, "
             f"shares {share}")
    return {"replicas_agree": agree, "replicas": nodes, "height": height, "versions": version,
            "paid_versions": total // BASE,
            "reward_share": share,
            "balances": {f"client-{j}": first.get(i, 0) for j, i in enumerate(ids)},
            "seconds": round(time.monotonic() - started, 1)}


def run_rewards(out: Path, clients: int, rounds: int, live_versions: int, progress: Progress,
                seed: int = 0) -> dict[str, Any]:
    import csv
    import json

    from dualchain.deploy.up import UpError

    started = time.monotonic()
    role_of = roles(clients)
    settings = {s: run_setting(s, role_of, rounds, seed, progress) for s in ("iid", "non_iid")}
    paid = [sum(settings[s]["paid"][c] for s in settings) for c in range(clients)]
    total = sum(paid)
    share = {r: round(sum(p for p, q in zip(paid, role_of, strict=True) if q == r) / total, 4)
             for r in ROLES}
    live = None
    if live_versions:
        try:
            live = live_testbed(out / "testbed", live_versions, progress)
        except (UpError, RuntimeError) as exc:  # the matrix stands; the JSON says what failed
            live = {"replicas_agree": None, "error": str(exc)}
            progress(f"live testbed failed: {exc}")
    document = {
        "benchmark": "paper/rewards", "dataset": "digits", "clients": clients,
        "roles": role_of, "rounds": rounds, "base_micro_units": BASE,
        "reward_share": share,
        "detection_rate": {s: v["detection_rate"] for s, v in settings.items()},
        "false_positive_rate": {s: v["false_positive_rate"] for s, v in settings.items()},
        "cosine_detection_rate": {s: v["cosine_detection_rate"] for s, v in settings.items()},
        "reward_weight": WEIGHT,
        "spearman_honest": {s: v["spearman_honest"] for s, v in settings.items()},
        "spearman_honest_theta_only": {s: v["spearman_honest_theta_only"]
                                       for s, v in settings.items()},
        "bad_share_at_most_5pct": share["free_rider"] + share["malicious"] <= 0.05,
        "replicas_agree": live["replicas_agree"] if live else None,
        "settings": settings, "live": live,
        "seconds": round(time.monotonic() - started, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "rewards.json").write_text(json.dumps(document, indent=2) + "\n")
    with (out / "rewards.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["setting", "client", "role", "samples", "reward", "share"])
        for s, v in settings.items():
            for c, role in enumerate(role_of):
                writer.writerow([s, c, role, v["data_sizes"][c], v["paid"][c],
                                 round(v["paid"][c] / max(1, sum(v["paid"])), 4)])
    _plot(document, out / "rewards.png")
    return document


def _plot(document: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    colours = {"honest": "C0", "free_rider": "C1", "malicious": "C3"}
    for ax, (name, v) in zip(axes[:2], document["settings"].items(), strict=True):
        for c, role in enumerate(document["roles"]):
            ax.plot([x / 1e6 for x in v["cumulative_reward"][c]], colours[role],
                    label=role if role not in [document["roles"][k] for k in range(c)] else None)
        ax.set_title(f"{name}: cumulative reward")
        ax.set_xlabel("aggregation")
        ax.set_ylabel("reward (units)")
        ax.legend(fontsize=7)
    for name, v in document["settings"].items():
        axes[2].plot(v["detection_curve"], label=name)
    axes[2].set_title("detection rate")
    axes[2].set_xlabel("aggregation")
    axes[2].set_ylim(-0.05, 1.05)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
