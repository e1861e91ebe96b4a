"""The CNNs of seed 000 §5.1 and flat float32 views of their parameters.

- ``mnist`` / ``fashion-mnist``: two 5x5 convolutions (32, 64 channels, each followed by 2x2 max
  pooling) and two fully connected layers (512 hidden), ReLU: the CNN of McMahan et al. that FL
  papers usually mean by "two conv + two FC" (1,663,370 parameters).
- ``cifar10`` / ``cifar100``: VGG-style, two blocks of two 3x3 convolutions (32 then 64 channels)
  with 2x2 max pooling after each block, then two fully connected layers (512 hidden), ReLU.
- ``digits`` (scikit-learn 8x8): the MNIST layout scaled down (3x3 convolutions with 16 and 32
  channels, one pooling, 64 hidden units) so a CPU trains it in seconds.

A user's model plug-in (``model="pkg.module:factory"``, docs/plugins.md) replaces the built-in
architecture: ``factory(input_shape, num_classes)`` is called with torch's RNG seeded by the
genesis seed, and its result is checked (a module with float parameters whose forward pass maps
a batch of ``input_shape`` samples to ``num_classes`` logits).

None of the built-ins has buffers (no batch norm, no dropout), so a model is exactly its
parameter vector and train/eval mode changes nothing. ``get_flat`` / ``set_flat`` move between a
model and one float32 vector in ``state_dict`` order (a plug-in's floating buffers included);
that vector is what the codec and the aggregation rules handle.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from dualchain.learning.plugins import PluginError, call, load_object

# Dataset name -> (architecture, input (C, H, W)).
_ARCHITECTURES: dict[str, tuple[str, tuple[int, int, int]]] = {
    "digits": ("digits", (1, 8, 8)),
    "mnist": ("mnist", (1, 28, 28)),
    "fashion-mnist": ("mnist", (1, 28, 28)),
    "cifar10": ("vgg", (3, 32, 32)),
    "cifar100": ("vgg", (3, 32, 32)),
}


def _digits_net(num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 8x8 -> 4x4
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


def _mnist_net(num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 28 -> 14
        nn.Conv2d(32, 64, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 14 -> 7
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 512),
        nn.ReLU(),
        nn.Linear(512, num_classes),
    )


def _vgg_net(num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 32 -> 16
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 16 -> 8
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, 512),
        nn.ReLU(),
        nn.Linear(512, num_classes),
    )


_BUILDERS = {"digits": _digits_net, "mnist": _mnist_net, "vgg": _vgg_net}


def input_shape(dataset_name: str) -> tuple[int, int, int]:
    """The (C, H, W) input the model for ``dataset_name`` expects."""
    return _lookup(dataset_name)[1]


def _lookup(dataset_name: str) -> tuple[str, tuple[int, int, int]]:
    try:
        return _ARCHITECTURES[dataset_name]
    except KeyError:
        known = ", ".join(_ARCHITECTURES)
        raise ValueError(f"no model for dataset {dataset_name!r}; known: {known}") from None


def build_model(dataset_name: str, num_classes: int, seed: int, *, model: str = "",
                input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """A freshly initialised float32 model; the same seed gives bitwise-identical parameters.

    Weights are He-normal (fan-in, ReLU gain) drawn from a private generator seeded with ``seed``,
    biases are zero, and the global torch RNG is left exactly as it was. With ``model`` (a
    plug-in path) the user's factory builds it instead, for samples of ``input_shape``; a bad
    plug-in raises ``plugins.PluginError``.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if model:
        if input_shape is None:
            raise ValueError("a model plug-in needs the dataset's input_shape")
        return _plugin_model(model, tuple(input_shape), num_classes, seed)
    arch, _ = _lookup(dataset_name)
    # Construction runs torch's own init on the global RNG; fork it so callers see no side effect.
    with torch.random.fork_rng(devices=[]):
        model = _BUILDERS[arch](num_classes)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                _init_layer(module, gen)
    return model.float()


def _plugin_model(spec: str, input_shape: tuple[int, ...], num_classes: int,
                  seed: int) -> nn.Module:
    factory = load_object(spec, "model")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        built = call(spec, "model", factory, input_shape, num_classes)
    if not isinstance(built, nn.Module):
        raise PluginError(f"model {spec!r} returned a {type(built).__name__}, not a "
                          "torch.nn.Module")
    try:
        built = built.float()
        state = _float_state(built)
    except ValueError as exc:
        raise PluginError(f"model {spec!r}: {exc}") from None
    if not state:
        raise PluginError(f"model {spec!r} has no parameters to train")
    mode = built.training
    built.eval()
    with torch.no_grad():
        out = call(spec, "model", built, torch.zeros((2, *input_shape)))
    built.train(mode)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise PluginError(f"model {spec!r}: a batch of 2 samples of shape {input_shape} gave "
                          f"{shape}, expected logits of shape (2, {num_classes})")
    return built


def _init_layer(layer: nn.Conv2d | nn.Linear, gen: torch.Generator) -> None:
    # He (Kaiming-normal, fan-in) weights suit ReLU nets: with torch's default (Kaiming-uniform,
    # a=sqrt(5), about 1/sqrt(3) of He's scale) plain SGD at lr 0.01 idles for many epochs first.
    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu", generator=gen)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def param_shapes(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every state entry, in the order ``get_flat`` lays them out."""
    return [(name, tuple(t.shape)) for name, t in _float_state(model).items()]


def param_count(model: nn.Module) -> int:
    return sum(math.prod(shape) for _, shape in param_shapes(model))


def get_flat(model: nn.Module) -> np.ndarray:
    """All parameters (and floating buffers, if any) as one float32 vector in state_dict order."""
    tensors = [t.detach().reshape(-1).to(torch.float32) for t in _float_state(model).values()]
    if not tensors:
        return np.empty(0, dtype=np.float32)
    return torch.cat(tensors).cpu().numpy().astype(np.float32, copy=False)


def set_flat(model: nn.Module, flat: np.ndarray) -> None:
    """Load a vector produced by ``get_flat`` (for a model of the same architecture)."""
    if not isinstance(flat, np.ndarray) or flat.ndim != 1 or flat.dtype != np.float32:
        raise ValueError("set_flat needs a 1-D float32 numpy array")
    state = _float_state(model)
    total = sum(t.numel() for t in state.values())
    if flat.size != total:
        raise ValueError(f"flat vector has {flat.size} values, the model has {total}")
    source = torch.from_numpy(np.ascontiguousarray(flat))
    offset = 0
    with torch.no_grad():
        for t in state.values():
            n = t.numel()
            t.copy_(source[offset : offset + n].view_as(t))
            offset += n


def _float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    # keep_vars: the live tensors, so set_flat writes into the model rather than into copies.
    state = model.state_dict(keep_vars=True)
    for name, t in state.items():
        if not t.is_floating_point():
            raise ValueError(f"state entry {name} is {t.dtype}; only floating point is supported")
    return state
