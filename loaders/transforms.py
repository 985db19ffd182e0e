"""Weight-space augmentations and layer-wise standardisation, as composable item transforms.

Weight-space learning trains on augmented models (the hyper-representation papers, SANE and
the original Model Zoos loaders all do). The transforms here work on the items of every dataset
in this package, in each view (``flat``, ``layers``, ``tokens``), and move the states of one
item together: an original and its twin (weights, mask, log-alpha) are permuted by the **same**
permutation, so a pair stays a pair (an MP mask is still the global magnitude mask of the
permuted original, a VD mask still ``log_alpha < threshold``).

Two layers, both public:

* functions and small classes on flat states ``[..., P]`` (batched, for training loops):
  :class:`NeuronPermuter` (random and canonical neuron permutations as flat index maps),
  :func:`permute`, :func:`gaussian_noise`, :func:`erase_neurons`, :class:`LayerStandardization`;
* item transforms built on them (``transform=`` of a dataset, chained with :class:`Compose`):
  :class:`RandomNeuronPermutation`, :class:`CanonicalNeuronOrder`, :class:`GaussianNoise`,
  :class:`RandomErasing`, :class:`Standardize`. Each takes the store's ``ParameterLayout`` and
  the dataset's view; it reads a state back to flat (the view's exact inverse), works there, and
  views it again.

**Pruned entries stay pruned.** A masked twin holds exact zeros where its mask prunes; every
transform keeps them exact zeros, in any order and in every view (standardisation maps them to 0
and back to 0, noise leaves them, permutations move them with the mask, erasing writes zeros).
The rule is per entry: an entry the item's ``mask`` prunes **and** that holds an exact zero is a
pruned zero (:func:`pruned_zeros`). A dense twin (``apply_mask=False``) holds its trained values
there, and the original has no mask: their entries are transformed like any other.

Randomness comes from ``generator`` when given, else torch's global RNG, which a ``DataLoader``
seeds differently in each worker (a generator passed here is copied into every worker as is, so
workers would draw the same augmentations: leave it ``None`` with ``num_workers > 0``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo_dataset.errors import StoreError, ZooSpecError
from zoo_dataset.inputs import parse_json, read_regular
from zoo_dataset.layout import ParameterLayout
from zoo_dataset.store.files import atomic_write_text

from .views import make_view

Item = dict[str, Any]
ELEMENTWISE_VIEWS = ("flat", "layers", "tokens")  # views the transforms work in directly; others via flat

STATE_KEYS = ("original", "twin", "mask", "log_alpha")  # every state an item may hold
WEIGHT_KEYS = ("original", "twin")  # states holding weights (noise, erasing, weight statistics)
KINDS = ("weights", "log_alpha")  # what a LayerStandardization holds statistics of
# the smallest layer std a LayerStandardization serves: standardised weights stay finite (below
# 1e12 * |x - mean|) in float32; a fitted layer with less spread is constant and keeps its scale
MIN_STD = 1e-12


def pruned_zeros(state: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Bool, ``state``'s shape: the entries ``mask`` prunes (False) that ``state`` holds as exact
    zeros, i.e. a masked twin's pruned weights: the entries every transform keeps exact zeros."""
    return ~mask & (state == 0)


