"""Learning curves from a run directory: ``python -m cs336_basics.tools.plot_metrics RUN_DIR``.

Reads ``RUN_DIR/metrics.jsonl`` (written by the trainer) and draws train/val loss against optimizer
steps and against wall-clock time -- the two views the course's experiment log asks for.

    uv run --extra plot python -m cs336_basics.tools.plot_metrics runs/quickstart/model   # -> runs/quickstart/model/curves.png
    uv run python -m cs336_basics.tools.plot_metrics runs/quickstart/model --csv curves.csv  # no matplotlib needed

``--out`` picks the format from its suffix: ``.csv`` writes the table (no matplotlib needed), an
image suffix matplotlib writes (``.png``, ``.pdf``, ``.svg``, ...) draws the figure.

Several run directories may be given to overlay runs (e.g. a learning-rate sweep); each gets its
directory name as the legend label. matplotlib is an optional extra, imported only when drawing.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cs336_basics.training.metrics import finite_number, read_records
from cs336_basics.utils.errors import UserError, os_reason, run_cli


class MetricsError(UserError, ValueError):
    """A missing/unreadable metrics file, or missing plotting dependency."""


MATPLOTLIB_MISSING = "matplotlib is not installed: run `uv sync --extra plot` (or `uv run --extra plot python -m cs336_basics.tools.plot_metrics ...`), or use --csv"


# Formats matplotlib's Agg backend writes (fixed list: matplotlib is optional, so it can't be asked).
IMAGE_SUFFIXES = (".png", ".pdf", ".svg", ".svgz", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff", ".webp", ".pgf")


def output_kind(out: str | os.PathLike) -> str:
    """``"csv"`` or ``"image"`` from the suffix of ``--out``; anything else is a one-line error."""
    suffix = Path(out).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    raise MetricsError(
        f"--out {out}: unknown file type {suffix or '(no suffix)'!r}; use .csv for the table "
        "or an image suffix (.png, .pdf, .svg, ...)"
    )


@dataclass
class Curves:
    """Loss curves of one run: lists of (step, time_s, loss)."""

    name: str
    train: list[tuple[int, float, float]] = field(default_factory=list)  # per-iteration training loss
    val: list[tuple[int, float, float]] = field(default_factory=list)  # eval + final records
    eval_train: list[tuple[int, float, float]] = field(default_factory=list)  # eval-time train loss


def metrics_path(run: str | os.PathLike) -> Path:
    """``run`` may be the run directory or the metrics.jsonl file itself."""
    p = Path(run)
    if p.is_dir():
        p = p / "metrics.jsonl"
    if not p.is_file():
        raise MetricsError(f"{p}: no such file (expected the metrics.jsonl the trainer writes into --checkpoint_dir)")
    return p


def shortest_unique_names(dirs: Sequence[str | os.PathLike]) -> list[str]:
    """Labels for run directories: the shortest trailing paths that tell them apart
    (``runs/quickstart/model`` and ``runs/big/model`` -> ``quickstart/model`` and ``big/model``)."""
    parts = [Path(d).absolute().parts for d in dirs]
    names = []
    for i, p in enumerate(parts):
        k = 1
        while k < len(p) and any(q[-k:] == p[-k:] for j, q in enumerate(parts) if j != i):
            k += 1
        names.append(str(Path(*p[-k:])))
    return names


def read_metrics(run: str | os.PathLike) -> Curves:
    """Parse metrics.jsonl. Malformed lines (e.g. a half-written last line after a crash) are skipped."""
    path = metrics_path(run)
    name = path.parent.name or str(path.parent)
    curves = Curves(name=name)
    seen_any = False
    for rec in read_records(path):
        seen_any = True
        kind = rec.get("type")
        step = rec.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            continue
        t = finite_number(rec.get("time_s"))
        t = t if t is not None else float("nan")
        if kind == "train":
            loss = finite_number(rec.get("loss"))
            if loss is not None:
                curves.train.append((step, t, loss))
        elif kind in ("eval", "final"):
            vl = finite_number(rec.get("val_loss"))
            tl = finite_number(rec.get("train_loss"))
            # A final eval at the same step as the last periodic eval would duplicate a point.
            if vl is not None and not (curves.val and curves.val[-1][0] == step):
                curves.val.append((step, t, vl))
            if tl is not None and not (curves.eval_train and curves.eval_train[-1][0] == step):
                curves.eval_train.append((step, t, tl))
    if not seen_any:
        raise MetricsError(f"{path}: no metrics records in it yet")
    return curves


def write_csv(curves: Sequence[Curves], out: str | os.PathLike) -> int:
    """One row per (run, step): step, time_s, train_loss, val_loss (blank when not measured). Returns rows."""
    rows = []
    for c in curves:
        by_step: dict[int, dict] = {}
        for step, t, loss in c.train:
            by_step.setdefault(step, {"time_s": t})["train_loss"] = loss
        for step, t, loss in c.eval_train:
            by_step.setdefault(step, {"time_s": t}).setdefault("train_loss", loss)
        for step, t, loss in c.val:
            r = by_step.setdefault(step, {"time_s": t})
            r["val_loss"] = loss
        for step in sorted(by_step):
            r = by_step[step]
            rows.append([c.name, step, _fmt(r.get("time_s")), _fmt(r.get("train_loss")), _fmt(r.get("val_loss"))])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["run", "step", "time_s", "train_loss", "val_loss"])
        w.writerows(rows)
    return len(rows)


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:.6g}"


def plot(curves: Sequence[Curves], out: str | os.PathLike, title: str | None = None) -> Path:
    """Two panels (loss vs step, loss vs wall-clock minutes) saved to ``out``."""
    try:
        import matplotlib
    except ImportError:
        raise MetricsError(MATPLOTLIB_MISSING) from None
    matplotlib.use("Agg")  # files only; works on headless machines
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0", "C1", "C2"])
    multi = len(curves) > 1
    t_max = max((p[1] for c in curves for p in c.train + c.val if not math.isnan(p[1])), default=0.0)
    t_unit, t_scale = ("min", 1 / 60) if t_max >= 180 else ("s", 1.0)
    for i, c in enumerate(curves):
        col = colors[i % len(colors)]
        for ax, xi, xlabel in ((axes[0], 0, "optimizer step"), (axes[1], 1, f"wall-clock time ({t_unit})")):
            scale = 1.0 if xi == 0 else t_scale
            if c.train:
                ax.plot(
                    [p[xi] * scale for p in c.train],
                    [p[2] for p in c.train],
                    color=col,
                    alpha=0.35,
                    lw=1,
                    marker="o" if len(c.train) == 1 else None,  # one point draws no line: show it
                    label=f"{c.name} train" if multi else "train loss",
                )
            if c.val:
                ax.plot(
                    [p[xi] * scale for p in c.val],
                    [p[2] for p in c.val],
                    color=col,
                    marker="o",
                    ms=3,
                    lw=1.8,
                    label=f"{c.name} val" if multi else "val loss",
                )
            ax.set_xlabel(xlabel)
            ax.set_ylabel("loss (nats/token)")
            ax.grid(True, alpha=0.3)
    axes[0].set_title("loss vs steps")
    axes[1].set_title("loss vs wall-clock time")
    axes[0].legend()
    if title or not multi:
        fig.suptitle(title or curves[0].name)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cs336_basics.tools.plot_metrics",
        description="Plot train/val loss vs steps and vs wall-clock time from RUN_DIR/metrics.jsonl.",
    )
    p.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        help="run directory (the trainer's --checkpoint_dir) or a metrics.jsonl; several overlay",
    )
    p.add_argument(
        "--out",
        default=None,
        help="output file: .png/.pdf/.svg draws the curves, .csv writes the table (default: RUN_DIR/curves.png)",
    )
    p.add_argument(
        "--csv", default=None, metavar="FILE", help="also (or, without matplotlib, instead) write the curves as CSV"
    )
    p.add_argument("--title", default=None)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for flag, value in (("--out", args.out), ("--csv", args.csv)):
        if value is not None and Path(value).is_dir():
            raise MetricsError(f"{flag} {value}: is a directory; give a file name")
    out_kind = output_kind(args.out) if args.out is not None else "image"  # before any work: fail fast
    curves = [read_metrics(r) for r in args.runs]
    for c, name in zip(curves, shortest_unique_names([metrics_path(r).parent for r in args.runs]), strict=True):
        c.name = name
    for flag, value in (("--csv", args.csv), ("--out", args.out if out_kind == "csv" else None)):
        if value:
            try:
                n = write_csv(curves, value)
            except OSError as err:
                raise MetricsError(f"{flag} {value}: cannot write it ({os_reason(err)})") from None
            print(f"Wrote {n} rows to {value}")
    if out_kind == "csv" or (args.csv and args.out is None):
        return 0  # only the table was asked for
    out = args.out or str(metrics_path(args.runs[0]).parent / "curves.png")
    if not any(c.train or c.val for c in curves):
        raise MetricsError(f"{args.runs[0]}: no train or eval losses recorded yet")
    try:
        path = plot(curves, out, args.title)
    except OSError as err:
        raise MetricsError(f"--out {out}: cannot write it ({os_reason(err)})") from None
    print(f"Saved plot to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
