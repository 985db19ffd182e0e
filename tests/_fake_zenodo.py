"""A fake Zenodo on 127.0.0.1 that answers as zenodo.org does today, and zips in the published layout.

Each fact and where it comes from:

- Records API (InvenioRDM): ``GET /api/records/<concept id>`` answers 404 while
  ``GET /api/records/<id>/versions/latest`` answers the latest version (zenodo/zenodo#2499; InvenioRDM's
  ``read_latest`` resolves a version id or a parent id). ``GET /api/records/<version id>`` answers that
  version. A listing names its ``id``, ``conceptrecid`` and ``files``: ``key``, ``size``,
  ``checksum: "md5:<hex>"``, ``links.self`` ending in ``/content``.
- File names: ``<dataset>_<size>_{seed,hyp_fix,hyp_rand}.zip`` beside the preprocessed
  ``dataset_<same>.pt`` pickles and ``index_dict*.json`` (HSG-AIML/SANE data/download_cifar10_cnn.sh:
  records/6620869/files/cifar_large_seed.zip; public scripts: records/6631784/files/stl_small_seed.zip,
  stl_small_hyp_fix.zip, stl_small_hyp_rand.zip). The names used per zoo come from modelzoos.toml.
- Inside a zip: the experiment folder (``tune_zoo_cifar10_uniform_large/`` in SANE
  data/preprocess_dataset_cnn_cifar10.py), then one trial folder per model named as Ray Tune 1.x's
  ``Trial._generate_dirname`` does: ``f"{trainable}_{trial_id}_{experiment_tag}"`` cut at
  ``TUNE_MAX_LEN_IDENTIFIER`` = 130 characters, then ``_<date>``; trial_id = 5 hex + ``_`` + 5-digit
  index; experiment_tag = ``f"{index}_{format_vars(resolved)}"`` where ``format_vars`` joins the sorted
  grid/sampled keys as ``key=value`` with ``,``, floats as ``{:.5}`` and ``/`` replaced by ``_``
  (ray-project/ray python/ray/tune/trial.py and suggest/variant_generator.py of the 1.x releases).
  The original config keys hold ``::`` (``optim::lr``), so a hyperparameter zoo's tag holds ``::``,
  ``,`` and ``=`` and is cut.
- An original trial (ModelZoos/ModelZooDataset def_NN_experiment.py): ``setup`` saves
  ``checkpoint_000000`` (the init), the first step only tests and reports ``-999`` train metrics as
  ``training_iteration`` 0; ``checkpoint_<NNNNNN>/checkpoints`` is a bare state dict with
  ``module_list.<i>.weight|bias`` (indices 0,3,6,9,11 for CNN-s without dropout, 0,4,8,11,14 with
  dropout, 0,4,8,13,16 for CNN-l: def_net.py).
- A VD twin trial (train_mnist_sparse_vd.py, def_net_distillation.py): ``model::type`` ``CNN_ARD``;
  the grid searches ``training::init_checkpoint_path`` = ``str()`` of the original's trial folder as a
  relative ``zoos/MNIST/tune_zoo_mnist_uniform/<trial>`` path, so the twin's own folder name carries
  that path (with ``_`` for ``/``) cut at 130 characters and only params.json links the two;
  ``checkpoint_000000..000025`` and 26 result rows (row 0 evaluates only) with ``sparsity_ratio`` =
  dropped weights / weights over the ARD layers (biases excluded); every ARD layer holds
  ``log_sigma2`` and ``log_sigma2_bias``, and LinearARD allocates the latter uninitialised and never
  uses it (here: NaN in one layer, garbage in the other).

The server can cut the first transfer of a file, lie about a checksum, answer 429 with a
``Retry-After``, serve a raw listing, redirect a path, and stops itself after two minutes at the latest.
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

from zoo_dataset.architectures import build_model, initialize, parametrised_layers, seeded_model
from zoo_dataset.data import get_source

LIFETIME_S = 120.0
ORIGINAL_EPOCHS = 2
VD_EPOCHS = 25  # train_mnist_sparse_vd.py: training::epochs_train = 25, checkpoints 0..25
MAX_LEN_IDENTIFIER = 130  # Ray Tune 1.x TUNE_MAX_LEN_IDENTIFIER default
TRAINABLE = "NN_tune_trainable"
ARD_THRESHOLD = 3.0  # def_net_distillation.py: torch.ge(log_alpha, 3) drops a weight
HYPER_KEYS = ("model::dropout", "model::init_type", "model::nlin", "optim::lr", "optim::optimizer", "optim::wd",
              "seed")  # grid-searched / sampled in the train_zoo_*_hyperparameter_10_* scripts


def module_indices(architecture: str, dropout: float) -> tuple[int, ...]:
    """``module_list`` indices of the parametrised layers in the original code (def_net.py)."""
    if architecture == "cnn_l":
        return (0, 4, 8, 13, 16)
    return (0, 4, 8, 11, 14) if dropout > 0 else (0, 3, 6, 9, 11)


class FakeZenodo:
    """``publish(concept, version, files)`` adds a version; ``cut[name] = n`` cuts its first transfer
    after n bytes; ``wrong_md5`` lists files whose listed checksum is wrong; ``raw[version]`` replaces
    a version's listing body (bytes: sent as they are); ``rate_limited`` API answers are 429 with
    ``Retry-After: retry_after``; ``redirects[path]`` answers that path with a 302 to its value;
    ``requests`` logs (path, range start)."""

    def __init__(self, concept_latest: bool = True):
        self.concepts: dict[int, list[int]] = {}  # concept -> version ids, oldest first
        self.records: dict[int, dict[str, bytes]] = {}  # version id -> files
        self.concept_latest = concept_latest
        self.cut: dict[str, int] = {}
        self.wrong_md5: set[str] = set()
        self.raw: dict[int, object] = {}
        self.rate_limited, self.retry_after = 0, "0"
        self.redirects: dict[str, str] = {}
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

    def publish(self, concept: int, version: int, files: dict[str, bytes]) -> None:
        """A new version of ``concept`` (the latest from now on), or more files for an existing one."""
        versions = self.concepts.setdefault(concept, [])
        if version not in versions:
            versions.append(version)
        self.records.setdefault(version, {}).update(files)

    def concept_of(self, version: int) -> int:
        return next(c for c, versions in self.concepts.items() if version in versions)

    def latest(self, record: int) -> int | None:
        """versions/latest: for a version id, or for a concept id where ``concept_latest``."""
        if record in self.records:
            return self.concepts[self.concept_of(record)][-1]
        if record in self.concepts and self.concept_latest:
            return self.concepts[record][-1]
        return None

    def listing(self, version: int) -> object:
        if version in self.raw:
            return self.raw[version]
        files = []
        for key, data in self.records[version].items():
            md5 = hashlib.md5(data + (b"x" if key in self.wrong_md5 else b"")).hexdigest()
            files.append({"id": hashlib.md5(key.encode()).hexdigest(), "key": key, "size": len(data),
                          "checksum": f"md5:{md5}",
                          "links": {"self": f"{self.url}/api/records/{version}/files/{key}/content"}})
        concept = self.concept_of(version)
        return {"id": version, "recid": str(version), "conceptrecid": str(concept),
                "doi": f"10.5281/zenodo.{version}", "conceptdoi": f"10.5281/zenodo.{concept}", "files": files,
                "links": {"self": f"{self.url}/api/records/{version}",
                          "latest": f"{self.url}/api/records/{version}/versions/latest"}}


def _handler(zenodo: FakeZenodo):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            start = range_start(self)
            zenodo.requests.append((self.path, start))
            if self.path in zenodo.redirects:
                self.send_response(302)
                self.send_header("Location", zenodo.redirects[self.path])
                self.send_header("Content-Length", "0")
                return self.end_headers()
            if self.path.startswith("/api/records/") and "/files/" not in self.path and zenodo.rate_limited:
                zenodo.rate_limited -= 1
                self.send_response(429)
                self.send_header("Retry-After", zenodo.retry_after)
                self.send_header("Content-Length", "0")
                return self.end_headers()
            if m := re.fullmatch(r"/api/records/(\d+)/versions/latest", self.path):
                version = zenodo.latest(int(m.group(1)))
                return self._json(zenodo.listing(version)) if version is not None else self.send_error(404)
            if m := re.fullmatch(r"/api/records/(\d+)", self.path):  # a concept id is 404 here
                version = int(m.group(1))
                return self._json(zenodo.listing(version)) if version in zenodo.records else self.send_error(404)
            if m := re.fullmatch(r"/api/records/(\d+)/files/([^/]+)/content", self.path):
                data = zenodo.records.get(int(m.group(1)), {}).get(m.group(2))
                if data is None:
                    return self.send_error(404)
                return send_bytes(self, data, start, zenodo.cut.pop(m.group(2), None))
            self.send_error(404)

        def _json(self, body: object) -> None:
            send_bytes(self, body if isinstance(body, bytes) else json.dumps(body).encode(), 0)

        def log_message(self, *args):
            pass

    return Handler


# ------------------------------------------------------------------------------------- archives


def _saved(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _clean(value: object) -> str:
    """Ray 1.x variant_generator._clean_value."""
    return f"{value:.5}" if isinstance(value, float) else str(value).replace("/", "_")


def trial_dirname(trial_hex: str, index: int, resolved: dict, date: str) -> str:
    """Ray 1.x: ``<trainable>_<trial id>_<index>_<key=value,...>`` cut at 130 characters, then ``_<date>``."""
    tag = f"{index}_" + ",".join(f"{_clean(k)}={_clean(v)}" for k, v in sorted(resolved.items()))
    return (f"{TRAINABLE}_{trial_hex}_{index:05d}_{tag}"[:MAX_LEN_IDENTIFIER] + f"_{date}").replace("/", "_")


def original_params(config) -> dict:
    return {"model::type": "CNN", "model::nlin": config.activation, "model::init_type": config.init,
            "model::dropout": config.dropout, "optim::optimizer": config.optimizer, "optim::lr": config.lr,
            "optim::wd": config.weight_decay, "seed": config.seed, "training::batchsize": 10,
            "training::epochs_train": 50, "cuda": False, "dataset::dump": "/home/u/zoos/MNIST/dataset.pt"}


def original_init(spec, config, channels: int, replayable: bool = True):
    """The trainable's model at its init. ``replayable=False``: its construction draws once more from
    the seeded RNG than ours (as a different layer order or an extra module would), so the init is
    another draw of the same distribution, which the toolkit's replay of the seed does not give."""
    if replayable:
        return seeded_model(spec.architecture, channels, config.activation, config.dropout, config.init, config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        torch.rand(1)
        model = build_model(spec.architecture, channels, config.activation, config.dropout)
        initialize(model, method=config.init)
    return model


def original_zip(spec, model_ids, folder: str, epochs: int = ORIGINAL_EPOCHS, trial_hex: str = "c0371",
                 init_replayable: bool = True) -> tuple:
    """A zip of ``folder/`` holding one original trial per model (its init as :func:`original_init`
    makes it); returns (bytes, {model id: (trial folder name, final state dict)})."""
    channels = get_source(spec.dataset).channels
    out = {}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for index, model_id in enumerate(model_ids):
            config = spec.models()[model_id]
            params = original_params(config)
            resolved = ({k: params[k] for k in HYPER_KEYS} if spec.variant != "seed" else {"seed": config.seed})
            name = trial_dirname(trial_hex, index, resolved, "2021-07-01_16-59-53")
            zf.writestr(f"{folder}/{name}/params.json", json.dumps(params))
            model = original_init(spec, config, channels, init_replayable)
            indices = module_indices(spec.architecture, config.dropout)
            lines = []
            for epoch in range(epochs + 1):
                if epoch:
                    with torch.no_grad():
                        for p in model.parameters():
                            p.mul_(0.5)  # U(0,1) weights saturate tanh; halving keeps the predictions varied
                state = OrderedDict()
                for i, (_, layer) in zip(indices, parametrised_layers(model), strict=True):
                    state[f"module_list.{i}.weight"] = layer.weight.detach().clone()
                    state[f"module_list.{i}.bias"] = layer.bias.detach().clone()
                zf.writestr(f"{folder}/{name}/checkpoint_{epoch:06d}/checkpoints", _saved(state))
                lines.append({"train_loss": -999 if epoch == 0 else 1.0, "train_acc": -999 if epoch == 0 else 0.5,
                              "test_loss": 2.0, "test_acc": 0.1 + 0.01 * epoch, "training_iteration": epoch,
                              "trial_id": f"{trial_hex}_{index:05d}", "experiment_tag": name})
            zf.writestr(f"{folder}/{name}/result.json", "".join(json.dumps(x) + "\n" for x in lines))
            zf.writestr(f"{folder}/{name}/progress.csv", "training_iteration,test_acc\n")
            out[model_id] = (name, state)
        zf.writestr(f"{folder}/experiment_state-2021-07-01_16-59-50.json", "{}")
    return buffer.getvalue(), out


def ard_log_alpha(log_sigma2: torch.Tensor, w: torch.Tensor, conv: bool) -> torch.Tensor:
    """Conv2dARD / LinearARD.log_alpha as the published code computes it (written here independently)."""
    bound = 8.0 if conv else 10.0
    return torch.clamp(log_sigma2 - 2 * torch.log(torch.abs(w) + 1e-15), -bound, bound)


CONVS = (0, 3, 6)
MODULES = (0, 3, 6, 9, 11)  # CNN_ARD: CNN-s without dropout


def ard_eval_accuracy(state: dict, x: torch.Tensor, y: torch.Tensor) -> float:
    """CNN_ARD in eval mode: weights (and conv biases) with log alpha >= 3 are zero."""
    h = x
    for i in MODULES:
        w, b = state[f"module_list.{i}.weight"], state[f"module_list.{i}.bias"]
        conv = i in CONVS
        w = torch.where(torch.ge(ard_log_alpha(state[f"module_list.{i}.log_sigma2"], w, conv), ARD_THRESHOLD), 0.0, w)
        if conv:
            b = torch.where(torch.ge(ard_log_alpha(state[f"module_list.{i}.log_sigma2_bias"], b, True),
                                     ARD_THRESHOLD), 0.0, b)
            h = F.conv2d(h, w, b)
            h = torch.tanh(F.max_pool2d(h, 2) if i != 6 else h)
        else:
            h = F.linear(h.flatten(1), w, b)
            h = torch.tanh(h) if i != MODULES[-1] else h
    return float((h.argmax(dim=1) == y).float().mean())


def sparsity_ratio(state: dict) -> float:
    """def_net_distillation.py: dropped weights / weights over the ARD layers; biases count nowhere."""
    dropped = total = 0
    for i in MODULES:
        alpha = ard_log_alpha(state[f"module_list.{i}.log_sigma2"], state[f"module_list.{i}.weight"], i in CONVS)
        dropped += int(torch.ge(alpha, ARD_THRESHOLD).sum())
        total += alpha.numel()
    return dropped / total


def _log_sigma2(values: torch.Tensor, epoch: int, rng: torch.Generator) -> torch.Tensor:
    """-10 at the start (ard_init); later a raw log alpha spread over [-13, 13], so that both clamps
    and the threshold are exercised. An exact zero weight keeps a trained-like log sigma2 (-10): its
    log alpha, -10 - 2 log(1e-15), hits the clamp and the weight is dropped, as in the original."""
    if epoch == 0:
        return torch.full_like(values, -10.0)
    raw = torch.rand(values.shape, generator=rng) * 26 - 13
    return torch.where(values == 0, -10.0, raw + 2 * torch.log(values.abs() + 1e-15)).float()


def twin_zip(originals: dict, labels: dict, folder: str, zoo_path: str, data=None, seed: int = 0,
             epochs: int = VD_EPOCHS) -> tuple:
    """A zip of ``folder/`` holding CNN_ARD twins starting from each original's final state;
    ``labels[model_id]`` is the original trial folder its params.json names under ``zoo_path``
    (e.g. ``zoos/MNIST/tune_zoo_mnist_uniform``). Returns (bytes, {model id: [ARD state per epoch]})."""
    rng = torch.Generator().manual_seed(seed)
    out = {}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for index, (model_id, (_, final)) in enumerate(originals.items()):
            init_path = str(Path(zoo_path) / labels[model_id])
            name = trial_dirname("9a1b2", index, {"training::init_checkpoint_path": init_path}, "2022-08-20_10-00-00")
            params = {"model::type": "CNN_ARD", "seed": 1, "training::epochs_train": epochs,
                      "training::sample_epoch": 50, "optim::lr": 3e-4, "training::init_checkpoint_path": init_path}
            zf.writestr(f"{folder}/{name}/params.json", json.dumps(params))
            states, lines = [], []
            weights = {k: v.clone() for k, v in final.items()}
            for epoch in range(epochs + 1):
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
                    elif i == MODULES[-1]:  # LinearARD: allocated uninitialised, never used
                        state[f"module_list.{i}.log_sigma2_bias"] = torch.full(b.shape, float("nan"))
                    else:
                        state[f"module_list.{i}.log_sigma2_bias"] = torch.tensor([3.0e38, -1e-42] * 10)[: b.numel()]
                zf.writestr(f"{folder}/{name}/checkpoint_{epoch:06d}/checkpoints", _saved(state))
                acc = ard_eval_accuracy(state, data.test_x, data.test_y) if data is not None else 0.5
                lines.append({"train_loss": 0.5, "train_acc": 0.6, "test_loss": 0.7, "test_acc": acc,
                              "sparsity_ratio": sparsity_ratio(state), "training_iteration": epoch})
                states.append(state)
            zf.writestr(f"{folder}/{name}/result.json", "".join(json.dumps(x) + "\n" for x in lines))
            out[model_id] = states
    return buffer.getvalue(), out


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
