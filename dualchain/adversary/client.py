"""Client attacks as small strategy objects, made by name from a config dict.

``make_client_attack({"kind": "sign_flip", "from_version": 5})`` returns a frozen strategy; the
client worker asks it, for the base version ``v`` of each task:

1. ``skips_training(v)``: lazy clients, free riders and dropped-out clients do not train;
2. ``poison_data(x, y, num_classes, v, rng)``: the training set to use (label flip, backdoor);
3. ``transform(delta, ctx)``: the update to upload (``delta`` is None when training was skipped),
   or None to upload nothing.

Before ``from_version`` every strategy behaves honestly. Strategies are pure: randomness comes from
``ctx.rng`` (``attack_rng(seed, version, client_id)`` makes one), so a recorded attack replays
identically through every detector.

Kinds and parameters:

- ``none``: honest.
- ``sign_flip`` (``scale`` = 1): upload ``-scale * delta``: the update points away from the others.
- ``scale`` (``factor``): upload ``factor * delta`` (a boosted update; inside the admission norm
  bound it passes the gate).
- ``gaussian`` (``std``, ``replace`` = false): add N(0, std^2) noise to every coordinate, or
  upload the noise alone.
- ``label_flip`` (``mapping``: {source: target}, default ``y -> C - 1 - y``): data poisoning at
  training time (Tolpegin et al. 2020).
- ``backdoor`` (``target``, ``fraction`` = 0.1, ``size`` = 2, ``value`` = None): a ``size`` x
  ``size`` square in the bottom-right corner set to ``value`` (None: the largest input value of the
  client's data) is stamped on a ``fraction`` of the training samples, relabelled ``target`` (Gu et
  al. 2017, BadNets). ``attack_success_rate`` measures it on a test set.
- ``lazy`` (``noise`` = 0, ``pick`` = "random"): seed 004 §III-C: skip training, upload a copy of
  an update seen from another client (``ctx.seen``), plus Gaussian noise of ``noise`` times its
  power to hide the copy; with nothing seen, upload nothing.
- ``free_rider`` (``mode`` = "zero", ``std`` = 1e-4): skip training, upload zeros or N(0, std^2).
- ``dropout``: from ``from_version`` on, neither train nor upload (seed 000 Fig. 6's bad nodes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np


class AttackConfigError(ValueError):
    """An attack config names an unknown kind or has a bad parameter (one-line message)."""


@dataclass(frozen=True, eq=False)
class AttackContext:
    """What a strategy may use when it makes the upload of one task."""

    version: int  # base version of the task
    size: int  # number of model parameters
    rng: np.random.Generator
    seen: Sequence[tuple[bytes, np.ndarray]] = ()  # (client id, delta) of others' updates seen


def attack_rng(seed: int, version: int, client_id: bytes = b"") -> np.random.Generator:
    """A generator for one client's task: independent across seeds, versions and clients."""
    if not (0 <= seed < 1 << 63 and 0 <= version < 1 << 63):
        raise ValueError(f"attack seed and version must be in [0, 2^63), got {seed}, {version}")
    digest = hashlib.sha256(
        b"dualchain/attack" + seed.to_bytes(8, "big") + version.to_bytes(8, "big") + client_id
    ).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big"))


