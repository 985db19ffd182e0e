"""The Small CNN Zoo's file format (Unterthiner et al. 2020): what NFN, NFT, ScaleGMN and neural
graphs read, and what the toolkit ingests and exports.

A zoo is one folder:

* ``weights.npy``: float32 ``[rows, P]``, one flat parameter vector per checkpoint;
* ``layout.csv``: ``varname, start_idx, end_idx, shape``: the columns ``start_idx:end_idx`` of a
  row hold the Keras variable ``varname`` (``sequential/conv2d/kernel:0``, ``.../bias:0``), shaped
  ``shape`` (a Python tuple), kernels in TensorFlow order (conv ``[h, w, in, out]``, dense
  ``[in, out]``); per layer the bias comes first;
* ``metrics.csv.gz``: one row per checkpoint, in the rows' order: ``step``, ``test_accuracy``,
  ``test_loss``, ``train_accuracy``, ``train_loss``, ``modeldir`` and the ``config.*`` factors;
* optionally ``<name>_split.csv``: row indices, one per line, no header.

The public source of each fact is in docs/research/small-cnn-zoo.md. Here our flat layout
(PyTorch order, weight then bias per layer) and a row of that format are one index permutation
apart: :func:`tf_permutation`.
"""

from __future__ import annotations

import ast
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from zoo_dataset.errors import DataFormatError
from zoo_dataset.layout import LayoutEntry, ParameterLayout

WEIGHTS, LAYOUT, METRICS = "weights.npy", "layout.csv", "metrics.csv.gz"
FILES = (WEIGHTS, LAYOUT, METRICS)
SPLIT_SUFFIX = "_split.csv"  # NFN's predict_gen_data_splits/<dataset>_split.csv
LAYOUT_COLUMNS = ("varname", "start_idx", "end_idx", "shape")
# our states table's names -> the field's (train_network.py's eval_model)
METRIC_NAMES = {"test_acc": "test_accuracy", "test_loss": "test_loss", "train_acc": "train_accuracy",
                "train_loss": "train_loss"}
CONFIG = "config."
# our factors <-> the zoo's config columns (train_network.py's flags); weight decay is 2 x l2reg: Keras'
# l2(l) adds l * sum(w^2) to the loss, whose gradient 2 l w is our (coupled) weight decay
FACTOR_COLUMNS = {"seed": "config.random_seed", "activation": "config.activation",
                  "optimizer": "config.optimizer", "lr": "config.learning_rate", "dropout": "config.dropout",
                  "init": "config.w_init"}
L2REG = "config.l2reg"
VARNAME = re.compile(r"(?:.*/)?(conv2d|dense)(?:_(\d+))?/(kernel|bias):0")
KERAS_LAYER = {4: "conv2d", 2: "dense"}  # our weight's rank -> the Keras layer type
# floats read back exactly as written: pandas 3 parses so by default (and deprecates the option), pandas 2
# needs its round-trip parser
EXACT_FLOATS = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}


@dataclass(frozen=True)
class Variable:
    """One row of layout.csv: a Keras variable, where it lies in a row, and the entry of ours it is."""

    varname: str
    start: int
    end: int
    shape: tuple[int, ...]  # TensorFlow order
    entry: LayoutEntry


def tf_shape(entry: LayoutEntry) -> tuple[int, ...]:
    """TensorFlow's shape of one of our entries: conv [out, in, h, w] -> [h, w, in, out], dense
    [out, in] -> [in, out], biases as they are."""
    if entry.kind == "bias":
        return entry.shape
    if len(entry.shape) == 4:
        out, inp, h, w = entry.shape
        return (h, w, inp, out)
    out, inp = entry.shape
    return (inp, out)


def _to_torch_axes(ndim: int) -> tuple[int, ...]:
    """The transpose taking a TensorFlow-ordered array to ours (the NFN loader's, without its batch axis)."""
    return {4: (3, 2, 0, 1), 2: (1, 0), 1: (0,)}[ndim]


def keras_names(layout: ParameterLayout) -> dict[str, str]:
    """Our layer -> the name Keras gives it in a ``Sequential`` (``conv2d``, ``conv2d_1``... ``dense``):
    each layer type counts from its first, unnumbered layer."""
    counts: dict[str, int] = {}
    names = {}
    for entry in layout.weight_entries():
        kind = KERAS_LAYER[len(entry.shape)]
        n = counts.get(kind, 0)
        names[entry.layer] = f"sequential/{kind}" + (f"_{n}" if n else "")
        counts[kind] = n + 1
    return names


