"""Console lines, metrics.jsonl reading/rewinding, and the finite-number rule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from cs336_basics.training.metrics import finite_number, format_train_line, hms, peak_flops, read_records, rewind_jsonl

REPO = Path(__file__).resolve().parents[1]


def test_train_line_has_the_course_shape():
    rec = {"step": 100, "loss": 6.23412, "lr": 3e-5, "iter_time_ms": 145.26, "tokens_per_sec": 113024.4, "mfu": None}
    assert format_train_line(rec) == (
        "Iter    100 | Loss: 6.2341 | LR: 3.00e-05 | Time: 145.3ms | Tokens/sec: 113024 | MFU: n/a"
    )
    assert format_train_line({**rec, "mfu": 0.412, "eta_s": 3725}).endswith("| MFU: 41.2% | ETA 1:02:05")


def test_hms_and_finite_numbers():
    assert hms(0) == "0:00:00" and hms(59.9) == "0:00:59" and hms(3600 * 25 + 61) == "25:01:01" and hms(-5) == "0:00:00"
    assert finite_number(2) == 2.0 and finite_number(1.5) == 1.5
    assert finite_number(True) is None and finite_number("1") is None and finite_number(math.nan) is None


def test_read_records_skips_torn_and_non_object_lines(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1}\n\n[1, 2]\n{"step": 2}\n{"step": 3, "lo')
    assert [r["step"] for r in read_records(p)] == [1, 2]


def test_rewind_drops_what_came_after_the_checkpoint(tmp_path):
    p = tmp_path / "metrics.jsonl"
    lines = [{"step": s, "kind": "train"} for s in (10, 20, 30, 40)] + [{"kind": "setup"}]
    p.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 50, "to')
    assert rewind_jsonl(p, 20) == 3  # steps 30 and 40, and the torn line
    assert [json.loads(line) for line in p.read_text().splitlines()] == [lines[0], lines[1], lines[4]]
    assert rewind_jsonl(tmp_path / "missing.jsonl", 5) == 0


def test_no_mfu_on_a_cpu():
    assert peak_flops(torch.device("cpu"), "fp32") is None


def test_one_peak_table_for_the_trainer_and_the_benchmark(monkeypatch):
    """training.metrics.PEAK_TFLOPS is the one table: the MFU of the training program and of
    scripts/bench_model.py (which used to keep a copy of its own) read the same peaks."""
    import importlib.util

    from cs336_basics.training import metrics

    spec = importlib.util.spec_from_file_location("bench_model", REPO / "scripts" / "bench_model.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert not [k for k in vars(bench) if k.startswith("PEAK")]  # no table of its own
    cuda = torch.device("cuda")
    for gpu, bf16 in (("NVIDIA H200", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A10G", 125.0)):
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda _device, gpu=gpu: gpu)
        assert metrics.peak_flops(cuda, "bf16") == bf16 * 1e12 and bench.peak_tflops(cuda, None) == bf16
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _device: "Tesla T4")
    assert metrics.peak_flops(cuda, "bf16") is None and bench.peak_tflops(cuda, None) is None
    assert bench.peak_tflops(cuda, 100.0) == 100.0
