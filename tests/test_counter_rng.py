"""The counter-based generator: Philox-4x32-10 bit for bit, and the statistics of what it derives.

The oracle is an independent NumPy Philox (uint64 products, written from the published algorithm
with the key bumped after each round), checked first against Random123's known-answer vectors.
Inputs are fixed, so every statistic below is a fixed number: the tests cannot flake.
"""

from __future__ import annotations

import ast
import math
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats

from zoo_dataset import counter_rng, philox_cpu
from zoo_dataset.counter_rng import ORDER_DRAW, CounterRNG, StepDraws, box_muller, philox4x32_10
from zoo_dataset.methods import get_method

# Random123 tests/kat_vectors: counter[4], key[2] -> output[4]
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def numpy_philox(counter: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Philox-4x32-10 on uint64 arrays: counter [4, n], key [2, n] -> [4, n]."""
    m0, m1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
    w0, w1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
    low, shift = np.uint64(0xFFFFFFFF), np.uint64(32)
    x = [c.astype(np.uint64) for c in counter]
    k0, k1 = (k.astype(np.uint64) for k in key)
    for _ in range(10):
        p0, p1 = m0 * x[0], m1 * x[2]
        x = [(p1 >> shift) ^ x[1] ^ k0, p1 & low, (p0 >> shift) ^ x[3] ^ k1, p0 & low]
        k0, k1 = (k0 + w0) & low, (k1 + w1) & low
    return np.stack(x)


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_numpy_oracle_and_torch_core_give_random123_known_answers(counter, key, expected):
    oracle = numpy_philox(np.array(counter).reshape(4, 1), np.array(key).reshape(2, 1))[:, 0]
    assert [int(v) for v in oracle] == list(expected)
    out = philox4x32_10([torch.tensor([c]) for c in counter], [torch.tensor([k]) for k in key])
    assert [int(v) for v in out] == list(expected)


def test_words_follow_the_documented_key_and_counter_layout():
    seeds, streams = [7, 2**40 + 5], ["plain/0.000000", "vd/0.500000"]
    rng = CounterRNG(seeds, streams)
    n, epoch, step, draw = 23, 3, 17, 2  # 23 words: 6 blocks, the last one cut
    got = rng.words(n, epoch, step, draw).numpy()
    for m, (seed, stream) in enumerate(zip(seeds, streams, strict=True)):
        blocks = np.arange(6)
        counter = np.stack([blocks, np.full(6, draw), np.full(6, step), np.full(6, epoch)])
        key = np.stack([np.full(6, seed & 0xFFFFFFFF), np.full(6, zlib.crc32(f"{stream}/{seed >> 32}".encode()))])
        expected = numpy_philox(counter, key).T.reshape(-1)[:n]  # element i = word i % 4 of block i // 4
        np.testing.assert_array_equal(got[m], expected.astype(np.int64))


def test_cpu_loop_and_tensor_ops_give_the_same_words():
    """CPU runs the compiled loop, CUDA the int64 tensor ops: here both run on CPU, bit for bit."""
    rng = CounterRNG([0, 6, 2**33 + 1, 2**32 - 1], ["vd/0.000000", "mp/0.500000", "plain/0.000000", "vd/0.000000"])
    for n, epoch, step, draw in [(1, 1, 0, 0), (7, 2, 5, 1), (4096 + 3, 25, 4999, 6), (10, 2**32 - 1, 2**32 - 1, 3)]:
        assert torch.equal(rng.words(n, epoch, step, draw), rng._tensor_words(n, epoch, step, draw))
    for n in (2000, 2001, 2002):  # normals: the last block whole, a pair cut, a block cut
        # every step of the transform is one correctly rounded float32 operation: the same bits
        assert torch.equal(rng.normal((n,), 3, 2, 1), rng._tensor_normals(n, 3, 2, 1))


@pytest.mark.parametrize("shape", [(7,), (3, 5, 5), (2, 3, 4, 6)])
def test_normals_drawn_into_a_strided_view_are_the_same_numbers(shape):
    """The engine draws straight into a layer's layout (the model axis inside): same numbers, other
    places, whether a Box-Muller pair stays within the last axis (even length) or crosses it."""
    rng = CounterRNG([4, 11, 2**35], ["vd/0.000000"] * 3)
    layer = torch.full((*shape[1:], 3, shape[0]), float("nan"))  # model axis second to last
    view = layer.movedim((-2, -1), (0, 1))  # [M, *shape]
    rng.normal(shape, 2, 7, 1, out=view)
    assert torch.equal(view, rng.normal(shape, 2, 7, 1))


def test_normals_drawn_in_the_engines_conv_layout_are_the_same_numbers():
    """Conv outputs [B, M * C, H, W] in channels-last memory get their normals from a compiled pass
    in that order, bit for bit the numbers of the general path; other widths take the general path."""
    m, b, c, h, w = 3, 2, 6, 5, 8
    rng = CounterRNG([4, 11, 2**35], ["vd/0.000000"] * 3)
    for width in (w, 6):  # 6: a block's pairs cross rows, the general path draws
        layer = torch.full((b, m * c, h, width), float("nan")).contiguous(memory_format=torch.channels_last)
        view = layer.unflatten(1, (m, c)).transpose(0, 1)  # [M, B, C, H, W]
        rng.normal((b, c, h, width), 2, 7, 1, out=view)
        assert torch.equal(view, rng.normal((b, c, h, width), 2, 7, 1))


def test_box_muller_is_within_a_few_ulp_of_the_exact_transform():
    """The series and the exact integer range reductions against float64 ``log``/``cos``/``sin``,
    over random words and the extreme ones (u1 and u2 at their ends, u2 at every quarter turn)."""
    words = torch.randint(0, 2**32, (2, 100_000), dtype=torch.int64, generator=torch.Generator().manual_seed(0))
    edges = torch.tensor([0, 511, 512, 2**31, 2**32 - 512, 2**32 - 1] + [k * 2**30 + d for k in range(4)
                                                                          for d in (-512, 0, 511, 512)])
    edges = edges.clamp(0, 2**32 - 1)
    w0 = torch.cat([words[0], edges, torch.full_like(edges, 2**31)])
    w1 = torch.cat([words[1], torch.full_like(edges, 2**30), edges])
    z0, z1 = box_muller(w0, w1)
    u1, u2 = (((w >> 9) * 2 + 1).double() * 2.0**-24 for w in (w0, w1))
    radius = torch.sqrt(-2 * torch.log(u1))
    for got, exact in ((z0, radius * torch.cos(2 * math.pi * u2)), (z1, radius * torch.sin(2 * math.pi * u2))):
        error = (got.double() - exact).abs() / radius.clamp(min=1e-3)
        assert error.max() < 4 * 2.0**-23


def test_a_model_draws_the_same_numbers_alone_as_in_a_group():
    group = CounterRNG([5, 9, 12], ["vd/0.000000", "vd/0.000000", "masked/0.500000"])
    alone = CounterRNG([9], ["vd/0.000000"])
    shape = (3, 4, 5, 5)
    assert torch.equal(group.words(301, 2, 4, 1)[1], alone.words(301, 2, 4, 1)[0])
    assert torch.equal(group.uniform(shape, 2, 4, 1)[1], alone.uniform(shape, 2, 4, 1)[0])
    assert torch.equal(group.keep_mask(shape, 0.7, 2, 4, 1)[1], alone.keep_mask(shape, 0.7, 2, 4, 1)[0])
    assert torch.equal(group.permutation(97, 3)[1], alone.permutation(97, 3)[0])
    assert torch.equal(group.normal(shape, 2, 4, 1)[1], alone.normal(shape, 2, 4, 1)[0])


def test_uniforms_are_uniform_on_the_open_interval():
    u = CounterRNG([1], ["plain/0.000000"]).uniform((200_000,), 1, 0, 1)[0].double().numpy()
    assert u.min() > 0.0 and u.max() < 1.0
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    counts = np.histogram(u, bins=64, range=(0, 1))[0]
    assert stats.chisquare(counts).pvalue > 1e-3


def test_normals_have_standard_moments_and_distribution():
    z = CounterRNG([3], ["vd/0.000000"]).normal((200_001,), 1, 5, 1)[0].double().numpy()  # odd: a cut pair
    assert z.shape == (200_001,) and np.isfinite(z).all()
    n = len(z)
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / n)
    assert abs(stats.skew(z)) < 5 * np.sqrt(6 / n)
    assert abs(stats.kurtosis(z)) < 5 * np.sqrt(24 / n)
    assert stats.kstest(z, "norm").pvalue > 1e-3


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.double().numpy().ravel(), b.double().numpy().ravel())[0, 1])


def test_no_correlation_between_models_steps_draws_or_stages():
    n = 100_000
    bound = 5 / np.sqrt(n)
    rng = CounterRNG([1, 2], ["vd/0.000000", "vd/0.000000"])
    u = rng.uniform((n,), 1, 1, 1)
    assert abs(_corr(u[0], u[1])) < bound  # adjacent seeds
    assert abs(_corr(u[0], rng.uniform((n,), 1, 2, 1)[0])) < bound  # next step
    assert abs(_corr(u[0], rng.uniform((n,), 2, 1, 1)[0])) < bound  # next epoch
    assert abs(_corr(u[0], rng.uniform((n,), 1, 1, 2)[0])) < bound  # next draw
    other_stage = CounterRNG([1], ["masked/0.000000"]).uniform((n,), 1, 1, 1)
    assert abs(_corr(u[0], other_stage[0])) < bound
    assert abs(_corr(u[0, :-1], u[0, 1:])) < bound  # neighbouring elements
    z = rng.normal((n,), 1, 1, 1)
    assert abs(_corr(z[0, 0::2], z[0, 1::2])) < 5 / np.sqrt(n / 2)  # the two halves of a Box-Muller pair


def test_keep_masks_keep_at_the_asked_rate():
    mask = CounterRNG([4], ["plain/0.000000"]).keep_mask((100_000,), 0.3, 1, 0, 1)
    assert mask.dtype == torch.bool
    assert stats.binomtest(int(mask.sum()), mask.numel(), 0.3).pvalue > 1e-3
    assert bool(CounterRNG([4], ["plain/0.000000"]).keep_mask((1000,), 1.0, 1, 0, 1).all())


def test_permutations_are_permutations_that_differ_by_model_and_epoch():
    rng = CounterRNG([1, 2], ["plain/0.000000"] * 2)
    perm = rng.permutation(1000, 1)
    assert perm.dtype == torch.int64
    for row in perm:
        assert torch.equal(row.sort().values, torch.arange(1000))
    assert not torch.equal(perm[0], perm[1])
    assert not torch.equal(perm[0], rng.permutation(1000, 2)[0])
    # every position is equally likely to receive any element: first elements over many epochs
    firsts = torch.stack([rng.permutation(10, e)[0, 0] for e in range(1, 2001)]).numpy()
    assert stats.chisquare(np.bincount(firsts, minlength=10)).pvalue > 1e-3


def test_step_draws_number_the_forward_passes_uses_in_order():
    rng = CounterRNG([8], ["vd/0.000000"])
    draws = StepDraws(rng, epoch=2, step=9)
    first, second = draws.normal((4, 6)), draws.keep_mask((50,), 0.5)
    assert torch.equal(first, rng.normal((4, 6), 2, 9, ORDER_DRAW + 1))
    assert torch.equal(second, rng.keep_mask((50,), 0.5, 2, 9, ORDER_DRAW + 2))


def test_counters_outside_32_bits_and_negative_seeds_are_refused():
    with pytest.raises(ValueError, match="step"):
        CounterRNG([1], ["plain/0.000000"]).words(4, 1, 2**32, 1)
    with pytest.raises(ValueError, match="non-negative"):
        CounterRNG([-1], ["plain/0.000000"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_integer_core_gives_the_same_bits_on_cuda():
    cpu, cuda = CounterRNG([3, 4], ["vd/0.000000"] * 2), CounterRNG([3, 4], ["vd/0.000000"] * 2, "cuda")
    assert torch.equal(cpu.words(10_001, 1, 2, 3), cuda.words(10_001, 1, 2, 3).cpu())
    assert torch.equal(cpu.keep_mask((999,), 0.6, 1, 2, 3), cuda.keep_mask((999,), 0.6, 1, 2, 3).cpu())
    assert torch.equal(cpu.permutation(5000, 4), cuda.permutation(5000, 4).cpu())
    torch.testing.assert_close(cpu.normal((999,), 1, 2, 3), cuda.normal((999,), 1, 2, 3).cpu(), rtol=1e-5, atol=1e-5)


def test_methods_draw_from_their_own_streams_and_mp_local_from_mp():
    streams = {name: get_method(name).noise_stream() for name in ("original", "mp", "vd", "mp_local")}
    assert len({streams["original"], streams["mp"], streams["vd"]}) == 3
    assert streams["mp_local"] == streams["mp"]  # the pair differs only in its mask, not in its data order
    job = SimpleNamespace(seed=9, key=SimpleNamespace(level=0.5))
    mp, local, vd = (CounterRNG.for_jobs([job], streams[name]) for name in ("mp", "mp_local", "vd"))
    assert torch.equal(mp.permutation(100, 1), local.permutation(100, 1))
    assert not torch.equal(mp.permutation(100, 1), vd.permutation(100, 1))


def test_readers_do_not_load_the_compiler():
    """numba loads with the first CPU draw, not with the loaders or the architectures."""
    code = "import sys, loaders, zoo_dataset.architectures, zoo_dataset.counter_rng; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_data_orders_sorted_in_slices_of_models_are_the_same(monkeypatch):
    rng = CounterRNG(list(range(5)), ["plain/0.000000"] * 5)
    whole = rng.permutation(300, 2)
    monkeypatch.setattr(counter_rng, "ORDER_SLICE_KEYS", 600)  # two models per slice
    assert torch.equal(rng.permutation(300, 2), whole)


def test_the_compiled_loops_and_the_tensor_form_share_constants_without_importing_each_other():
    """philox_cpu once imported its constants back from counter_rng, which imports it: an import circle."""
    tree = ast.parse(Path(philox_cpu.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"__future__", "philox_constants"}
