"""zoo-report end to end on synthetic stores: complete, partial, and missing."""

from __future__ import annotations

import pytest
from _analysis_store import synthetic_store
from click.testing import CliRunner

from analysis.cli import main
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
