"""The Small CNN Zoo's format written and read from its public facts alone, for the tests.

Nothing here uses the toolkit's converters: a synthetic zoo is written the way the published one
was made, and an export is read the way NFN's experiments read the published one. Each fact names
its source:

[README]  google-research/google-research dnn_predict_accuracy/README.md (the dataset's description)
[TRAIN]   google-research/google-research dnn_predict_accuracy/train_network.py (how the zoo was trained)
[COLAB]   google-research/google-research dnn_predict_accuracy/colab/dnn_predict_accuracy.ipynb
[NFN]     AllanYangZhou/nfn experiments/data_utils.py ``ZooDataset`` (how NFN, and ScaleGMN's copy of
          it in jkalogero/scalegmn src/data/cifar10_dataset.py ``NFNZooDataset``, load the zoo)
"""

from __future__ import annotations

import ast
import random
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

# [README] "3 conv layers of 16 hidden units each, followed by global average pooling and 10-output nodes
# dense layer"; [TRAIN] build_cnn: Conv2D(n_hidden, kernel_size=3, strides=2) (Keras' default padding,
# "valid"), GlobalAveragePooling2D, Dense(n_outputs).
UNITS, KERNEL, STRIDE, CLASSES = 16, 3, 2, 10
# [README] "checkpoints at epoch 0 (initialization), 1, 2, 3, 20, 40, 60, 80 and 86"; [NFN] filters
# metrics["step"] == 86 for the final weights: the step column holds these epochs.
STEPS = (0, 1, 2, 3, 20, 40, 60, 80, 86)
ACTIVATIONS = {"relu": lambda x: np.maximum(x, 0.0), "tanh": np.tanh}


Params = list[tuple[np.ndarray, np.ndarray]]


def keras_params(rng: np.random.Generator, channels: int = 1, scale: float = 1.0) -> Params:
    """(kernel, bias) per layer in TensorFlow's shapes: conv kernels [h, w, in, out], the dense
    kernel [in, out] (Keras' variable shapes; [NFN] transposes 5-dim kernels (0, 4, 3, 1, 2) and
    3-dim ones (0, 2, 1) to reach PyTorch's order, which fixes them)."""
    layers, inputs = [], channels
    for _ in range(3):
        fan_in = KERNEL * KERNEL * inputs
        layers.append((rng.normal(0, scale * np.sqrt(2 / fan_in), (KERNEL, KERNEL, inputs, UNITS)),
                       rng.normal(0, 0.1, UNITS)))
        inputs = UNITS
    layers.append((rng.normal(0, scale * np.sqrt(2 / UNITS), (UNITS, CLASSES)), rng.normal(0, 0.1, CLASSES)))
    return [(k.astype(np.float32), b.astype(np.float32)) for k, b in layers]


def keras_logits(params: Params, images_nchw: np.ndarray, activation: str) -> np.ndarray:
    """The Keras model's forward pass on NHWC images, from [TRAIN]'s build_cnn: each Conv2D computes
    ``out[n, i, j, o] = sum_{h, w, c} x[n, 2i + h, 2j + w, c] k[h, w, c, o] + b[o]`` (stride 2, no
    padding) then its activation; GlobalAveragePooling2D averages over height and width; Dense."""
    x = np.transpose(images_nchw, (0, 2, 3, 1)).astype(np.float64)
    for kernel, bias in params[:3]:
        windows = sliding_window_view(x, (KERNEL, KERNEL), axis=(1, 2))[:, ::STRIDE, ::STRIDE]  # [n, i, j, c, h, w]
        x = ACTIVATIONS[activation](np.einsum("nijchw,hwco->nijo", windows, kernel) + bias)
    kernel, bias = params[3]
    return x.mean(axis=(1, 2)) @ kernel + bias


