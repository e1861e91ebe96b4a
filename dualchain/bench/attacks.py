"""`dualchain bench paper --experiment attacks | lazy`: attacks against defenses, in process.

Each run is a federated training of ``clients`` digits clients in synchronous rounds on this
machine, with the project's own parts: real torch training (``learning.training``) on the IID
partition, the attack strategies of ``adversary.client``, each client's PN mark when the defense
has a watermark, the same screening the committee re-runs (``learning.screening.screen``) and
FedAvg over what it keeps (or the robust rule's model). No processes and no chain: the testbed's
path is tested by ``tests/integration/test_attacks.py``; here the matrix is what counts, and one
testbed run per cell would take hours on 2 cores.

- ``attacks``: one run per (attack, defense) plus a clean run per defense; per update, the
  attackers' uploads are the positives and the defense's discards the detections
  (``adversary.metrics``). ``clean_accuracy`` is the defense's run with no attacker. The
  coordinate-wise rules choose no updates: their precision and recall are null.
- ``lazy`` (seed 004 Table I, Fig. 4): the PN detection rate and false-positive rate at 9, 6 and
  3 dB on real deltas (``watermark.detection_table``, copies hidden under noise as strong as the
  update), and the accuracy with 30% lazy clients with and without the watermark's detection.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from dualchain.adversary.client import AttackContext, attack_rng, make_client_attack
from dualchain.adversary.metrics import DetectionCounts
from dualchain.learning.aggregation import Update, fedavg
from dualchain.learning.robust import RobustRule
from dualchain.learning.screening import Candidate, Defense, screen, seed_for_key
from dualchain.learning.watermark import WatermarkParams, detection_table, embed

Progress = Callable[[str], None]
WATERMARK = WatermarkParams()
ATTACKS: dict[str, dict[str, Any]] = {
    "sign_flip": {"kind": "sign_flip"},
    "scale": {"kind": "scale", "factor": 5.0},
    "gaussian": {"kind": "gaussian", "std": 0.05, "replace": True},
    "label_flip": {"kind": "label_flip"},
    "lazy": {"kind": "lazy", "noise": 1.0},
    "free_rider": {"kind": "free_rider", "mode": "random", "std": 1e-3},
}
DEFENSE_NAMES = ("none", "pn", "cluster", "median", "trimmed_mean", "krum", "multi_krum")


def defense(name: str, attackers: int) -> Defense:
    """The defense ``name`` with Krum's f set to the number of attackers (its assumption)."""
    if name == "pn":
        return Defense(watermark=WATERMARK)
    return Defense(rule=name, robust=RobustRule(f=max(1, attackers)))


def _key(c: int) -> bytes:
    return hashlib.sha256(b"bench-client" + c.to_bytes(4, "big")).digest()


class Federation:
    """The clients' data and one model container, reused by every run."""

    def __init__(self, clients: int, seed: int = 0) -> None:
        from dualchain.learning.datasets import load_dataset
        from dualchain.learning.models import build_model, get_flat
        from dualchain.learning.partition import partition

        self.data = load_dataset("digits", seed=seed)
        self.parts = partition(self.data.train_y, clients, "iid", seed)
        self.model = build_model("digits", self.data.num_classes, seed=0)
        self.initial = get_flat(self.model)
        self.clients = clients

    def train(self, start: np.ndarray, x: np.ndarray, y: np.ndarray, batches: int, lr: float,
              seed: int) -> np.ndarray:
        from dualchain.learning.models import get_flat, set_flat
        from dualchain.learning.training import train_local

        set_flat(self.model, start.copy())
        train_local(self.model, x, y, batches=batches, seed=seed, lr=lr)
        return (get_flat(self.model) - start).astype(np.float32)

    def accuracy(self, params: np.ndarray) -> float:
        from dualchain.learning.models import set_flat
        from dualchain.learning.training import evaluate

        set_flat(self.model, params.copy())
        return evaluate(self.model, self.data.test_x, self.data.test_y)[0]


def simulate(fed: Federation, attack: Mapping[str, Any] | None, attackers: int,
             guard: Defense, rounds: int, batches: int, lr: float = 0.05,
             seed: int = 0) -> tuple[float, DetectionCounts]:
    """Final test accuracy and the per-update detection counts of one run."""
    strategy = make_client_attack(attack or {"kind": "none"})
    params = fed.initial.copy()
    counts = DetectionCounts()
    seen: list[tuple[bytes, np.ndarray]] = []  # last round's uploads: what a lazy client copies
    for version in range(rounds):
        pool, malicious, uploads = [], {}, []
        for c in range(fed.clients):
            act = strategy if c < attackers else make_client_attack({"kind": "none"})
            ctx = AttackContext(version, params.size, attack_rng(seed, version, _key(c)),
                                [s for s in seen if s[0] != _key(c)])
            if act.skips_training(version):
                delta = act.transform(None, ctx)
            else:
                idx = fed.parts[c]
                x, y = act.poison_data(fed.data.train_x[idx], fed.data.train_y[idx],
                                       fed.data.num_classes, version, ctx.rng)
                delta = act.transform(fed.train(params, x, y, batches, lr,
                                                seed * 100_003 + version * 101 + c), ctx)
            if delta is None:
                continue
            if guard.watermark is not None and np.any(delta):
                delta = embed(delta, seed_for_key(_key(c)), version, guard.watermark)
            pool.append(Candidate(_key(c), seed_for_key(_key(c)),
                                  Update(_key(c), version, 64, delta)))
            malicious[_key(c)] = c < attackers and act.kind != "none"
            uploads.append((_key(c), delta))
        seen = uploads
        if not pool:
            continue
        result = screen(pool, guard, params)
        out = {k for k, _ in result.discarded}
        counts = counts + DetectionCounts.from_decisions(
            [c.key in out for c in pool], [malicious[c.key] for c in pool])
        if result.params is not None:
            params = result.params
        elif result.kept:
            params = fedavg(params, [c.update for c in result.kept], version).params
    return fed.accuracy(params), counts