# ---------------------------------------------------------------------------- permutations
class NeuronPermuter:
    """Permutations of the hidden neurons of one layout, as flat index maps.

    A hidden neuron is an output unit of every parametrised layer but the last: a conv channel
    (its filter and bias; the next conv's input channel; for the last conv, its block of the
    flatten into the first linear layer) or a hidden linear unit. Permuting a layer's neurons and
    the next layer's input blocks the same way leaves the function unchanged (activations, max
    pooling and dropout act per channel). An index map ``index`` of shape ``[*batch, P]`` is
    applied as ``flat[..., index]`` (:func:`permute`): position ``p`` of the result holds
    ``flat[index[p]]``.
    """

    def __init__(self, layout: ParameterLayout):
        self.layout = layout
        self._layers = []  # per layer: (weight entry, bias entry, inputs, block)
        previous = None
        for layer in layout.layers:
            w, b = layout.by_name[f"{layer}.weight"], layout.by_name[f"{layer}.bias"]
            outputs, fan_in = w.shape[0], w.size // w.shape[0]
            inputs = w.shape[1] if previous is None else previous
            if fan_in % inputs:
                raise ZooSpecError(
                    f"layer {layer} has {fan_in} inputs per neuron, not a multiple of the {inputs} "
                    "neurons before it: its neurons cannot be permuted"
                )
            self._layers.append((w, b, inputs, fan_in // inputs))
            previous = outputs
        self._grids = [  # per layer: the flat positions of its weights as [outputs, inputs, block], of its biases
            (np.arange(w.offset, w.offset + w.size).reshape(w.shape[0], inputs, block),
             np.arange(b.offset, b.offset + b.size))
            for w, b, inputs, block in self._layers
        ]
        entries = [e for w, b, _, _ in self._layers for e in (w, b)]
        if [e.name for e in entries] != [e.name for e in layout.entries] or any(
            e.offset != sum(x.size for x in entries[:i]) for i, e in enumerate(entries)
        ):
            raise ZooSpecError("the layout is not contiguous weight, bias per layer: cannot permute it")

    @property
    def hidden_sizes(self) -> list[int]:
        """Neurons of each permutable (hidden) layer, in forward order."""
        return [w.shape[0] for w, _, _, _ in self._layers[:-1]]

    def from_orders(self, orders: Sequence[torch.Tensor]) -> torch.Tensor:
        """The flat index map of one neuron order per hidden layer (each ``[*batch, n_l]``).

        ``orders[l][..., i]`` is the old position of the neuron the result holds at position ``i``.
        """
        if len(orders) != len(self.hidden_sizes):
            raise ValueError(f"need {len(self.hidden_sizes)} neuron orders, got {len(orders)}")
        orders = [o.numpy() if isinstance(o, torch.Tensor) else np.asarray(o) for o in orders]
        batch = orders[0].shape[:-1] if orders else ()
        if not batch:  # one permutation: gather each layer's index grid by rows and input blocks
            parts = []
            for number, (grid, bias) in enumerate(self._grids):
                rows = orders[number] if number < len(orders) else slice(None)
                cols = orders[number - 1] if number > 0 else slice(None)
                parts += [grid[rows][:, cols].ravel(), bias[rows]]
            return torch.from_numpy(np.concatenate(parts))
        parts = []
        for number, (w, b, inputs, block) in enumerate(self._layers):
            outputs = w.shape[0]
            rows = orders[number] if number < len(orders) else np.arange(outputs)  # broadcast over the batch
            cols = orders[number - 1] if number > 0 else np.arange(inputs)
            weights = (
                w.offset
                + rows[..., :, None, None] * (inputs * block)
                + cols[..., None, :, None] * block
                + np.arange(block)
            )
            weights = np.broadcast_to(weights, (*batch, *weights.shape[-3:]))
            parts += [weights.reshape(*batch, -1), np.broadcast_to(b.offset + rows, (*batch, outputs))]
        return torch.from_numpy(np.concatenate(parts, axis=-1).astype(np.int64, copy=False))

    def identity(self) -> torch.Tensor:
        return torch.arange(self.layout.num_params)

    def random(self, batch_shape: Sequence[int] = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniformly random neuron permutations, one per batch entry: ``[*batch_shape, P]``."""
        if not batch_shape:  # one randperm per layer: the per-item path, kept short
            return self.from_orders([torch.randperm(n, generator=generator) for n in self.hidden_sizes])
        orders = [
            torch.argsort(torch.rand(*batch_shape, n, generator=generator), dim=-1) for n in self.hidden_sizes
        ]
        return self.from_orders(orders)

    def canonical(self, flat: torch.Tensor) -> torch.Tensor:
        """The canonical index map ``[P]`` of one state ``[P]``: a deterministic neuron order.

        Layer by layer, after the previous layer's order is applied to its input blocks, neurons
        are sorted by the squared L2 norm of their incoming weights and bias (largest first), ties
        broken by those values themselves, then by the sorted values of their outgoing weights.
        Every input permutation of a state gives the same canonical form, exactly: the keys of a
        neuron are computed from the same numbers in the same order whatever the input order.
        """
        if flat.dim() != 1 or flat.shape[0] != self.layout.num_params:
            raise ValueError(f"canonical() takes one flat state [{self.layout.num_params}], got {tuple(flat.shape)}")
        values = flat.detach().cpu().double()
        orders: list[torch.Tensor] = []
        for number, (w, b, inputs, block) in enumerate(self._layers[:-1]):
            outputs = w.shape[0]
            incoming = values[w.slice].view(outputs, inputs, block)
            if orders:
                incoming = incoming[:, orders[-1]]
            features = torch.cat([incoming.reshape(outputs, -1), values[b.slice][:, None]], dim=1)
            nxt, _, _, next_block = self._layers[number + 1]
            outgoing = values[nxt.slice].view(nxt.shape[0], outputs, next_block).transpose(0, 1)
            fingerprint = outgoing.reshape(outputs, -1).sort(dim=1).values  # independent of the next order
            keys = [*fingerprint.T.numpy()[::-1], *features.T.numpy()[::-1], -(features**2).sum(1).numpy()]
            orders.append(torch.from_numpy(np.lexsort(keys)))  # last key first; a stable sort
        return self.from_orders(orders)


def permute(flat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``flat[..., index]``: one index map ``[P]`` for every leading entry, or one per entry
    (``index`` of the same shape as ``flat``)."""
    if index.dim() == 1:
        return flat[..., index]
    return torch.gather(flat, -1, index)


# ---------------------------------------------------------------------------- noise and erasing
def gaussian_noise(
    flat: torch.Tensor,
    std: float = 0.05,
    relative: bool = True,
    generator: torch.Generator | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``flat`` plus Gaussian noise of ``std`` (``relative``: times each state's own weight std,
    as the hyper-representation reference does; else absolute). ``mask``: a twin's keep-mask
    (``flat``'s shape): its pruned zeros (:func:`pruned_zeros`) stay exact zeros."""
    scale = flat.float().std(dim=-1, keepdim=True) if relative else torch.tensor(1.0)
    noise = torch.randn(flat.shape, generator=generator, dtype=torch.float32)
    out = (flat + (std * scale * noise).to(flat.dtype)).to(flat.dtype)
    return out if mask is None else out.masked_fill(pruned_zeros(flat, mask), 0)


class NeuronErasing:
    """Erasing a random contiguous run of neurons (tokens, in the tokens view's order): their
    incoming weights and bias become 0, as the hyper-representation reference erases tokens."""

    def __init__(self, layout: ParameterLayout):
        tokens = make_view("tokens", layout)
        self.layout = layout
        self._rows = [row[valid] for row, valid in zip(tokens.index, tokens.valid, strict=True)]
        self.num_neurons = len(self._rows)

    def mask(self, fraction: float, batch_shape: Sequence[int] = (),
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Bool ``[*batch_shape, P]``: True where a state is erased (``round(fraction * N)`` neurons)."""
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must be in [0, 1], not {fraction}")
        length = int(round(fraction * self.num_neurons))
        starts = torch.randint(0, self.num_neurons - length + 1, tuple(batch_shape), generator=generator)
        out = torch.zeros(*batch_shape, self.layout.num_params, dtype=torch.bool)
        for position in np.ndindex(*batch_shape):
            start = int(starts[position])
            if length:
                out[position][torch.cat(self._rows[start : start + length])] = True
        return out


def erase_neurons(
    flat: torch.Tensor,
    erasing: NeuronErasing,
    fraction: float = 0.1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``flat`` with a random run of ``fraction`` of the neurons zeroed, one run per state."""
    return flat.masked_fill(erasing.mask(fraction, flat.shape[:-1], generator), 0)


# ---------------------------------------------------------------------------- standardisation
class LayerStandardization:
    """Per-layer mean and std (weights and biases of a layer together, ddof 0) of weights and of
    log-alphas, fitted on a split's states; ``standardize`` / ``inverse`` on flat ``[..., P]``.

    Computed in float64 and returned in the input's dtype: ``inverse`` is the exact inverse map,
    and ``inverse(standardize(x))`` equals ``x`` up to the rounding of that dtype (float32: at
    most ``2**-24 * (std * |standardized| + |x|)`` per entry, tested). Saved as a small JSON file
    that carries its layout (:meth:`save`, :meth:`load`, :meth:`to_dict`, :meth:`from_dict`).
    """

    def __init__(self, layout: ParameterLayout, stats: dict[str, dict[str, tuple[float, float]]]):
        unknown = set(stats) - set(KINDS)
        if unknown:
            raise ZooSpecError(f"unknown statistics {sorted(unknown)}; known: {', '.join(KINDS)}")
        for kind, layers in stats.items():
            if set(layers) != set(layout.layers):
                raise ZooSpecError(f"{kind} statistics cover layers {sorted(layers)}, the layout {layout.layers}")
            for layer, (m, s) in layers.items():
                if not (np.isfinite(m) and np.isfinite(s) and s >= MIN_STD):
                    raise ZooSpecError(
                        f"{kind} statistics of layer {layer} hold mean {m!r} and std {s!r}: need finite values "
                        f"and a std of at least {MIN_STD:g} (standardised values would overflow)"
                    )
        self.layout = layout
        self.stats = {k: {layer: (float(m), float(s)) for layer, (m, s) in v.items()} for k, v in stats.items()}
        self._broadcast: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_states(cls, layout: ParameterLayout, weights: torch.Tensor | np.ndarray,
                    log_alpha: torch.Tensor | np.ndarray | None = None) -> LayerStandardization:
        """Statistics of flat states ``[N, P]`` (weights, and optionally log-alphas)."""
        accumulators = {"weights": _Moments(layout)}
        accumulators["weights"].add(weights)
        if log_alpha is not None:
            accumulators["log_alpha"] = _Moments(layout)
            accumulators["log_alpha"].add(log_alpha)
        return cls(layout, {k: a.result() for k, a in accumulators.items()})

    @classmethod
    def fit(
        cls,
        zoo: Any,
        split: str | None = "train",
        populations: Sequence[str] = ("original",),
        root: str | Path | None = None,
        models: Iterable[int] | None = None,
    ) -> LayerStandardization:
        """Fit on every recorded state (all epochs and levels) of the ``split`` models, or of the
        models listed in ``models`` (e.g. the training models of a fold; all in ``split``, or pass
        ``split=None``).

        ``zoo``: a zoo name or store path (found under ``root``) or an open ``ZooStore``.
        Weight statistics come from the ``populations`` listed (default the originals: the
        parameter space every population shares); log-alpha statistics from every listed or
        stored population that records log-alphas (VD).
        """
        from zoo_dataset.store import ZooStore

        from .resolve import open_store
        from .splits import models_of_split

        store = zoo if isinstance(zoo, ZooStore) else open_store(zoo, root)
        asked = models is not None
        models = models_of_split(store, split, models)
        weights, log_alpha = _Moments(store.layout), _Moments(store.layout)
        alpha_populations = [p for p in store.populations if "log_alpha" in store.population(p).arrays]
        for population in dict.fromkeys([*populations, *alpha_populations]):
            info = store.population(population)
            packed = {m for s in info.shards for m in s.model_ids}
            for model_id in (m for m in models if m in packed):
                for level_index in range(len(info.levels)):
                    if population in populations:
                        weights.add(store.read(population, "weights", model_id, level_index, slice(None)))
                    if "log_alpha" in info.arrays:
                        log_alpha.add(store.read(population, "log_alpha", model_id, level_index, slice(None)))
        if not weights.count:
            raise StoreError(f"split {split!r} of {store.zoo_dir} has no states of {', '.join(populations)}"
                             + (" among the models asked for" if asked else ""))
        stats = {"weights": weights.result()}
        if log_alpha.count:
            stats["log_alpha"] = log_alpha.result()
        return cls(store.layout, stats)

    def mean_std(self, kind: str = "weights") -> tuple[torch.Tensor, torch.Tensor]:
        """Per-parameter mean and std ``[P]`` (float64): each layer's statistics broadcast to its entries."""
        if kind not in self.stats:
            raise KeyError(f"no {kind} statistics (fitted: {', '.join(self.stats)})")
        if kind not in self._broadcast:
            mean, std = torch.zeros(self.layout.num_params, dtype=torch.float64), torch.ones(
                self.layout.num_params, dtype=torch.float64
            )
            for entry in self.layout.entries:
                mean[entry.slice], std[entry.slice] = self.stats[kind][entry.layer]
            self._broadcast[kind] = (mean, std)
        return self._broadcast[kind]

    def standardize(self, flat: torch.Tensor, kind: str = "weights", mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(flat - mean) / std`` per layer; ``mask``: a twin's keep-mask, whose pruned zeros
        (:func:`pruned_zeros`) stay exact zeros."""
        mean, std = self.mean_std(kind)
        return _keep_pruned(flat, ((flat.double() - mean) / std).to(flat.dtype), mask)

    def inverse(self, flat: torch.Tensor, kind: str = "weights", mask: torch.Tensor | None = None) -> torch.Tensor:
        """``flat * std + mean`` per layer, the inverse of :meth:`standardize` (the same ``mask``)."""
        mean, std = self.mean_std(kind)
        return _keep_pruned(flat, (flat.double() * std + mean).to(flat.dtype), mask)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layout": self.layout.to_dict(),
            "stats": {k: {layer: {"mean": m, "std": s} for layer, (m, s) in v.items()} for k, v in self.stats.items()},
        }

    MAX_FILE_BYTES = 16 << 20  # a layout and two numbers per layer and kind: kilobytes

    @classmethod
    def from_dict(cls, data: Any, layout: ParameterLayout | None = None) -> LayerStandardization:
        """Statistics as :meth:`to_dict` wrote them, every part checked before use (one ZooSpecError
        line): an object of ``layout`` and ``stats``; a layout that tiles its vector and, when
        ``layout`` is given (the store's the statistics will standardise), is that layout; per kind
        and layer an object of a mean and a std that are finite real numbers."""
        if not isinstance(data, dict) or set(data) != {"layout", "stats"}:
            raise ZooSpecError("not a layer standardization (an object of layout and stats)")
        try:
            saved = ParameterLayout.from_dict(data["layout"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ZooSpecError(f"not a layer standardization: its layout is refused ({exc})") from None
        if layout is not None and saved != layout:
            raise ZooSpecError(f"these layer statistics are of another parameter layout ({saved!r}), not of "
                               f"{layout!r}")
        if not isinstance(data["stats"], dict) or not all(isinstance(v, dict) for v in data["stats"].values()):
            raise ZooSpecError("not a layer standardization: stats is not an object of kinds, each of layers")
        stats = {kind: {layer: cls._mean_std(kind, layer, value) for layer, value in layers.items()}
                 for kind, layers in data["stats"].items()}
        return cls(saved, stats)

    @staticmethod
    def _mean_std(kind: str, layer: str, value: Any) -> tuple[float, float]:
        """A saved ``{"mean": m, "std": s}`` as two finite floats; ZooSpecError otherwise."""
        pair = [value["mean"], value["std"]] if isinstance(value, dict) and set(value) == {"mean", "std"} else []
        reals = [x for x in pair if isinstance(x, int | float) and not isinstance(x, bool)]
        try:
            mean, std = (float(x) for x in reals) if len(reals) == 2 else (np.nan, np.nan)
        except OverflowError:  # an integer beyond any float
            mean = std = np.nan
        if not (np.isfinite(mean) and np.isfinite(std)):
            raise ZooSpecError(f"not a layer standardization: the {kind} statistics of {layer!r} are {value!r:.80}, "
                               "not a finite mean and std")
        return mean, std

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))  # never written through a link
        return path

    @classmethod
    def load(cls, path: str | Path, layout: ParameterLayout | None = None) -> LayerStandardization:
        """Statistics :meth:`save` wrote, from a regular file of at most ``MAX_FILE_BYTES``, checked as
        :meth:`from_dict` checks them (``layout``: the one they must be of); errors are one line."""
        what = f"cannot read layer standardization {path}"
        try:
            data = read_regular(Path(path), cls.MAX_FILE_BYTES, "layer standardization", ZooSpecError)
        except OSError as exc:
            raise ZooSpecError(f"{what}: {exc.strerror or exc}") from None
        return cls.from_dict(parse_json(data, what, ZooSpecError), layout)

    def __repr__(self) -> str:
        return f"LayerStandardization({', '.join(self.stats)}; layers={self.layout.layers})"


class _Moments:
    """Running per-layer count, sum and sum of squares (float64) of flat states."""

    def __init__(self, layout: ParameterLayout):
        self.layout = layout
        self.count = 0
        self.sums = {layer: [0, 0.0, 0.0] for layer in layout.layers}

    def add(self, flat: torch.Tensor | np.ndarray) -> None:
        values = np.asarray(flat, dtype=np.float64).reshape(-1, self.layout.num_params)
        self.count += len(values)
        for entry in self.layout.entries:
            part = values[:, entry.slice]
            acc = self.sums[entry.layer]
            acc[0] += part.size
            acc[1] += float(part.sum())
            acc[2] += float((part * part).sum())

    def result(self) -> dict[str, tuple[float, float]]:
        out = {}
        for layer, (n, total, squares) in self.sums.items():
            mean = total / n
            var = squares / n - mean * mean
            # a constant layer keeps its scale (std 1): one whose variance is within the rounding of
            # these float64 sums (~2**-46 of the mean square; a constant layer leaves that much), or
            # whose std is below MIN_STD
            constant = var <= max(MIN_STD**2, 2.0**-46 * squares / n)
            out[layer] = (mean, 1.0 if constant else float(np.sqrt(var)))
        return out


def _keep_pruned(before: torch.Tensor, after: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``after`` with ``before``'s pruned zeros under ``mask`` (if any) set back to exact zeros."""
    return after if mask is None else after.masked_fill(pruned_zeros(before, mask), 0)


# ---------------------------------------------------------------------------- item transforms
class Compose:
    """Apply item transforms in order: ``Compose([Standardize(...), RandomNeuronPermutation(...)])``."""

    def __init__(self, transforms: Iterable[Callable[[Item], Item]]):
        self.transforms = list(transforms)

    def __call__(self, item: Item) -> Item:
        for transform in self.transforms:
            item = transform(item)
        return item

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}" for t in self.transforms)
        return f"Compose({inner}\n)"


class _StateTransform:
    """Base of the item transforms: reads an item's states back to flat and views them again."""

    def __init__(self, layout: ParameterLayout, view: str, keys: Sequence[str]):
        if not isinstance(layout, ParameterLayout):
            raise TypeError(
                f"layout must be a ParameterLayout (e.g. open_store(zoo).layout), not {type(layout).__name__}"
            )
        self.layout, self.keys = layout, tuple(keys)
        self.view = make_view(view, layout)  # a view name, or a view made for this layout
        self.view_name = self.view.name
        self.num_params = layout.num_params

    def _present(self, item: Item) -> list[str]:
        return [k for k in self.keys if k in item]

    def _flat(self, item: Item, key: str) -> torch.Tensor:
        return self.view.inverse(item[key])

    def _map(self, item: Item, change: Callable[[str, torch.Tensor], torch.Tensor]) -> Item:
        """Each present state read back to flat, changed, and viewed again."""
        out = dict(item)
        for key in self._present(item):
            out[key] = self.view(change(key, self._flat(item, key)))
        return out

    def _constant(self, flat: torch.Tensor, pad: float | bool) -> Any:
        """A parameter-space constant ``[P]`` as an operand of :meth:`_elementwise` (tokens: the
        token grid, its padding ``pad``; layers: the layers dict; any other view: flat)."""
        if self.view_name not in ELEMENTWISE_VIEWS:
            return flat
        viewed = self.view(flat)
        if self.view_name == "tokens":
            return viewed["tokens"].masked_fill(~viewed["valid"], pad)
        return viewed

    def _operand(self, viewed: Any) -> Any:
        """A viewed state of the item (e.g. its mask) as an operand of :meth:`_elementwise`."""
        if self.view_name == "tokens":
            return viewed["tokens"]  # the padding of a mask is False, of a state 0
        return viewed if self.view_name in ELEMENTWISE_VIEWS else self.view.inverse(viewed)

    def _elementwise(self, viewed: Any, change: Callable[..., torch.Tensor], *operands: Any) -> Any:
        """``change(values, *operands)`` on a viewed state's values, entry by entry: in the view
        itself where it allows (no round trip through flat, the cost of a tokens item), else flat."""
        if self.view_name == "tokens":
            return {**viewed, "tokens": change(viewed["tokens"], *operands)}
        if self.view_name == "layers":
            return {part: [change(x, *(c[part][i] for c in operands)) for i, x in enumerate(viewed[part])]
                    for part in ("weights", "biases")}
        if self.view_name == "flat":
            return change(viewed, *operands)
        return self.view(change(self.view.inverse(viewed), *operands))

    def _permute(self, item: Item, index: torch.Tensor) -> Item:
        """Every present state permuted by the flat index map ``index`` [P]."""
        if self.view_name != "tokens":
            return self._map(item, lambda _, flat: permute(flat, index))
        if not hasattr(self, "_slot"):  # the grid slot of each parameter; the padding's: any padding slot (a 0)
            padding = np.flatnonzero(~self.view.valid.numpy().ravel())
            self._slot = np.append(self.view._slot.numpy(), padding[0] if len(padding) else 0)
            self._grid_index = self.view.index.numpy().ravel()
        source = torch.from_numpy(self._slot[np.append(index.numpy(), self.num_params)[self._grid_index]])
        out = dict(item)
        for key in self._present(item):
            values = item[key]["tokens"]
            grid = values.reshape(*values.shape[:-2], -1)
            out[key] = {**item[key], "tokens": grid.index_select(-1, source).reshape(values.shape)}
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(view={self.view_name!r}, keys={list(self.keys)})"


class RandomNeuronPermutation(_StateTransform):
    """One random neuron permutation per item, applied to every state it holds (original, twin,
    mask, log-alpha; every epoch of a trajectory): the models compute what they computed."""

    def __init__(self, layout: ParameterLayout, view: str = "flat", keys: Sequence[str] = STATE_KEYS,
                 generator: torch.Generator | None = None):
        super().__init__(layout, view, keys)
        self.permuter, self.generator = NeuronPermuter(layout), generator

    def __call__(self, item: Item) -> Item:
        return self._permute(item, self.permuter.random(generator=self.generator))


class CanonicalNeuronOrder(_StateTransform):
    """Every state of an item put in the canonical neuron order of its ``reference`` state
    (:meth:`NeuronPermuter.canonical`; default the original; where the reference holds several
    epochs, its last). Any neuron permutation of the input gives the same item."""

    def __init__(self, layout: ParameterLayout, view: str = "flat", keys: Sequence[str] = STATE_KEYS,
                 reference: str = "original"):
        super().__init__(layout, view, keys)
        self.permuter, self.reference = NeuronPermuter(layout), reference

    def __call__(self, item: Item) -> Item:
        if self.reference not in item:
            raise KeyError(f"CanonicalNeuronOrder: the item has no {self.reference!r} state (reference=)")
        reference = self._flat(item, self.reference)
        return self._permute(item, self.permuter.canonical(reference.reshape(-1, reference.shape[-1])[-1]))


class GaussianNoise(_StateTransform):
    """Gaussian noise on weight states (:func:`gaussian_noise`; the reference's 5 % of each state's
    weight std by default). ``keep_pruned``: a twin's pruned zeros (:func:`pruned_zeros`: pruned by
    its mask and exact zeros, in whatever space the item is, standardised included) stay exact
    zeros; a dense twin (``apply_mask=False``) and the original get noise everywhere."""

    def __init__(self, layout: ParameterLayout, view: str = "flat", std: float = 0.05, relative: bool = True,
                 keys: Sequence[str] = WEIGHT_KEYS, keep_pruned: bool = True,
                 generator: torch.Generator | None = None):
        super().__init__(layout, view, keys)
        self.std, self.relative, self.keep_pruned, self.generator = std, relative, keep_pruned, generator

    def __call__(self, item: Item) -> Item:
        mask = self._flat(item, "mask") if self.keep_pruned and "mask" in item else None

        def noisy(key: str, flat: torch.Tensor) -> torch.Tensor:
            return gaussian_noise(flat, self.std, self.relative, self.generator, mask if key == "twin" else None)

        return self._map(item, noisy)


class RandomErasing(_StateTransform):
    """Erase one random run of ``fraction`` of the neurons (the reference's 10 % of the tokens) in
    every weight state of an item (the same run for each; :class:`NeuronErasing`)."""

    def __init__(self, layout: ParameterLayout, view: str = "flat", fraction: float = 0.1,
                 keys: Sequence[str] = WEIGHT_KEYS, generator: torch.Generator | None = None):
        super().__init__(layout, view, keys)
        self.erasing, self.fraction, self.generator = NeuronErasing(layout), fraction, generator

    def __call__(self, item: Item) -> Item:
        erased = self._constant(self.erasing.mask(self.fraction, generator=self.generator), False)
        out = dict(item)
        for key in self._present(item):
            out[key] = self._elementwise(item[key], lambda x, e: x.masked_fill(e, 0), erased)
        return out


class Standardize(_StateTransform):
    """Layer-wise standardisation of an item's weight states (``original``, ``twin``) with the
    weight statistics and of ``log_alpha`` with the log-alpha statistics (left as is when none
    were fitted). Masks are untouched, and a twin's pruned zeros (:func:`pruned_zeros`) stay exact
    zeros both ways. :meth:`inverse` undoes it."""

    def __init__(self, stats: LayerStandardization, view: str = "flat",
                 keys: Sequence[str] = (*WEIGHT_KEYS, "log_alpha")):
        super().__init__(stats.layout, view, keys)
        self.stats = stats
        self._viewed = {  # mean and std in this view (tokens: padding 0 and 1, which leave it 0)
            kind: (self._constant(mean, 0.0), self._constant(std, 1.0))
            for kind, (mean, std) in ((k, stats.mean_std(k)) for k in stats.stats)
        }

    def _kind(self, key: str) -> str | None:
        kind = "log_alpha" if key == "log_alpha" else "weights"
        return kind if kind in self.stats.stats else None

    def _present(self, item: Item) -> list[str]:
        return [k for k in super()._present(item) if self._kind(k) is not None]

    def _apply(self, item: Item, change: Callable[..., torch.Tensor]) -> Item:
        out = dict(item)
        mask = self._operand(item["mask"]) if "mask" in item else None

        def keeping_pruned(x: torch.Tensor, mean: Any, std: Any, twin_mask: torch.Tensor) -> torch.Tensor:
            return _keep_pruned(x, change(x, mean, std), twin_mask)

        for key in self._present(item):
            mean, std = self._viewed[self._kind(key)]
            if key == "twin" and mask is not None:
                out[key] = self._elementwise(item[key], keeping_pruned, mean, std, mask)
            else:
                out[key] = self._elementwise(item[key], change, mean, std)
        return out

    def __call__(self, item: Item) -> Item:
        return self._apply(item, lambda x, mean, std: ((x.double() - mean) / std).to(x.dtype))

    def inverse(self, item: Item) -> Item:
        return self._apply(item, lambda x, mean, std: (x.double() * std + mean).to(x.dtype))