def accuracy_and_loss(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float((logits.argmax(axis=1) == labels).mean()), float(-log_p[np.arange(len(labels)), labels].mean())


def flat_row(params: Params) -> tuple[np.ndarray, list[dict]]:
    """One weights.npy row and the layout.csv rows: per layer the bias, then the kernel ([COLAB]'s
    per-layer boundaries: layer 0 is (0, 16) then (16, 160), i.e. bias before kernel), each flattened
    in C order (what ``reshape`` by ``shape`` in [NFN] undoes); varnames are Keras' Sequential names
    ending in kernel:0 / bias:0 ([NFN] dispatches on ``varname.endswith("kernel:0")``), shapes as tuple
    strings ([NFN] ``eval(row["shape"])``)."""
    names = ["sequential/conv2d", "sequential/conv2d_1", "sequential/conv2d_2", "sequential/dense"]
    parts, rows, start = [], [], 0
    for name, (kernel, bias) in zip(names, params, strict=True):
        for suffix, array in (("bias:0", bias), ("kernel:0", kernel)):
            parts.append(array.reshape(-1))
            rows.append({"varname": f"{name}/{suffix}", "start_idx": start, "end_idx": start + array.size,
                         "shape": str(tuple(array.shape))})
            start += array.size
    return np.concatenate(parts).astype(np.float32), rows


def write_zoo(folder: Path, data, n_models: int, seed: int = 0, dataset: str = "cifar10",
              crashed: int | None = None, diverged: int | None = None) -> pd.DataFrame:
    """A synthetic zoo of ``n_models`` on ``data`` (an ImageData whose labels a teacher gave): each
    model a noisy copy of the teacher that approaches it step by step, so its accuracies, computed by
    :func:`keras_logits`, are real. Model ``crashed`` lacks its last checkpoint, ``diverged`` holds a
    NaN ([README]: "a small number of training processes crashed/got stuck"). Rows are shuffled.
    Returns the metrics table as written."""
    rng = np.random.default_rng(seed)
    teacher = TEACHERS[seed]
    rows, metrics = [], []
    for m in range(n_models):
        activation = ("relu", "tanh")[m % 2]
        # [README]'s metrics.csv.gz columns: config.* hyperparameters, modeldir, step, accuracies, losses
        config = {"config.activation": activation, "config.b_init": "zeros", "config.dataset": dataset,
                  "config.dnn_architecture": "cnn", "config.dropout": [0.0, 0.2][m % 2], "config.epochs": 86,
                  "config.epochs_between_checkpoints": 20, "config.init_std": 0.05, "config.l2reg": 1e-4 * m,
                  "config.learning_rate": 1e-3 * (m + 1), "config.num_layers": 3, "config.num_units": UNITS,
                  "config.optimizer": ("adam", "sgd")[m % 2], "config.random_seed": 42,
                  "config.train_fraction": 1.0, "config.w_init": ("he_normal", "glorot_uniform")[m % 2]}
        noise = keras_params(rng)
        modeldir = f"/zoo/{dataset}/{m:05d}-{rng.integers(1 << 30)}"  # one training run's folder
        for i, step in enumerate(STEPS):
            if m == crashed and step == STEPS[-1]:
                continue
            weight = 1.0 - i / (len(STEPS) - 1)  # the teacher itself at the last step
            params = [(tk + weight * nk, tb + weight * nb) for (tk, tb), (nk, nb) in zip(teacher, noise, strict=True)]
            params = [(k.astype(np.float32), b.astype(np.float32)) for k, b in params]
            row, layout = flat_row(params)
            if m == diverged and i == 4:
                row[7] = np.nan
            train = accuracy_and_loss(keras_logits(params, data.train_x.numpy(), activation), data.train_y.numpy())
            test = accuracy_and_loss(keras_logits(params, data.test_x.numpy(), activation), data.test_y.numpy())
            rows.append(row)
            metrics.append({**config, "modeldir": modeldir, "step": step,
                            "test_accuracy": test[0], "test_loss": test[1], "train_accuracy": train[0],
                            "train_loss": train[1]})
    order = rng.permutation(len(rows))
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "weights.npy", np.stack(rows)[order])  # [README] one flat float32 vector per checkpoint
    pd.DataFrame(layout).to_csv(folder / "layout.csv", index=False)
    table = pd.DataFrame(metrics).iloc[order].reset_index(drop=True)
    table.to_csv(folder / "metrics.csv.gz", index=False)  # one row per checkpoint, the rows' order
    # [NFN] the split file: a headerless column of row indices (predict_gen_data_splits/<dataset>_split.csv)
    pd.Series(rng.permutation(len(rows))).to_csv(folder / f"{dataset}_split.csv", index=False, header=False)
    return table


