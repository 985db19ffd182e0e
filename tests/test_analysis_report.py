"""zoo-report end to end on synthetic stores: complete, partial, and missing."""

from __future__ import annotations

import pytest
from _analysis_store import synthetic_store
from click.testing import CliRunner

from analysis.cli import main
from analysis.markdown import to_markdown
from analysis.report import build_report, write_report


@pytest.fixture(scope="module")
def full_store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("full"), n_models=4, vd_epochs=4)


def test_report_writes_every_table_and_figure(full_store, tmp_path):
    report = build_report(full_store)
    path = write_report(report, tmp_path)
    stems = {t.key for t in report.tables}
    assert stems == {
        "table5_mp_performance",
        "table8_mp_layer_sparsity",
        "table6_vd_performance",
        "table7_vd_layer_sparsity",
        "table1_agreement",
        "table2_correlation",
    }
    assert set(report.figures) == {
        "figure2_trajectories",
        "figure3_frequency",
        "figure4_layer_size",
        "figure5_acc_vs_sparsity",
    }
    text = path.read_text()
    for stem in [*stems, *report.figures]:
        assert stem in text
        suffix = ".csv" if stem.startswith("table") else ".png"
        assert (tmp_path / f"{stem}{suffix}").stat().st_size > 0
    assert not report.missing


def test_partial_store_says_what_is_missing(tmp_path):
    store = synthetic_store(tmp_path / "store", n_models=3, populations=("original", "vd"), vd_epochs=3)
    report = build_report(store)
    assert not any(t.key.startswith(("table5", "table8")) for t in report.tables)
    assert any("no mp population" in m for m in report.missing)
    assert "figure5_acc_vs_sparsity" in report.figures


def test_cli_prints_summary_and_clean_errors(full_store, tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        main, ["--zoo", str(full_store.zoo_dir), "--out", str(tmp_path / "r"), "--sparsity", "70"]
    )
    assert result.exit_code == 0, result.output
    assert "Table 2" in result.output and (tmp_path / "r" / "report.md").exists()
    missing = runner.invoke(main, ["--zoo", "nope", "--root", str(tmp_path)])
    assert missing.exit_code == 2 and "error:" in missing.output and "Traceback" not in missing.output


def test_one_model_shows_its_values_without_a_spread(tmp_path):
    """A population of one model has no std: the summary, the tables and the card print its
    values alone, never "(0.0)", which would claim a spread of zero over models."""
    from builders.stages.card import _statistics_rows
    from zoo_dataset.statistics import last_epoch_summary, percent

    store = synthetic_store(tmp_path / "store", n_models=1)
    states = {p: store.states(p) for p in store.populations}
    row = last_epoch_summary(states).iloc[0]
    assert percent(row.test_acc_mean, row.test_acc_std) == f"{100 * row.test_acc_mean:.1f}"
    assert all("(" not in line for line in _statistics_rows(states))
    report = build_report(store)
    markdown = "\n".join(to_markdown(t.frame) for t in report.tables)
    assert "(0.0)" not in markdown and "(n/a)" not in markdown
    two = synthetic_store(tmp_path / "two", n_models=2)
    row = last_epoch_summary({p: two.states(p) for p in two.populations}).iloc[0]
    assert percent(row.test_acc_mean, row.test_acc_std).endswith(")")
