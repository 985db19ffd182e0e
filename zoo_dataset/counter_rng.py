"""Counter-based random numbers for training: Philox-4x32-10 in integer tensor ops.

Why counter-based: every random number of a build is a pure function of where it is used, so a
group of models draws all its numbers as one batched tensor op on the training device (no
per-model generator, no Python loop over models), the per-model reference draws the very same
numbers for its one model, and a resumed build or another grouping of the models sees them too.

The algorithm is Random123's Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy
as 1, 2, 3", SC'11): a 128-bit counter and a 64-bit key give four 32-bit words. PyTorch has no
unsigned 32-bit add or shift, so on CUDA the words live in int64 tensors, and a 32x32-bit product
is one int64 multiplication whose wrap-around keeps its 64 bits exact (~120 tensor passes per
draw). On CPU the same core runs as one compiled loop (:mod:`.philox_cpu`, numba, unsigned 64-bit
products, ~40x faster than the tensor passes). Both are exact integer arithmetic, so the words are the
same bits on every CPU and on CUDA, by construction (the tests hold the two against each other
and against an independent NumPy Philox).

What the key and counter hold:

- key = (low 32 bits of the job's seed, CRC-32 of ``"<stream>/<seed >> 32>"``), where the
  stream names the method and level (``"vd/0.000000"``), so a model's twins draw other numbers;
- counter = (element block, draw, step, epoch): ``draw`` numbers the uses within one step
  (:data:`ORDER_DRAW` for the epoch's data order, then the forward pass's random layers in
  order), and element ``i`` of a draw is word ``i % 4`` of block ``i // 4``.

Derived numbers (all documented here, versioned by :data:`GENERATOR`):

- uniform: ``(2 * (w >> 9) + 1) * 2**-24``, exact in float32, in (0, 1) (23 bits);
- keep mask (dropout): ``w < floor(keep * 2**32)``, an integer comparison;
- permutation (data order): a stable argsort of 63-bit keys ``(w_2i >> 1) << 32 | w_2i+1``;
- normal: Box-Muller on the words ``2j, 2j + 1`` of a draw (:func:`box_muller`): normals ``2j``
  and ``2j + 1`` are ``sqrt(-2 ln u1) * (cos, sin)(2 pi u2)``, with ``ln`` and ``cos`` / ``sin``
  evaluated by fixed float32 series (the exponent of ``u1`` split off, the angle reduced to
  ``[-pi/4, pi/4]`` by exact integer steps), each operation rounded on its own: within 4 float32
  ulp of the exact value (relative to the radius), and, as every step is a correctly rounded
  IEEE operation, the same bits on every CPU and on CUDA, whether a vector or a scalar loop or
  tensor ops compute them.

Version 1 drew normals through the platform's float32 ``log``/``cos``/``sin`` (last bits could
differ between devices, and on CPU they cost ~10 tensor passes per draw); version 2 computes them
in the same compiled pass as the words.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import torch
from torch import nn

from .philox_constants import (  # shared with the compiled loops (philox_cpu), which import no module back
    ANGLE_STEP,
    COS_SERIES,
    LN2_SPLIT,
    LOG_SERIES,
    MASK32,
    PHILOX_M,
    PHILOX_W,
    ROUNDS,
    SIN_SERIES,
    SQRT2,
)

GENERATOR = "philox4x32-10/v2"  # in the manifest; change it whenever a number here or in philox_constants does
ORDER_DRAW = 0  # the draw that orders an epoch's data (counter step 0)
FIRST_FORWARD_DRAW = 1

ORDER_SLICE_KEYS = 1 << 24  # data-order keys sorted at once
TENSOR_SLICE_WORDS = 1 << 26  # words per slice of the tensor form (CUDA): ~6 GB of temporaries at most


def _mulhilo(m: int, x):
    """(hi, lo) 32-bit halves of ``m * x`` for a 32-bit constant ``m``: the 64-bit product's bits.

    An int64 tensor product of two 32-bit words may pass 2**63; int64 multiplication wraps
    (two's complement on every CPU and GPU torch runs on), which keeps all 64 bits of the product
    exact, so masking after the shift gives the high word (tested against NumPy's uint64 Philox).
    """
    product = x * m
    return (product >> 32) & MASK32, product & MASK32


def philox4x32_10(counter: Sequence, key: Sequence) -> tuple:
    """Random123's Philox-4x32-10 of four counter words and two key words.

    Words are Python ints or int64 tensors holding values in [0, 2**32) (broadcast together);
    returns the four output words the same way.
    """
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(ROUNDS):
        if r:
            k0, k1 = (k0 + PHILOX_W[0]) & MASK32, (k1 + PHILOX_W[1]) & MASK32
        hi0, lo0 = _mulhilo(PHILOX_M[0], c0)
        hi1, lo1 = _mulhilo(PHILOX_M[1], c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def box_muller(word0: torch.Tensor, word1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two float32 normals of word pairs (int64 tensors), as the module docstring defines them.

    ``ln u1``: ``u1 * 2**24`` is an integer, exact in float32, whose mantissa ``x`` (moved to
    (sqrt(1/2), sqrt(2)]) and exponent ``e`` bit operations take apart; then
    ``ln u1 = e ln 2 + 2 atanh(s)``, ``s = (x - 1) / (x + 1)``, by its series (|s| < 0.172:
    five terms). ``2 pi u2``: ``u2 * 2**24`` minus its nearest quarter
    turn (integer arithmetic) leaves an angle in [-pi/4, pi/4] for the sine and cosine series,
    which the quarter turn then rotates. Each step is one IEEE operation.
    """
    bits = ((word0 >> 9).to(torch.int32) * 2 + 1).to(torch.float32).view(torch.int32)  # u1 * 2**24, exact
    x = ((bits & 0x7FFFFF) | 0x3F800000).view(torch.float32)  # its mantissa, in [1, 2)
    e = ((bits >> 23) - (127 + 24)).to(torch.float32)  # and exponent: u1 = x * 2**e
    big = x > SQRT2
    x, e = torch.where(big, x * 0.5, x), e + big
    s = (x - 1.0) / (x + 1.0)
    z = s * s
    c = LOG_SERIES
    series = c[0] + z * (c[1] + z * (c[2] + z * (c[3] + z * c[4])))
    # torch's float32 sqrt on CPU (SLEEF, 0.5 ulp) is not always correctly rounded; a float64 sqrt
    # within one ulp, rounded to float32, always is: sqrt of a float32 never lies that near a midpoint
    radius = torch.sqrt(-2.0 * ((e * LN2_SPLIT[0] + s * series) + e * LN2_SPLIT[1]).double()).float()
    v = (word1 >> 9).to(torch.int32) * 2 + 1  # u2 * 2**24
    quarter = (v + (1 << 21)) >> 22  # the nearest quarter turn, 0..4
    a = (v - (quarter << 22)).to(torch.float32) * ANGLE_STEP
    a2 = a * a
    sn, cs = SIN_SERIES, COS_SERIES
    sin_a = a + a * a2 * (sn[0] + a2 * (sn[1] + a2 * (sn[2] + a2 * sn[3])))
    cos_a = 1.0 + a2 * (cs[0] + a2 * (cs[1] + a2 * (cs[2] + a2 * (cs[3] + a2 * cs[4]))))
    odd = (quarter & 1) == 1
    cos_t, sin_t = torch.where(odd, sin_a, cos_a), torch.where(odd, cos_a, sin_a)
    cos_t = torch.where(((quarter + 1) >> 1) & 1 == 1, -cos_t, cos_t)
    sin_t = torch.where((quarter >> 1) & 1 == 1, -sin_t, sin_t)
    return radius * cos_t, radius * sin_t


def stream_name(stream: str, level: float) -> str:
    """A method's stream at a sparsity level (0 for methods without levels)."""
    return f"{stream}/{level:.6f}"


class CounterRNG:
    """The random numbers of ``M`` models that train together: one Philox key per model.

    Every method returns ``[M, ...]``: row ``m`` is what model ``m`` alone would draw, so one
    model (the per-model reference) and a group that contains it draw equal numbers.
    """

    @classmethod
    def for_jobs(cls, jobs: Sequence, stream: str, device: torch.device | str = "cpu") -> CounterRNG:
        """The generator of training jobs (:class:`~zoo_dataset.jobs.TrainJob`) of one method: their
        seeds, and the method's stream (``Method.noise_stream``) at their levels."""
        return cls([j.seed for j in jobs], [stream_name(stream, j.key.level) for j in jobs], device)

    def __init__(self, seeds: Sequence[int], streams: Sequence[str], device: torch.device | str = "cpu"):
        if len(seeds) != len(streams):
            raise ValueError("one stream per seed")
        if any(int(s) < 0 for s in seeds):
            raise ValueError("seeds must be non-negative")
        self.device = torch.device(device)
        k0 = [int(s) & MASK32 for s in seeds]
        k1 = [zlib.crc32(f"{stream}/{int(s) >> 32}".encode()) for s, stream in zip(seeds, streams, strict=True)]
        self.key = tuple(torch.tensor(k, dtype=torch.int64, device=self.device).unsqueeze(1) for k in (k0, k1))
        self._cpu_keys = (np.array(k0, dtype=np.int64), np.array(k1, dtype=np.int64))
        self.size = len(seeds)

    def words(self, n: int, epoch: int, step: int, draw: int) -> torch.Tensor:
        """``n`` 32-bit words per model as int64 ``[M, n]``."""
        _check_counter(epoch, step, draw)
        if self.device.type == "cpu":
            out = torch.empty(self.size, n, dtype=torch.int64)
            from .philox_cpu import words_cpu  # numba loads on first use: readers of a store never need it

            words_cpu(*self._cpu_keys, draw, step, epoch, out.numpy())
            return out
        return self._tensor_words(n, epoch, step, draw)

    def _tensor_slices(self, n: int, epoch: int, step: int, draw: int) -> Iterator[torch.Tensor]:
        """The words of the first ``ceil(n / 4)`` blocks as int64 tensor ops on the generator's
        device (what CUDA runs), ``[M, 4 * blocks]`` per slice of blocks, so that the temporaries
        (~12 int64 tensors of a slice) stay bounded."""
        blocks = torch.arange(-(-n // 4), dtype=torch.int64, device=self.device).unsqueeze(0)
        per_slice = max(1, TENSOR_SLICE_WORDS // (4 * self.size))
        for part in blocks.split(per_slice, dim=1):
            yield torch.stack(philox4x32_10((part, draw, step, epoch), self.key), dim=2).reshape(self.size, -1)

    def _tensor_words(self, n: int, epoch: int, step: int, draw: int) -> torch.Tensor:
        return torch.cat(list(self._tensor_slices(n, epoch, step, draw)), dim=1)[:, :n]

    def _tensor_normals(self, n: int, epoch: int, step: int, draw: int) -> torch.Tensor:
        parts = []
        for words in self._tensor_slices(n, epoch, step, draw):
            pairs = words.view(self.size, -1, 2)
            parts.append(torch.stack(box_muller(pairs[..., 0], pairs[..., 1]), dim=2).view(self.size, -1))
        return torch.cat(parts, dim=1)[:, :n]

    def uniform(self, shape: Sequence[int], epoch: int, step: int, draw: int) -> torch.Tensor:
        """float32 uniforms in (0, 1), ``[M, *shape]``."""
        return _uniform(self.words(math.prod(shape), epoch, step, draw)).view(self.size, *shape)

    def normal(self, shape: Sequence[int], epoch: int, step: int, draw: int,
               out: torch.Tensor | None = None) -> torch.Tensor:
        """float32 standard normals (:func:`box_muller` of the words 2j, 2j + 1), ``[M, *shape]``.

        ``out``: an ``[M, *shape]`` view of any strides to write them into (the engine passes the
        model-major view of a layer's output layout, so the numbers land where they are used
        without another transposing copy).
        """
        _check_counter(epoch, step, draw)
        n = math.prod(shape)
        if out is None:
            out = torch.empty(self.size, *shape, device=self.device)
        if self.device.type != "cpu":
            return out.copy_(self._tensor_normals(n, epoch, step, draw).reshape(self.size, *shape))
        from .philox_cpu import normals_channels_last, normals_cpu  # numba loads on first use

        if _grouped_channels_last(out):  # a conv output of the engine: drawn in its memory order
            m, b, c, h, w = out.shape
            layer = out.permute(1, 3, 4, 0, 2).view(b * h * w, m * c)
            normals_channels_last(*self._cpu_keys, draw, step, epoch, c, h, w, layer.numpy())
        elif out.is_contiguous() and n % 2 == 0:
            normals_cpu(*self._cpu_keys, draw, step, epoch, out.view(self.size, n).numpy())
        else:
            pairs = torch.empty(self.size, n + n % 2)
            normals_cpu(*self._cpu_keys, draw, step, epoch, pairs.numpy())
            out.copy_(pairs[:, :n].reshape(self.size, *shape))
        return out

    def keep_mask(self, shape: Sequence[int], keep: float, epoch: int, step: int, draw: int) -> torch.Tensor:
        """Bernoulli(keep) as bool ``[M, *shape]`` (True = kept)."""
        threshold = math.floor(keep * 2**32)
        return (self.words(math.prod(shape), epoch, step, draw) < threshold).view(self.size, *shape)

    def permutation(self, n: int, epoch: int) -> torch.Tensor:
        """A random permutation of ``range(n)`` per model, int64 ``[M, n]``: an epoch's data order.

        Sorted for a slice of models at a time (ORDER_SLICE_KEYS keys), so the words and the sort
        of thousands of models never hold more than a few hundred MB.
        """
        out = torch.empty(self.size, n, dtype=torch.int64, device=self.device)
        rows = max(1, ORDER_SLICE_KEYS // max(n, 1))
        for start in range(0, self.size, rows):
            part = self._rows(start, start + rows)
            w = part.words(2 * n, epoch, 0, ORDER_DRAW).view(part.size, n, 2)
            out[start : start + part.size] = torch.argsort(((w[..., 0] >> 1) << 32) | w[..., 1], dim=1, stable=True)
        return out

    def _rows(self, start: int, stop: int) -> CounterRNG:
        """The generator of models ``start:stop`` (the same numbers as their rows here)."""
        part = CounterRNG.__new__(CounterRNG)
        part.device = self.device
        part.key = tuple(k[start:stop] for k in self.key)
        part._cpu_keys = tuple(k[start:stop] for k in self._cpu_keys)
        part.size = int(part.key[0].shape[0])
        return part

    def batches(self, n: int, batch_size: int, epoch: int) -> tuple[torch.Tensor, ...]:
        """An epoch's index batches ``[M, batch_size]`` (the last one may be shorter)."""
        return self.permutation(n, epoch).split(batch_size, dim=1)


def _check_counter(epoch: int, step: int, draw: int) -> None:
    for name, value in (("epoch", epoch), ("step", step), ("draw", draw)):
        if not 0 <= value <= MASK32:
            raise ValueError(f"{name} {value} is outside the 32-bit counter")


def _grouped_channels_last(out: torch.Tensor) -> bool:
    """Whether ``out`` [M, B, C, H, W] lies in memory as [B, H, W, M, C] (the population engine's
    conv outputs), with W a multiple of 4 (a Philox block's two pairs then share a row)."""
    return out.dim() == 5 and out.shape[-1] % 4 == 0 and out.permute(1, 3, 4, 0, 2).is_contiguous()


def _uniform(words: torch.Tensor) -> torch.Tensor:
    return ((words >> 9) * 2 + 1).to(torch.float32) * 2.0**-24


class StepDraws:
    """The draws of one training step, numbered in the order the forward pass asks for them.

    The engine and the reference make the same calls in the same order, so draw ``k`` of a step
    is the same layer's noise in both.
    """

    def __init__(self, rng: CounterRNG, epoch: int, step: int):
        self.rng, self.epoch, self.step = rng, epoch, step
        self.draw = FIRST_FORWARD_DRAW

    def _next(self) -> int:
        self.draw += 1
        return self.draw - 1

    def normal(self, shape: Sequence[int], out: torch.Tensor | None = None) -> torch.Tensor:
        return self.rng.normal(shape, self.epoch, self.step, self._next(), out)

    def keep_mask(self, shape: Sequence[int], keep: float) -> torch.Tensor:
        return self.rng.keep_mask(shape, keep, self.epoch, self.step, self._next())


_ACTIVE: ContextVar[StepDraws | None] = ContextVar("zoo_step_draws", default=None)


@contextmanager
def drawing(draws: StepDraws) -> Iterator[StepDraws]:
    """Random layers run inside the block draw from ``draws``: how the per-model reference hands a
    step's counters to standard modules. Outside such a block they use torch's global RNG."""
    token = _ACTIVE.set(draws)
    try:
        yield draws
    finally:
        _ACTIVE.reset(token)


def active_draws() -> StepDraws | None:
    return _ACTIVE.get()


class CounterDropout(nn.Dropout):
    """``nn.Dropout`` whose training mask comes from the active step's draws, where there are any.

    The mask scales as the engine's: ``x * (keep_mask / (1 - p))``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        draws = active_draws()
        if draws is None or not self.training or self.p == 0:
            return super().forward(x)
        keep = 1 - self.p
        return x * (draws.keep_mask(tuple(x.shape), keep)[0].to(x.dtype) / keep)
