"""A fake Zenodo on 127.0.0.1 and tiny zips in the published Model Zoos layout.

The server answers the records API (``/api/records/<id>``: files with key, size, ``md5:``
checksum and ``links.self``) and serves file contents with Range support; it can cut the first
transfer of a file, lie about a checksum, and stops itself after a minute at the latest. The zips
hold Ray Tune trial folders: originals (``module_list.{0,3,6,9,11}.weight|bias`` checkpoints) and
``CNN_ARD`` twins (plus ``log_sigma2`` / ``log_sigma2_bias``), every checkpoint a
``torch.save``d dict of plain tensors, as the original code wrote them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import struct
import threading
import zipfile
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _http import range_start, send_bytes

from zoo_dataset.architectures import parametrised_layers, seeded_model

MODULES = (0, 3, 6, 9, 11)  # CNN-s (and CNN_ARD) with dropout 0
CONVS = (0, 3, 6)
LIFETIME_S = 60.0
ORIGINAL_EPOCHS = 2
VD_EPOCHS = 2


class FakeZenodo:
    """records: {record id: {file name: bytes}}; ``cut[name] = n`` cuts its first transfer after n
    bytes; ``wrong_md5`` lists files whose listed checksum is wrong; ``requests`` logs (path, range start)."""

    def __init__(self):
        self.records: dict[int, dict[str, bytes]] = {}
        self.cut: dict[str, int] = {}
        self.wrong_md5: set[str] = set()
        self.requests: list[tuple[str, int]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._timer = threading.Timer(LIFETIME_S, self.server.shutdown)  # bounded: never outlives a hung test

    def __enter__(self) -> FakeZenodo:
        self._thread.start()
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        self.server.shutdown()
        self.server.server_close()

    def listing(self, record: int) -> dict:
        files = []
        for key, data in self.records[record].items():
            md5 = hashlib.md5(data).hexdigest()
            if key in self.wrong_md5:
                md5 = hashlib.md5(data + b"x").hexdigest()
            files.append({"id": key, "key": key, "size": len(data), "checksum": f"md5:{md5}",
                          "links": {"self": f"{self.url}/api/records/{record}/files/{key}/content"}})
        return {"id": record, "doi": f"10.5281/zenodo.{record}", "files": files}


def _handler(zenodo: FakeZenodo):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            start = range_start(self)
            zenodo.requests.append((self.path, start))
            if m := re.fullmatch(r"/api/records/(\d+)", self.path):
                if int(m.group(1)) not in zenodo.records:
                    return self.send_error(404)
                return send_bytes(self, json.dumps(zenodo.listing(int(m.group(1)))).encode(), 0)
            if m := re.fullmatch(r"/api/records/(\d+)/files/([^/]+)/content", self.path):
                data = zenodo.records.get(int(m.group(1)), {}).get(m.group(2))
                if data is None:
                    return self.send_error(404)
                return send_bytes(self, data, start, zenodo.cut.pop(m.group(2), None))
            self.send_error(404)

        def log_message(self, *args):
            pass

    return Handler


# ------------------------------------------------------------------------------------- archives


def _saved(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def trial_name(tag: str, index: int, seed: int) -> str:
    return f"NN_tune_trainable_{tag}_{index:05d}_{index}_seed={seed}_2021-07-01_16-59-53"


def original_trials(zf: zipfile.ZipFile, experiment: str, spec, model_ids, channels: int = 1) -> dict:
    """Original trial folders of ``model_ids``; returns {model id: (trial folder name, final flat state)}."""
    out = {}
    for index, model_id in enumerate(model_ids):
        config = spec.models()[model_id]
        name = trial_name("c0371", index, config.seed)
        folder = f"{experiment}/{name}"
        params = {"model::type": "CNN", "model::nlin": config.activation, "model::init_type": config.init,
                  "model::dropout": config.dropout, "optim::optimizer": config.optimizer, "optim::lr": config.lr,
                  "optim::wd": config.weight_decay, "seed": config.seed, "training::batchsize": 10,
                  "dataset::dump": "/home/u/zoos/data/dataset.pt"}
        zf.writestr(f"{folder}/params.json", json.dumps(params))
        model = seeded_model("cnn_s", channels, config.activation, 0.0, config.init, config.seed)
        lines = []
        for epoch in range(ORIGINAL_EPOCHS + 1):
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(0.5)  # U(0,1) weights saturate tanh; halving keeps the predictions varied
            state = OrderedDict()
            for i, (_, layer) in zip(MODULES, parametrised_layers(model), strict=True):
                state[f"module_list.{i}.weight"] = layer.weight.detach().clone()
                state[f"module_list.{i}.bias"] = layer.bias.detach().clone()
            zf.writestr(f"{folder}/checkpoint_{epoch:06d}/checkpoints", _saved(state))
            lines.append({"train_loss": -999 if epoch == 0 else 1.0, "train_acc": -999 if epoch == 0 else 0.5,
                          "test_loss": 2.0, "test_acc": 0.1 + 0.01 * epoch, "training_iteration": epoch})
        zf.writestr(f"{folder}/result.json", "\n".join(json.dumps(x) for x in lines) + "\n")
        out[model_id] = (name, state)
    return out


def ard_log_alpha(log_sigma2: torch.Tensor, w: torch.Tensor, conv: bool) -> torch.Tensor:
    """Conv2dARD / LinearARD.log_alpha as the published code computes it (written here independently)."""
    bound = 8.0 if conv else 10.0
    return torch.clamp(log_sigma2 - 2 * torch.log(torch.abs(w) + 1e-15), -bound, bound)


def ard_eval_accuracy(state: dict, x: torch.Tensor, y: torch.Tensor) -> float:
    """CNN_ARD in eval mode: weights (and conv biases) with log alpha >= 3 are zero."""
    h = x
    for i in MODULES:
        w, b = state[f"module_list.{i}.weight"], state[f"module_list.{i}.bias"]
        conv = i in CONVS
        w = torch.where(torch.ge(ard_log_alpha(state[f"module_list.{i}.log_sigma2"], w, conv), 3), 0.0, w)
        if conv:
            b = torch.where(torch.ge(ard_log_alpha(state[f"module_list.{i}.log_sigma2_bias"], b, True), 3), 0.0, b)
            h = F.conv2d(h, w, b)
            h = torch.tanh(F.max_pool2d(h, 2) if i != 6 else h)
        else:
            h = F.linear(h.flatten(1), w, b)
            h = torch.tanh(h) if i != MODULES[-1] else h
    return float((h.argmax(dim=1) == y).float().mean())


def _log_sigma2(values: torch.Tensor, epoch: int, rng: torch.Generator) -> torch.Tensor:
    """-10 at the start (ard_init); later a raw log alpha spread over [-13, 13], so that both clamps
    and the threshold are exercised."""
    if epoch == 0:
        return torch.full_like(values, -10.0)
    raw = torch.rand(values.shape, generator=rng) * 26 - 13
    return (raw + 2 * torch.log(values.abs() + 1e-15)).float()


def twin_trials(zf: zipfile.ZipFile, experiment: str, originals: dict, labels: dict, data, seed: int = 0,
                start_checkpoint: bool = True) -> dict:
    """CNN_ARD twin folders starting from each original's final state; ``labels[model_id]`` is the
    original trial folder its params.json names. Returns {model id: [ARD state per epoch]}."""
    rng = torch.Generator().manual_seed(seed)
    out = {}
    for index, (model_id, (_, final)) in enumerate(originals.items()):
        folder = f"{experiment}/NN_tune_trainable_from_checkpoint_9a1b2_{index:05d}_{index}_2022-08-20_10-00-00"
        params = {"model::type": "CNN_ARD", "seed": 1, "training::epochs_train": VD_EPOCHS,
                  "training::sample_epoch": 50, "optim::lr": 3e-4,
                  "training::init_checkpoint_path": f"/home/u/zoos/MNIST/tune_zoo_mnist_uniform/{labels[model_id]}"}
        zf.writestr(f"{folder}/params.json", json.dumps(params))
        states, lines = [], []
        weights = {k: v.clone() for k, v in final.items()}
        for epoch in range(VD_EPOCHS + 1):
            state = OrderedDict()
            for i in MODULES:
                w, b = weights[f"module_list.{i}.weight"], weights[f"module_list.{i}.bias"]
                if epoch:
                    w += 0.05 * torch.randn(w.shape, generator=rng)
                    w.view(-1)[0] = 0.0  # an exact zero: log(0 + 1e-15) hits the clamp
                    b += 0.05 * torch.randn(b.shape, generator=rng)
                state[f"module_list.{i}.weight"], state[f"module_list.{i}.bias"] = w.clone(), b.clone()
                state[f"module_list.{i}.log_sigma2"] = _log_sigma2(w, epoch, rng)
                if i in CONVS:
                    state[f"module_list.{i}.log_sigma2_bias"] = _log_sigma2(b, epoch, rng)
                else:  # LinearARD allocates log_sigma2_bias uninitialised and never uses it
                    state[f"module_list.{i}.log_sigma2_bias"] = torch.rand(b.shape, generator=rng) * 100
            if epoch or start_checkpoint:
                zf.writestr(f"{folder}/checkpoint_{epoch:06d}/checkpoints", _saved(state))
            acc = ard_eval_accuracy(state, data.test_x, data.test_y) if data is not None else 0.5
            lines.append({"train_loss": 0.5, "train_acc": 0.6, "test_loss": 0.7, "test_acc": acc,
                          "sparsity_ratio": 0.0, "training_iteration": epoch})
            states.append(state)
        zf.writestr(f"{folder}/result.json", "\n".join(json.dumps(x) for x in lines) + "\n")
        out[model_id] = states
    return out


def write_idx(folder: Path, n_train: int = 60, n_test: int = 50, seed: int = 0) -> None:
    """A tiny MNIST-format data set (gzipped IDX files) of random images and labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        (folder / f"{stem}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(struct.pack(">HBB3I", 0, 8, 3, n, 28, 28) + images.tobytes()))
        (folder / f"{stem}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(struct.pack(">HBB1I", 0, 8, 1, n) + labels.tobytes()))
