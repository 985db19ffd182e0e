"""The zoo registry holds every zoo of the paper's Appendix A with its published settings."""

import pytest

from zoo_dataset.errors import UnknownZooError, ZooSpecError
from zoo_dataset.specs import get_spec, registry

# Table 4 of the paper (LR VD / LR MP / WD per Seed zoo); FMNIST's "3e4" is the typo for 3e-4.
TABLE4_SEED = {
    "mnist_seed": ("cnn_s", "tanh", 3e-4, 1e-3, 0.0),
    "svhn_seed": ("cnn_s", "tanh", 3e-3, 1e-3, 0.0),
    "fmnist_seed": ("cnn_s", "tanh", 3e-4, 1e-3, 0.0),
    "cifar10_l_seed": ("cnn_l", "gelu", 1e-5, 1e-4, 1e-2),
    "cifar10_s_seed": ("cnn_s", "gelu", 5e-6, 1e-4, 1e-2),
    "usps_seed": ("cnn_s", "tanh", 3e-4, 1e-3, 1e-3),
    "stl10_l_seed": ("cnn_l", "tanh", 1e-4, 1e-3, 1e-3),
    "stl10_s_seed": ("cnn_s", "tanh", 1e-4, 1e-3, 1e-3),
}
GRID_ZOOS = ["mnist_fixed", "mnist_random", "fmnist_fixed", "fmnist_random", "cifar10_l_fixed", "cifar10_l_random"]


def test_all_appendix_a_zoos_are_registered():
    zoos = registry()
    assert set(TABLE4_SEED) | set(GRID_ZOOS) <= set(zoos)
    assert len(set(TABLE4_SEED) | set(GRID_ZOOS)) == 14


@pytest.mark.parametrize("name", sorted(TABLE4_SEED))
def test_seed_zoos_follow_table4(name):
    spec = get_spec(name)
    arch, activation, lr_vd, lr_mp, wd = TABLE4_SEED[name]
    assert spec.architecture == arch and spec.variant == "seed"
    assert spec.factors.activation == (activation,) and spec.factors.optimizer == ("adam",)
    assert spec.vd.lr == pytest.approx(lr_vd) and spec.mp.lr == pytest.approx(lr_mp)
    assert spec.factors.weight_decay == (wd,)
    assert spec.mp.epochs == 15 and spec.vd.epochs == 25 and spec.epochs == 50 and spec.batch_size == 10
    assert spec.mp.levels == tuple(round(0.1 * i, 6) for i in range(1, 10))
    seeds = [m.seed for m in spec.models()]
    assert seeds == list(range(1, 1001))


def test_fixed_seed_zoo_crosses_grid_with_seeds_1_to_10():
    spec = get_spec("mnist_fixed")
    models = spec.models()
    assert len(models) == spec.size == 2560
    assert {m.seed for m in models} == set(range(1, 11))
    configs = {(m.activation, m.optimizer, m.lr, m.weight_decay, m.dropout, m.init) for m in models}
    assert len(configs) == 256


def test_random_seed_zoo_draws_reproducible_distinct_seeds():
    spec = get_spec("mnist_random")
    a, b = spec.models(), get_spec("mnist_random").all_models()
    assert [m.seed for m in a] == [m.seed for m in b]
    assert len({m.seed for m in a}) > 0.99 * len(a)
    assert all(0 <= m.seed < 1_000_000 for m in a)


def test_unknown_zoo_suggests_close_names():
    with pytest.raises(UnknownZooError, match="did you mean mnist_seed"):
        get_spec("mnist_sed")


@pytest.mark.parametrize("levels", [[0.0], [1.0], [120], [-5]])
def test_sparsity_level_out_of_range_is_rejected(levels):
    with pytest.raises(ZooSpecError, match="out of range"):
        get_spec("digits_seed").with_overrides(mp_levels=levels)


def test_percent_levels_are_accepted_and_subset_checked():
    spec = get_spec("digits_seed").with_overrides(mp_levels=[50, 90], model_subset=[3, 1])
    assert spec.mp.levels == (0.5, 0.9)
    assert [m.model_id for m in spec.models()] == [1, 3]
    with pytest.raises(ZooSpecError, match="out of range"):
        get_spec("digits_seed").with_overrides(model_subset=[99])


def test_spec_round_trips_through_dict():
    from zoo_dataset.specs import ZooSpec

    spec = get_spec("cifar10_l_fixed").with_overrides(model_subset=[0, 5])
    assert ZooSpec.from_dict(spec.to_dict()) == spec
