"""Console lines, metrics.jsonl reading/rewinding, and the finite-number rule."""

from __future__ import annotations

import json
import math

import torch

from cs336_basics.training.metrics import finite_number, format_train_line, hms, peak_flops, read_records, rewind_jsonl


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
