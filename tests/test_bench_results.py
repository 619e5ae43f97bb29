"""bench/results.py: the README's results table is written from bench/measured.json, and only so."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from tests.helpers import ROOT

_spec = importlib.util.spec_from_file_location("bench_results", ROOT / "bench" / "results.py")
results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(results)


@pytest.fixture()
def copies(tmp_path):
    """A copy of the README and of bench/measured.json, and an empty runs folder."""
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copy(ROOT / "bench" / "measured.json", tmp_path / "measured.json")
    (tmp_path / "runs").mkdir()
    return tmp_path


def _write(tmp, argv=()):
    return results.main(["--write-readme", "--runs", str(tmp / "runs"), "--measured", str(tmp / "measured.json"),
                         "--readme", str(tmp / "README.md"), *argv])


def test_committed_readme_table_is_what_the_script_writes_and_a_second_run_changes_nothing(copies):
    before = (copies / "README.md").read_text()
    assert _write(copies) == 0
    assert (copies / "README.md").read_text() == before  # nobody edited the table by hand
    assert _write(copies) == 0
    assert (copies / "README.md").read_text() == before
    assert (copies / "measured.json").read_bytes() == (ROOT / "bench" / "measured.json").read_bytes()


def test_a_full_run_replaces_its_recipes_record_and_a_smoke_run_does_not(copies):
    record = {"recipe": "reviews_lstm", "data": "rotten_tomatoes", "metric": "test_accuracy", "value": 0.7612,
              "wall_seconds": 200.4, "command": "python recipes/reviews_lstm.py --epochs 9", "export": "/x/1",
              "details": {"parameters": 1234, "validation_accuracy": 0.75}}
    smoke = {**record, "recipe": "fashion_mnist_mlp", "value": 0.1, "command": "python recipes/fashion_mnist_mlp.py --smoke"}
    for r in (record, smoke):
        (copies / "runs" / r["recipe"]).mkdir()
        (copies / "runs" / r["recipe"] / "results.json").write_text(json.dumps(r))
    assert _write(copies) == 0
    readme = (copies / "README.md").read_text()
    assert ("| `reviews_lstm` | rotten_tomatoes | test_accuracy | 0.7612 | parameters 1234, validation_accuracy 0.75 "
            "| 3 min 20 s | `python recipes/reviews_lstm.py --epochs 9` |") in readme
    assert "0.1000" not in readme and "| 0.8920 |" in readme  # the smoke run left the MLP row alone
    measured = {r["recipe"]: r for r in json.loads((copies / "measured.json").read_text())["runs"]}
    assert measured["reviews_lstm"] == {k: v for k, v in record.items() if k != "export"}  # no "transcribed"
    assert "`reviews_lstm`" not in readme.split("No `results.json` was kept")[1].split("\n")[0]
    again = readme
    assert _write(copies) == 0 and (copies / "README.md").read_text() == again


def test_readme_without_markers_says_what_it_needs(copies):
    (copies / "README.md").write_text("# no table here\n")
    with pytest.raises(SystemExit, match="needs one line"):
        _write(copies)


def _figure_spellings(record):
    value = record["value"]
    if record["metric"].endswith("bleu"):
        return {f"BLEU {100 * value:.1f}"}
    if record["metric"].endswith("bits_per_byte"):
        return {f"{value:.3f}"}
    return {f"{100 * value:.1f}%", f"{100 * value:.2f}%"}  # accuracy, exact match


def test_every_recipe_docstring_states_its_measured_figure():
    measured = json.loads((ROOT / "bench" / "measured.json").read_text())["runs"]
    assert sorted(r["recipe"] for r in measured) == sorted(p.stem for p in (ROOT / "recipes").glob("*.py"))
    for record in measured:
        source = (ROOT / "recipes" / f"{record['recipe']}.py").read_text()
        doc = source.split('"""')[1]
        assert "Measured" in doc and "Expect" not in doc and "not measured" not in doc, record["recipe"]
        assert any(s in doc for s in _figure_spellings(record)), (record["recipe"], _figure_spellings(record))