def _finite(name: str, value: float, *, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AttackConfigError(f"{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise AttackConfigError(f"{name} must be positive, got {value!r}")


@dataclass(frozen=True)
class ClientAttack:
    """Honest behaviour; subclasses override what their attack changes."""

    kind: ClassVar[str] = "none"
    skips: ClassVar[bool] = False  # whether the attack, once active, skips training
    from_version: int = 0

    def __post_init__(self) -> None:
        v = self.from_version
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise AttackConfigError(f"from_version must be a non-negative integer, got {v!r}")

    def active(self, version: int) -> bool:
        return version >= self.from_version

    def skips_training(self, version: int) -> bool:
        return self.skips and self.active(version)

    def poison_data(
        self, x: np.ndarray, y: np.ndarray, num_classes: int, version: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        return x, y

    def transform(self, delta: np.ndarray | None, ctx: AttackContext) -> np.ndarray | None:
        if not self.active(ctx.version):
            return delta
        return self._attack(delta, ctx)

    def _attack(self, delta: np.ndarray | None, ctx: AttackContext) -> np.ndarray | None:
        return delta


def _need(delta: np.ndarray | None, kind: str) -> np.ndarray:
    if delta is None:
        raise ValueError(f"attack {kind} transforms a trained delta; none was given")
    return delta


@dataclass(frozen=True)
class SignFlip(ClientAttack):
    kind: ClassVar[str] = "sign_flip"
    scale: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _finite("sign_flip scale", self.scale, positive=True)

    def _attack(self, delta: np.ndarray | None, ctx: AttackContext) -> np.ndarray | None:
        return (-self.scale * _need(delta, self.kind)).astype(np.float32)


@dataclass(frozen=True)
class Scale(ClientAttack):
    kind: ClassVar[str] = "scale"
    factor: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _finite("scale factor", self.factor)
        if self.factor == 0:
            raise AttackConfigError("scale factor must not be 0 (use free_rider for zero updates)")

    def _attack(self, delta: np.ndarray | None, ctx: AttackContext) -> np.ndarray | None:
        return (self.factor * _need(delta, self.kind)).astype(np.float32)


@dataclass(frozen=True)
class GaussianNoise(ClientAttack):
    kind: ClassVar[str] = "gaussian"
    std: float = 0.01
    replace: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _finite("gaussian std", self.std, positive=True)
        if not isinstance(self.replace, bool):
            raise AttackConfigError(f"gaussian replace must be true or false, got {self.replace!r}")

    def _attack(self, delta: np.ndarray | None, ctx: AttackContext) -> np.ndarray | None:
        noise = ctx.rng.normal(0.0, self.std, ctx.size)
        base = 0.0 if self.replace else _need(delta, self.kind).astype(np.float64)
        return (base + noise).astype(np.float32)


def flip_labels(
    y: np.ndarray, num_classes: int, mapping: Mapping[int, int] | None = None
) -> np.ndarray:
    """Labels with ``mapping`` applied (unmapped labels kept); default ``y -> C - 1 - y``."""
    if mapping is None:
        return (num_classes - 1 - y).astype(y.dtype)
    table = np.arange(num_classes, dtype=y.dtype)
    for src, dst in mapping.items():
        if not (0 <= src < num_classes and 0 <= dst < num_classes):
            raise AttackConfigError(f"label_flip {src} -> {dst} is outside 0..{num_classes - 1}")
        table[src] = dst
    return table[y]


@dataclass(frozen=True)
class LabelFlip(ClientAttack):
    kind: ClassVar[str] = "label_flip"
    mapping: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mapping is None:
            return
        raw: Any = self.mapping
        pairs = list(raw.items()) if isinstance(raw, Mapping) else list(raw)
        try:
            clean = tuple(sorted((_label(s), _label(d)) for s, d in pairs))
        except (TypeError, ValueError) as exc:
            raise AttackConfigError(
                f"label_flip mapping must map labels to labels: {exc}"
            ) from None
        object.__setattr__(self, "mapping", clean)

    def poison_data(
        self, x: np.ndarray, y: np.ndarray, num_classes: int, version: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        if not self.active(version):
            return x, y
        return x, flip_labels(y, num_classes, dict(self.mapping) if self.mapping else None)


def _label(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a label")
    label = int(value)  # TOML table keys arrive as strings
    if label < 0 or str(label) != str(value).strip():
        raise ValueError(f"{value!r} is not a label")
    return label


def stamp_trigger(x: np.ndarray, size: int, value: float) -> np.ndarray:
    """A copy of images ``x`` (N, C, H, W), the bottom-right ``size`` x ``size`` set to value."""
    if x.ndim != 4 or size < 1 or size > min(x.shape[2], x.shape[3]):
        raise ValueError(f"cannot stamp a {size}x{size} trigger on images of shape {x.shape}")
    out = np.array(x, copy=True)
    out[:, :, -size:, -size:] = value
    return out


@dataclass(frozen=True)
class Backdoor(ClientAttack):
    kind: ClassVar[str] = "backdoor"
    target: int = 0
    fraction: float = 0.1
    size: int = 2
    value: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.target, bool) or not isinstance(self.target, int) or self.target < 0:
            raise AttackConfigError(f"backdoor target must be a class index, got {self.target!r}")
        _finite("backdoor fraction", self.fraction, positive=True)
        if self.fraction > 1:
            raise AttackConfigError(f"backdoor fraction must be at most 1, got {self.fraction}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise AttackConfigError(f"backdoor size must be a positive integer, got {self.size!r}")
        if self.value is not None:
            _finite("backdoor value", self.value)

    def trigger_value(self, x: np.ndarray) -> float:
        return float(self.value) if self.value is not None else float(np.max(x))

    def poison_data(
        self, x: np.ndarray, y: np.ndarray, num_classes: int, version: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        if not self.active(version):
            return x, y
        if self.target >= num_classes:
            raise AttackConfigError(f"backdoor target {self.target} is not one of {num_classes}")
        count = max(1, round(self.fraction * x.shape[0]))
        chosen = np.sort(rng.choice(x.shape[0], size=count, replace=False))
        x_out, y_out = np.array(x, copy=True), np.array(y, copy=True)
        x_out[chosen] = stamp_trigger(x[chosen], self.size, self.trigger_value(x))
        y_out[chosen] = self.target
        return x_out, y_out


def attack_success_rate(
    predict: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    attack: Backdoor,
    value: float,
) -> float:
    """Share of test samples not of the target class that the model puts in the target class once
    the trigger (of ``value``, as stamped at training) is on them."""
    others = y != attack.target
    if not others.any():
        raise ValueError("no test sample outside the backdoor's target class")
    predicted = np.asarray(predict(stamp_trigger(x[others], attack.size, value)))
    return float(np.mean(predicted == attack.target))


@dataclass(frozen=True)
class Lazy(ClientAttack):
    kind: ClassVar[str] = "lazy"
    skips: ClassVar[bool] = True
    noise: float = 0.0
    pick: str = "random"

    def __post_init__(self) -> None:
        super().__post_init__()
        _finite("lazy noise", self.noise)
        if self.noise < 0:
            raise AttackConfigError(f"lazy noise must not be negative, got {self.noise}")
        if self.pick not in ("random", "latest"):
            raise AttackConfigError(f"lazy pick must be 'random' or 'latest', got {self.pick!r}")

    def _attack(self, delta: np.ndarray | None, ctx: AttackContext) -> np.ndarray | None:
        candidates = [d for _, d in ctx.seen if d.shape == (ctx.size,)]
        if not candidates:
            return None
        source = (
            candidates[-1]
            if self.pick == "latest"
            else candidates[ctx.rng.integers(len(candidates))]
        )
        copy = source.astype(np.float64)
        if self.noise > 0:
            rms = math.sqrt(float(np.mean(copy * copy)))
            copy = copy + ctx.rng.normal(0.0, math.sqrt(self.noise) * rms, ctx.size)
        return copy.astype(np.float32)


@dataclass(frozen=True)
class FreeRider(ClientAttack):
    kind: ClassVar[str] = "free_rider"
    skips: ClassVar[bool] = True
    mode: str = "zero"
    std: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in ("zero", "random"):
            raise AttackConfigError(
                f"free_rider mode must be 'zero' or 'random', got {self.mode!r}"
            )
        _finite("free_rider std", self.std, positive=True)

    def _attack(self, delta: np.ndarray | None, ctx: AttackContext) -> np.ndarray | None:
        if self.mode == "zero":
            return np.zeros(ctx.size, dtype=np.float32)
        return ctx.rng.normal(0.0, self.std, ctx.size).astype(np.float32)


@dataclass(frozen=True)
class DropOut(ClientAttack):
    kind: ClassVar[str] = "dropout"
    skips: ClassVar[bool] = True

    def _attack(self, delta: np.ndarray | None, ctx: AttackContext) -> np.ndarray | None:
        return None


CLIENT_ATTACKS: dict[str, type[ClientAttack]] = {
    cls.kind: cls
    for cls in (
        ClientAttack,
        SignFlip,
        Scale,
        GaussianNoise,
        LabelFlip,
        Backdoor,
        Lazy,
        FreeRider,
        DropOut,
    )
}


def make_from_config(config: Mapping[str, Any], registry: Mapping[str, type], what: str) -> Any:
    """Build ``registry[config["kind"]]`` from the other keys; one-line AttackConfigError if bad."""
    if not isinstance(config, Mapping):
        raise AttackConfigError(f"{what} config must be a table, got {type(config).__name__}")
    kind = config.get("kind")
    if not isinstance(kind, str) or kind not in registry:
        raise AttackConfigError(
            f"unknown {what} kind {kind!r}; known: {', '.join(sorted(registry))}"
        )
    cls = registry[kind]
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - allowed - {"kind"})
    if unknown:
        raise AttackConfigError(
            f"{what} {kind}: unknown parameter {unknown[0]!r}; known: {', '.join(sorted(allowed))}"
        )
    return cls(**{k: v for k, v in config.items() if k != "kind"})


def strategy_table(config: Mapping[str, Any], known: Sequence[str], example: str
                   ) -> dict[str, Any]:
    """A process config's ``adversary`` table (``{"strategy": NAME, ...parameters}``) as the
    ``{"kind": NAME, ...}`` dict ``make_from_config`` takes; one-line AttackConfigError if it is
    not a table or names no strategy."""
    if not isinstance(config, Mapping):
        raise AttackConfigError(f"adversary must be a table like {{\"strategy\": "
                                f"\"{example}\"}}, got {type(config).__name__}")
    if "strategy" not in config:
        raise AttackConfigError("adversary: 'strategy' is missing; known: "
                                + ", ".join(sorted(known)))
    if "kind" in config:
        raise AttackConfigError("adversary: unknown parameter 'kind'")
    return {"kind": config["strategy"], **{k: v for k, v in config.items() if k != "strategy"}}


def make_client_attack(config: Mapping[str, Any]) -> ClientAttack:
    """The client attack a config dict names, e.g. ``{"kind": "scale", "factor": 5}``."""
    return make_from_config(config, CLIENT_ATTACKS, "client attack")