def tf_variables(layout: ParameterLayout) -> list[Variable]:
    """The layout.csv rows of ``layout``: per layer its bias, then its kernel (the published zoo's order)."""
    names, variables, start = keras_names(layout), [], 0
    for layer in layout.layers:
        for kind, suffix in (("bias", "bias:0"), ("weight", "kernel:0")):
            entry = layout.by_name[f"{layer}.{kind}"]
            variables.append(Variable(f"{names[layer]}/{suffix}", start, start + entry.size, tf_shape(entry), entry))
            start += entry.size
    return variables


def tf_permutation(variables: list[Variable], size: int) -> np.ndarray:
    """Index array ``perm`` [P]: ``row[..., perm]`` is a row of the format in our flat layout, and
    ``out[..., perm] = ours`` writes one."""
    perm = np.empty(size, dtype=np.int64)
    for v in variables:
        tf_indices = np.arange(v.start, v.end).reshape(v.shape)
        perm[v.entry.slice] = tf_indices.transpose(_to_torch_axes(len(v.shape))).reshape(-1)
    return perm


def layout_frame(variables: list[Variable]) -> pd.DataFrame:
    return pd.DataFrame({"varname": [v.varname for v in variables], "start_idx": [v.start for v in variables],
                         "end_idx": [v.end for v in variables], "shape": [str(v.shape) for v in variables]})


def read_layout(table: pd.DataFrame, layout: ParameterLayout, where: str) -> list[Variable]:
    """layout.csv's rows matched to ``layout`` (the k-th ``conv2d`` to our k-th conv layer, the k-th
    ``dense`` to our k-th dense layer); DataFormatError unless the rows tile the vector with the
    shapes our layers have."""
    missing = [c for c in LAYOUT_COLUMNS if c not in table.columns]
    if missing:
        raise DataFormatError(f"{where}: layout.csv lacks the columns {missing}")
    ours: dict[tuple[str, int], str] = {}  # (Keras type, its number) -> our layer
    counts: dict[str, int] = {}
    for entry in layout.weight_entries():
        kind = KERAS_LAYER[len(entry.shape)]
        ours[(kind, counts.get(kind, 0))] = entry.layer
        counts[kind] = counts.get(kind, 0) + 1
    variables = []
    for row in table.itertuples(index=False):
        match = VARNAME.fullmatch(str(row.varname))
        if match is None:
            raise DataFormatError(f"{where}: layout.csv names {row.varname!r}, not a conv2d or dense "
                                  "kernel:0 or bias:0")
        kind, number, part = match.group(1), int(match.group(2) or 0), match.group(3)
        layer = ours.get((kind, number))
        if layer is None:
            raise DataFormatError(f"{where}: layout.csv's {row.varname} has no layer of ours "
                                  f"({', '.join(layout.layers)})")
        entry = layout.by_name[f"{layer}.{'weight' if part == 'kernel' else 'bias'}"]
        try:
            shape = tuple(int(n) for n in ast.literal_eval(str(row.shape)))
            start, end = int(row.start_idx), int(row.end_idx)
        except (ValueError, TypeError, SyntaxError):
            raise DataFormatError(f"{where}: layout.csv's row of {row.varname} is malformed") from None
        if shape != tf_shape(entry) or end - start != entry.size:
            raise DataFormatError(f"{where}: layout.csv gives {row.varname} the shape {shape} over "
                                  f"{start}:{end}; our {entry.name} is {tf_shape(entry)} in TensorFlow order")
        variables.append(Variable(str(row.varname), start, end, shape, entry))
    covered = sorted((v.start, v.end) for v in variables)
    starts, ends = [s for s, _ in covered], [e for _, e in covered]
    tiles = bool(covered) and starts == [0, *ends[:-1]] and ends[-1] == layout.num_params
    if len({v.entry.name for v in variables}) != len(variables) or len(variables) != len(layout.entries) or not tiles:
        raise DataFormatError(f"{where}: layout.csv does not cover the {layout.num_params} parameters of "
                              f"{', '.join(layout.layers)} once each")
    return variables


def literature_splits(order: np.ndarray, final: np.ndarray) -> dict[int, str]:
    """The split NFN and ScaleGMN use (their ``ZooDataset._split_indices_iid``): rows in the split
    file's ``order``, only the final checkpoints (``final[row]``) kept; the second half is test, the
    first half is shuffled by ``random.Random(0)``, its first 80 % train, the rest val. Row -> split."""
    rows = [int(r) for r in order if final[int(r)]]
    cut = int(0.5 * len(rows))
    trainval = list(range(cut))
    random.Random(0).shuffle(trainval)
    val_point = int(0.8 * len(trainval))
    split = {rows[i]: "test" for i in range(cut, len(rows))}
    split.update({rows[i]: "train" for i in trainval[:val_point]})
    split.update({rows[i]: "val" for i in trainval[val_point:]})
    return split


def split_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.name.endswith(SPLIT_SUFFIX))
