"""Philox-4x32-10 on CPU as compiled loops (numba): the words and the normals' uniforms of
:mod:`zoo_dataset.counter_rng`, exact uint64 arithmetic.

The loops over blocks are branch-free, with the rounds inlined, so LLVM vectorizes them (AVX2 /
AVX-512 32x32-bit products): 7x faster than a scalar loop with the tail inside it, and ~100x
faster than the int64 tensor passes CUDA runs. Kept apart so that importing the toolkit (a store
reader) does not load numba.
"""

from __future__ import annotations

import numba
import numpy as np

from .counter_rng import MASK32, PHILOX_M, PHILOX_W, ROUNDS

_M0, _M1 = np.uint64(PHILOX_M[0]), np.uint64(PHILOX_M[1])
_W0, _W1 = np.uint64(PHILOX_W[0]), np.uint64(PHILOX_W[1])
_LOW, _SHIFT = np.uint64(MASK32), np.uint64(32)


@numba.njit(cache=True, nogil=True, inline="always")
def philox_block(block, draw, step, epoch, key0, key1) -> tuple:
    """:func:`~zoo_dataset.counter_rng.philox4x32_10` of counter (block, draw, step, epoch), uint64 words."""
    c0, c1, c2, c3, k0, k1 = block, draw, step, epoch, key0, key1
    for _ in range(ROUNDS):
        p0, p1 = _M0 * c0, _M1 * c2
        c0, c1, c2, c3 = (p1 >> _SHIFT) ^ c1 ^ k0, p1 & _LOW, (p0 >> _SHIFT) ^ c3 ^ k1, p0 & _LOW
        k0, k1 = (k0 + _W0) & _LOW, (k1 + _W1) & _LOW
    return c0, c1, c2, c3


@numba.njit(cache=True, nogil=True, inline="always")
def _uniform(word) -> np.float32:
    """``(2 * (w >> 9) + 1) * 2**-24``: exact in float32."""
    return np.float32((word >> np.uint64(9)) * np.uint64(2) + np.uint64(1)) * np.float32(2.0**-24)


@numba.njit(cache=True, nogil=True)
def words_cpu(k0: np.ndarray, k1: np.ndarray, draw: int, step: int, epoch: int, out: np.ndarray) -> None:
    """Words into ``out`` [M, n] (int64): element ``i`` = word ``i % 4`` of block ``i // 4``."""
    n = out.shape[1]
    full = n // 4
    d, s, e = np.uint64(draw), np.uint64(step), np.uint64(epoch)
    for m in range(out.shape[0]):
        key0, key1 = np.uint64(k0[m]), np.uint64(k1[m])
        row = out[m]
        for block in range(full):
            c0, c1, c2, c3 = philox_block(np.uint64(block), d, s, e, key0, key1)
            row[4 * block], row[4 * block + 1] = np.int64(c0), np.int64(c1)
            row[4 * block + 2], row[4 * block + 3] = np.int64(c2), np.int64(c3)
        if n % 4:
            words = philox_block(np.uint64(full), d, s, e, key0, key1)
            for j in range(n % 4):
                row[4 * full + j] = np.int64(words[j])


@numba.njit(cache=True, nogil=True)
def pair_uniforms_cpu(k0: np.ndarray, k1: np.ndarray, draw: int, step: int, epoch: int, u1: np.ndarray,
                      u2: np.ndarray) -> None:
    """The uniforms of words ``2j`` and ``2j + 1`` into ``u1[m, j]`` and ``u2[m, j]`` (float32)."""
    pairs = u1.shape[1]
    full = pairs // 2
    d, s, e = np.uint64(draw), np.uint64(step), np.uint64(epoch)
    for m in range(u1.shape[0]):
        key0, key1 = np.uint64(k0[m]), np.uint64(k1[m])
        row1, row2 = u1[m], u2[m]
        for block in range(full):
            c0, c1, c2, c3 = philox_block(np.uint64(block), d, s, e, key0, key1)
            row1[2 * block], row2[2 * block] = _uniform(c0), _uniform(c1)
            row1[2 * block + 1], row2[2 * block + 1] = _uniform(c2), _uniform(c3)
        if pairs % 2:
            c0, c1, _, _ = philox_block(np.uint64(full), d, s, e, key0, key1)
            row1[2 * full], row2[2 * full] = _uniform(c0), _uniform(c1)




@numba.njit(cache=True, nogil=True)
def pair_uniforms_channels_last(k0: np.ndarray, k1: np.ndarray, draw: int, step: int, epoch: int, channels: int,
                                height: int, width: int, u1: np.ndarray, u2: np.ndarray) -> None:
    """:func:`pair_uniforms_cpu` of an output [B, C, H, W] per model (W a multiple of 4), written in
    the engine's grouped channels-last layout: ``u1`` / ``u2`` are [B * H * W / 2, M * C], row
    (b, h, w2) column m * C + c holding the uniforms of pair ((b * C + c) * H + h) * W / 2 + w2 of
    model m, so each normal lands where the layer uses it (no transposing copy). Vectorized over
    the M * C columns; the inputs are masked to 32 bits so that LLVM uses 32x32-bit products."""
    lanes, quarter = u1.shape[1], width // 4
    key0, key1, first = np.empty(lanes, np.uint64), np.empty(lanes, np.uint64), np.empty(lanes, np.uint64)
    for lane in range(lanes):  # lane = m * C + c
        key0[lane], key1[lane] = np.uint64(k0[lane // channels]), np.uint64(k1[lane // channels])
        first[lane] = np.uint64((lane % channels) * height)
    d, s, e = np.uint64(draw), np.uint64(step), np.uint64(epoch)
    for row in range(u1.shape[0] // (2 * quarter)):  # row = b * H + h
        base = np.uint64((row // height) * channels * height + row % height)  # b * C * H + h
        for w4 in range(quarter):
            even = (row * quarter + w4) * 2
            e1, e2, o1, o2 = u1[even], u2[even], u1[even + 1], u2[even + 1]
            for lane in range(lanes):  # block ((b * C + c) * H + h) * W / 4 + w4: pairs w2 = 2 w4, 2 w4 + 1
                block = ((first[lane] + base) * np.uint64(quarter) + np.uint64(w4)) & _LOW
                c0, c1, c2, c3 = philox_block(block, d, s, e, key0[lane] & _LOW, key1[lane] & _LOW)
                e1[lane], e2[lane] = _uniform(c0), _uniform(c1)
                o1[lane], o2[lane] = _uniform(c2), _uniform(c3)