def attacks(attack_names: Sequence[str], defense_names: Sequence[str], fraction: float,
            clients: int, rounds: int, batches: int, progress: Progress,
            seed: int = 0) -> dict[str, Any]:
    fed = Federation(clients, seed)
    attackers = math.floor(fraction * clients + 1e-9)
    clean = {}
    for name in defense_names:
        clean[name], _ = simulate(fed, None, 0, defense(name, attackers), rounds, batches,
                                  seed=seed)
        progress(f"clean / {name}: accuracy {clean[name]:.3f}")
    rows = []
    for attack in attack_names:
        for name in defense_names:
            accuracy, counts = simulate(fed, ATTACKS[attack], attackers,
                                        defense(name, attackers), rounds, batches, seed=seed)
            per_update = name not in ("median", "trimmed_mean")
            rows.append({
                "attack": attack, "defense": name, "fraction": attackers / clients,
                "final_accuracy": round(accuracy, 4), "clean_accuracy": round(clean[name], 4),
                "precision": _round(counts.precision if per_update else None),
                "recall": _round(counts.recall if per_update else None),
                "false_positive_rate": _round(counts.false_positive_rate if per_update
                                              else None)})
            progress(f"{attack} / {name}: accuracy {accuracy:.3f}, {counts.as_dict()}")
    return {"rows": rows, "rounds": rounds, "clients": clients, "batches_per_task": batches}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def lazy(clients: int, rounds: int, batches: int, progress: Progress, trials: int = 200,
         seed: int = 0) -> dict[str, Any]:
    fed = Federation(clients, seed)
    start = fed.initial.copy()
    for version in range(3):  # a few rounds in, as seed 004 measures mid-training
        deltas = [fed.train(start, fed.data.train_x[p], fed.data.train_y[p], batches, 0.05,
                            version * 1000 + c) for c, p in enumerate(fed.parts)]
        start = fedavg(start, [Update(_key(c), 0, 64, d) for c, d in enumerate(deltas)],
                       0).params
    table = detection_table(deltas, (9.0, 6.0, 3.0), WATERMARK, trials=trials, seed=seed)
    points = [{"snr_db": p.snr_db, "detection_rate": p.detection_rate,
               "false_positive_rate": p.false_positive_rate} for p in table]
    progress(f"detection: {points}")
    attackers = math.floor(0.3 * clients + 1e-9)
    runs = {"clean": (None, Defense()), "lazy_undetected": (ATTACKS["lazy"], Defense()),
            "lazy_detected": (ATTACKS["lazy"], Defense(watermark=WATERMARK))}
    accuracy = {}
    for key, (attack, guard) in runs.items():
        accuracy[key], _ = simulate(fed, attack, attackers if attack else 0, guard, rounds,
                                    batches, seed=seed)
        progress(f"{key}: accuracy {accuracy[key]:.3f}")
    return {"points": points, "accuracy": {k: round(v, 4) for k, v in accuracy.items()},
            "trials": trials, "hiding_noise": 1.0, "watermark_length": WATERMARK.length,
            "lazy_fraction": attackers / clients}


def plot(name: str, result: dict[str, Any], ax: Any) -> None:
    """Final accuracy per attack and defense (``attacks``), or detection against SNR (``lazy``)."""
    if name == "lazy":
        pts = result["points"]
        ax.plot([p["snr_db"] for p in pts], [p["detection_rate"] for p in pts], "C0-o",
                label="detection")
        ax.plot([p["snr_db"] for p in pts], [p["false_positive_rate"] for p in pts], "C3-x",
                label="false positives")
        ax.set_xlabel("watermark SNR (dB)")
        ax.set_ylabel("rate")
        ax.legend(fontsize=7)
        return
    rows = result["rows"]
    attack_names = list(dict.fromkeys(r["attack"] for r in rows))
    defenses = list(dict.fromkeys(r["defense"] for r in rows))
    width = 0.8 / len(defenses)
    for k, d in enumerate(defenses):
        acc = {r["attack"]: r["final_accuracy"] for r in rows if r["defense"] == d}
        ax.bar([i + k * width for i in range(len(attack_names))],
               [acc[a] for a in attack_names], width=width, label=d)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(attack_names))], attack_names,
                  fontsize=7)
    ax.set_ylabel("final accuracy")
    ax.legend(fontsize=6, ncol=4)