TEACHERS = {seed: keras_params(np.random.default_rng(1000 + seed), scale=3.0) for seed in range(4)}


def teacher_labels(train_nchw: np.ndarray, test_nchw: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's classes of the train and test images. Its dense bias is first set so that every
    class scores the same on average over these images: random images look alike after global
    pooling, and an uncalibrated teacher would name one class for all of them."""
    kernel, _ = TEACHERS[seed][3]
    zero = [*TEACHERS[seed][:3], (kernel, np.zeros(CLASSES, np.float32))]
    logits = keras_logits(zero, np.concatenate([train_nchw, test_nchw]), "relu")
    TEACHERS[seed][3] = (kernel, -logits.mean(axis=0).astype(np.float32))
    return (keras_logits(TEACHERS[seed], train_nchw, "relu").argmax(axis=1),
            keras_logits(TEACHERS[seed], test_nchw, "relu").argmax(axis=1))


def nfn_split(folder: Path, split_file: str, final_step: int = STEPS[-1]) -> dict[str, list[int]]:
    """[NFN] ``_split_indices_iid`` on the split file's order: rows shuffled by the file, final steps
    kept, ``test`` the second half, the first half shuffled by ``random.Random(0)``, 80 % ``train``,
    the rest ``val``. Returns split -> rows of the files."""
    order = pd.read_csv(folder / split_file, header=None).values.flatten()
    metrics = pd.read_csv(folder / "metrics.csv.gz", compression="gzip").iloc[order]
    rows = order[(metrics["step"] == final_step).to_numpy()]
    cut = int(0.5 * len(rows))
    trainval = list(range(cut))
    random.Random(0).shuffle(trainval)
    val_point = int(0.8 * len(trainval))
    return {"train": [int(rows[i]) for i in trainval[:val_point]], "val": [int(rows[i]) for i in trainval[val_point:]],
            "test": [int(rows[i]) for i in range(cut, len(rows))]}


def read_like_nfn(folder: Path, step: int | None = None):
    """[NFN] ``ZooDataset.__init__``'s reading, without its shuffling and splitting: ``np.load`` the
    weights, read metrics.csv.gz and layout.csv with pandas, keep the rows of ``step`` (NFN: 86),
    slice each layout row ``start_idx:end_idx``, reshape by ``shape``, transpose kernels from
    TensorFlow to PyTorch order ((0, 4, 3, 1, 2) for conv, (0, 2, 1) for dense; biases as they are).
    ``ast.literal_eval`` stands in for NFN's ``eval`` (same tuple, no code run); floats are parsed
    exactly (pandas 3's default; pandas 2 needs its round-trip parser)."""
    data = np.load(folder / "weights.npy")
    exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
    metrics = pd.read_csv(folder / "metrics.csv.gz", compression="gzip", **exact)
    layout = pd.read_csv(folder / "layout.csv")
    if step is not None:
        keep = (metrics["step"] == step).to_numpy()
        data, metrics = data[keep], metrics[keep]
    weights, biases = [], []
    for _, row in layout.iterrows():
        arr = data[:, row["start_idx"] : row["end_idx"]]
        arr = arr.reshape((arr.shape[0], *ast.literal_eval(row["shape"])))
        if row["varname"].endswith("kernel:0"):
            if arr.ndim == 5:
                arr = arr.transpose(0, 4, 3, 1, 2)
            elif arr.ndim == 3:
                arr = arr.transpose(0, 2, 1)
            weights.append(arr)
        elif row["varname"].endswith("bias:0"):
            biases.append(arr)
        else:
            raise ValueError(f"varname {row['varname']} not recognized")
    return weights, biases, metrics.reset_index(drop=True)
