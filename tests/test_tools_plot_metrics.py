"""plot_metrics: CSV always works; PNG needs the optional matplotlib; a clear message without it."""

import csv
import json
import sys

import pytest

from cs336_basics.tools import plot_metrics
from cs336_basics.utils.errors import run_cli


def _write_run(run_dir, half_written_tail=True):
    run_dir.mkdir(parents=True, exist_ok=True)
    recs = []
    for step in range(10, 101, 10):
        recs.append(
            {
                "type": "train",
                "step": step,
                "tokens": step * 64,
                "time_s": step * 0.5,
                "loss": 6.0 - step / 50,
                "lr": 1e-3,
                "grad_norm": 1.0,
                "tokens_per_sec": 128.0,
                "iter_time_ms": 500.0,
            }
        )
        if step % 50 == 0:
            recs.append(
                {
                    "type": "eval",
                    "step": step,
                    "tokens": step * 64,
                    "time_s": step * 0.5 + 0.1,
                    "train_loss": 6.0 - step / 50,
                    "val_loss": 6.1 - step / 50,
                    "val_perplexity": 1.0,
                    "val_accuracy": 0.1,
                }
            )
    recs.append({"type": "event", "step": 55, "event": "nonfinite", "detail": "x"})
    recs.append(
        {
            "type": "final",
            "step": 100,
            "tokens": 6400,
            "time_s": 50.2,
            "train_loss": 4.0,
            "val_loss": 4.1,
            "val_perplexity": 60.3,
            "val_accuracy": 0.2,
        }
    )
    lines = [json.dumps(r) for r in recs]
    text = "\n".join(lines) + "\n" + ('{"type": "train", "st' if half_written_tail else "")
    (run_dir / "metrics.jsonl").write_text(text)


def test_csv(tmp_path, capsys):
    run = tmp_path / "run1"
    _write_run(run)
    out = tmp_path / "curves.csv"
    assert run_cli(plot_metrics.main, [str(run), "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [int(r["step"]) for r in rows] == list(range(10, 101, 10))
    by_step = {int(r["step"]): r for r in rows}
    assert float(by_step[50]["val_loss"]) == pytest.approx(5.1)
    assert by_step[40]["val_loss"] == ""
    assert float(by_step[100]["train_loss"]) == pytest.approx(4.0)
    assert float(by_step[20]["time_s"]) == pytest.approx(10.0)
    assert {r["run"] for r in rows} == {"run1"}
    assert "Wrote 10 rows" in capsys.readouterr().out


def test_read_metrics_parses_curves(tmp_path):
    _write_run(tmp_path / "r")
    c = plot_metrics.read_metrics(tmp_path / "r" / "metrics.jsonl")
    assert len(c.train) == 10
    assert [p[0] for p in c.val] == [50, 100]  # final at the same step as the last eval is not doubled


def test_missing_metrics_is_one_line_error(tmp_path, capsys):
    assert run_cli(plot_metrics.main, [str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "metrics.jsonl" in err and err.count("\n") == 1


def test_missing_matplotlib_message(tmp_path, capsys, monkeypatch):
    _write_run(tmp_path / "r")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    assert run_cli(plot_metrics.main, [str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "matplotlib is not installed" in err and "uv sync --extra plot" in err and "Traceback" not in err
    assert not (tmp_path / "r" / "curves.png").exists()


def test_png(tmp_path):
    import matplotlib  # noqa: F401  (a dev dependency: this test must run, not skip)

    _write_run(tmp_path / "a")
    _write_run(tmp_path / "b", half_written_tail=False)
    out = tmp_path / "img" / "curves.png"
    assert run_cli(plot_metrics.main, [str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_out_csv_writes_the_table(tmp_path, capsys):
    """--out x.csv writes the CSV (it used to hand 'csv' to matplotlib and crash with a traceback)."""
    _write_run(tmp_path / "r")
    out = tmp_path / "t" / "curves.csv"
    assert run_cli(plot_metrics.main, [str(tmp_path / "r"), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [int(r["step"]) for r in rows] == list(range(10, 101, 10))
    assert float({int(r["step"]): r for r in rows}[100]["val_loss"]) == pytest.approx(4.1)
    assert f"Wrote 10 rows to {out}" in capsys.readouterr().out
    assert not (tmp_path / "r" / "curves.png").exists()


@pytest.mark.parametrize("suffix,magic", [(".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_out_other_image_formats(tmp_path, suffix, magic):
    _write_run(tmp_path / "r")
    out = tmp_path / f"curves{suffix}"
    assert run_cli(plot_metrics.main, [str(tmp_path / "r"), "--out", str(out)]) == 0
    assert out.read_bytes().startswith(magic)


@pytest.mark.parametrize("name", ["curves.txt", "curves"])
def test_out_unknown_suffix_is_one_line_error(tmp_path, capsys, name):
    _write_run(tmp_path / "r")
    out = tmp_path / name
    assert run_cli(plot_metrics.main, [str(tmp_path / "r"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out ") and name in err and ".csv" in err and err.count("\n") == 1
    assert not out.exists()


def test_unwritable_out_is_one_line_error(tmp_path, capsys):
    _write_run(tmp_path / "r")
    (tmp_path / "afile").write_text("x")  # a file where a directory is needed
    for out in (tmp_path / "afile" / "c.csv", tmp_path / "afile" / "c.png"):
        assert run_cli(plot_metrics.main, [str(tmp_path / "r"), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --out ") and "afile" in err and err.count("\n") == 1
