"""Experiment sweeps: run variants of a training config and compare them in one table and one plot.

    uv run python -m cs336_basics.tools.sweep --config lr_sweep_cpu          # a preset shipped in the package
    uv run python -m cs336_basics.tools.sweep --config experiments/my.toml   # your own file
    uv run python -m cs336_basics.tools.sweep --list                          # the presets

A sweep file is TOML::

    name = "lr_sweep"                        # optional; default: the file name
    description = "..."                      # optional; copied into summary.md
    out_dir = "runs/sweeps/lr_sweep"         # optional; default runs/sweeps/<name>

    [base]                                   # any training flags (the keys of training_together --config;
    train_data_path = "data/train.npy"       #   [tables] inside [base] only group keys)
    d_model = 128
    lr = 3e-3

    [grid]                                   # every combination is a variant, named "lr=0.001,batch_size=32"
    lr = [1e-3, 3e-3, 1e-2]

    [[variants]]                             # explicit variants: base + these flags
    name = "diverge"
    lr = 1.0

Each variant runs the real training program as a subprocess
(``python -m cs336_basics.training_together --config OUT/configs/NAME.toml``) with its run directory
``OUT/runs/NAME`` and its console output in ``OUT/logs/NAME.log``. Variants run one after another,
or one per GPU when several are visible (each process pinned with ``CUDA_VISIBLE_DEVICES``).

Resumable: a variant whose ``metrics.jsonl`` has a ``final`` record is finished and skipped; one that
diverged is recorded in ``OUT/sweep_state.json`` and skipped; one that was interrupted (checkpoints
but no ``final`` record) is continued with ``--resume``. Changing a finished variant's flags is an
error (delete its run directory, or use another ``out_dir``). A variant that fails or diverges is
recorded, not fatal: the training program exits 1 after repeated non-finite steps, which the sweep
reports as diverged, as it does for non-finite losses or a final loss above the first one logged.

After the runs: ``OUT/summary.md`` (one row per variant), ``OUT/curves.csv`` and, with matplotlib,
``OUT/curves.png`` (loss vs steps and vs wall-clock time, all variants overlaid).
Exit status: 0 when every variant finished or diverged, 1 when one failed, 2 for a bad sweep file,
130 when interrupted (the running variants checkpoint first; run the same command to continue).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cs336_basics.training.metrics import finite_number, read_records
from cs336_basics.training.settings import TrainSettings, flatten_toml
from cs336_basics.utils import runlock
from cs336_basics.utils.errors import UserError, run_cli
from cs336_basics.utils.fsutil import atomic_write_text, read_toml

__all__ = [
    "SweepError",
    "Variant",
    "Sweep",
    "VariantResult",
    "PRESET_DIR",
    "list_presets",
    "resolve_config",
    "training_flag_names",
    "load_sweep",
    "expand_grid",
    "gpu_slots",
    "schedule",
    "read_run",
    "run_sweep",
    "format_summary",
]

PRESET_DIR = Path(__file__).resolve().parent / "experiments"
TRAINER = "cs336_basics.training_together"
SWEEP_KEYS = ("name", "description", "out_dir", "base", "grid", "variants")
# Set by the sweep itself for every variant.
RESERVED = {
    "checkpoint_dir": "the sweep puts each run in OUT/runs/NAME",
    "resume": "the sweep resumes interrupted variants itself",
    "resume_from": "the sweep resumes interrupted variants itself",
    "config": "a sweep file cannot include another config",
}
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=,+-]*$")


class SweepError(UserError, ValueError):
    """A bad sweep file, flag or out_dir; the message names the file and key."""


@dataclass
class Variant:
    """One training run of the sweep: its name, the flags it changes, and all its flags."""

    name: str
    overrides: dict[str, Any]
    flags: dict[str, Any]


@dataclass
class Sweep:
    name: str
    description: str
    out_dir: Path
    variants: list[Variant]
    source: str
    sets: dict[str, Any] = field(default_factory=dict)  # --set overrides of [base]

    def run_dir(self, v: Variant) -> Path:
        return self.out_dir / "runs" / v.name

    def config_path(self, v: Variant) -> Path:
        return self.out_dir / "configs" / f"{v.name}.toml"

    def log_path(self, v: Variant) -> Path:
        return self.out_dir / "logs" / f"{v.name}.log"


@dataclass
class VariantResult:
    """What one variant's run left behind (from its metrics.jsonl) and how its process ended."""

    name: str
    status: str = "pending"  # finished | diverged | failed | interrupted | pending
    exit_code: int | None = None
    final_val_loss: float | None = None
    best_val_loss: float | None = None
    first_loss: float | None = None
    steps: int | None = None
    tokens: int | None = None
    wall_s: float | None = None
    nonfinite: bool = False
    note: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# reading the sweep file
# ------------------------------------------------------------------------------------------------
def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def resolve_config(arg: str) -> Path:
    """A path to a TOML file, or the name of a preset shipped in ``cs336_basics/tools/experiments``."""
    p = Path(arg)
    if p.is_file():
        return p
    if p.is_dir():
        raise SweepError(f"--config {arg}: is a directory, expected a .toml sweep file")
    if p.parent == Path(".") and p.suffix in ("", ".toml"):
        preset = PRESET_DIR / f"{p.stem}.toml"
        if preset.is_file():
            return preset
    raise SweepError(f"--config {arg}: no such file or preset (presets: {', '.join(list_presets())})")


def training_flag_names() -> frozenset[str]:
    """The training program's flags: the fields of its settings dataclass (``--config`` aside)."""
    return frozenset(f.name for f in dataclasses.fields(TrainSettings)) - {"config"}


def _flatten(path: str, table: str, d: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """``{key: (value, where)}``; nested tables only group keys (as in the training program's --config)."""
    return flatten_toml(path, d, table=table, error=SweepError)


def _check_flag(path: str, key: str, where: str, value: Any, flags: frozenset[str]) -> None:
    if key in RESERVED:
        raise SweepError(f"{path}: {where}: {key!r} cannot be set in a sweep ({RESERVED[key]})")
    if key not in flags:
        raise SweepError(f"{path}: unknown key {where!r} (not a training flag; see python -m {TRAINER} --help)")
    if isinstance(value, (dict, list)) or value is None:
        raise SweepError(f"{path}: {where} = {value!r}: a training flag takes a single value")


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def expand_grid(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of ``{flag: [values]}`` in file order (last key varies fastest)."""
    if not grid:
        return []
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def _grid_name(overrides: dict[str, Any]) -> str:
    name = ",".join(f"{k}={_fmt_value(v)}" for k, v in overrides.items())
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", name)


def load_sweep(
    path: str | os.PathLike,
    flags: frozenset[str] | None = None,
    *,
    sets: dict[str, Any] | None = None,
    out_dir: str | os.PathLike | None = None,
    only: Sequence[str] | None = None,
) -> Sweep:
    """Parse and check a sweep file; every problem is a one-line :class:`SweepError` naming the key.

    ``flags``: the allowed training flags (default: read from the training program's ``--help``).
    ``sets``: flags applied on top of ``[base]`` (``--set key=value``). ``only``: variant names to keep.
    """
    path = str(path)
    data = read_toml(path, SweepError)
    for key in data:
        if key not in SWEEP_KEYS:
            raise SweepError(
                f"{path}: unknown top-level key {key!r}; expected {', '.join(SWEEP_KEYS)} "
                "(training flags go in [base], [grid] or [[variants]])"
            )
    for key in ("name", "description", "out_dir"):
        if key in data and not isinstance(data[key], str):
            raise SweepError(f"{path}: {key} must be a string, got {data[key]!r}")
    for key in ("base", "grid"):
        if key in data and not isinstance(data[key], dict):
            raise SweepError(f"{path}: {key} must be a table ([{key}]), got {data[key]!r}")

    flags = training_flag_names() if flags is None else flags
    name = data.get("name") or Path(path).stem
    base: dict[str, Any] = {}
    for key, (value, where) in _flatten(path, "base", data.get("base", {})).items():
        _check_flag(path, key, where, value, flags)
        base[key] = value
    for key, value in (sets or {}).items():
        _check_flag("--set", key, key, value, flags)
        base[key] = value

    grid: dict[str, list[Any]] = {}
    for key, value in data.get("grid", {}).items():
        where = f"[grid] {key}"
        if not isinstance(value, list) or not value:
            raise SweepError(f"{path}: {where} must be a non-empty list of values, got {value!r}")
        for v in value:
            _check_flag(path, key.replace("-", "_"), where, v, flags)
        grid[key.replace("-", "_")] = value

    variants: list[Variant] = []
    for combo in expand_grid(grid):
        variants.append(Variant(_grid_name(combo), combo, {**base, **combo}))
    explicit = data.get("variants", [])
    if not isinstance(explicit, list) or not all(isinstance(v, dict) for v in explicit):
        raise SweepError(f"{path}: variants must be an array of tables ([[variants]])")
    for i, table in enumerate(explicit):
        table = dict(table)
        vname = table.pop("name", None)
        over: dict[str, Any] = {}
        for key, (value, where) in _flatten(path, f"variants #{i + 1}", table).items():
            _check_flag(path, key, where, value, flags)
            over[key] = value
        if vname is None:
            vname = _grid_name(over) if over else "base"
        if not isinstance(vname, str) or not _NAME_OK.match(vname):
            raise SweepError(
                f"{path}: [[variants]] #{i + 1} name {vname!r} must be a plain file name (letters, digits, ._=,+-)"
            )
        variants.append(Variant(vname, over, {**base, **over}))
    if not variants:
        variants.append(Variant("base", {}, dict(base)))

    seen: set[str] = set()
    for v in variants:
        if v.name in seen:
            raise SweepError(f"{path}: two variants are named {v.name!r}")
        seen.add(v.name)
    if only:
        unknown = [n for n in only if n not in seen]
        if unknown:
            raise SweepError(f"--only {unknown[0]!r}: no such variant in {path} (variants: {', '.join(sorted(seen))})")
        variants = [v for v in variants if v.name in set(only)]
    for v in variants:
        for need in ("train_data_path", "val_data_path"):
            if need not in v.flags:
                raise SweepError(
                    f"{path}: variant {v.name!r} has no {need} (set it in [base] or with --set {need}=...)"
                )

    out = Path(out_dir) if out_dir is not None else Path(data.get("out_dir") or f"runs/sweeps/{name}")
    return Sweep(name, data.get("description", ""), out, variants, path, dict(sets or {}))


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``--set key=value``: value read as a TOML value (``1e-3``, ``true``, ``"cuda"``), else a string."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not key:
            raise SweepError(f"--set {item!r}: expected KEY=VALUE")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out[key] = value
    return out


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, int):
        return str(v)
    return json.dumps(str(v), ensure_ascii=False)  # a valid TOML basic string


def write_variant_config(sweep: Sweep, v: Variant) -> Path:
    """The variant's complete flags as a training ``--config`` file (checkpoint_dir included)."""
    lines = [f"# sweep {sweep.name}, variant {v.name} (written by python -m cs336_basics.tools.sweep)"]
    for k, val in v.flags.items():
        lines.append(f"{k} = {_toml_value(val)}")
    lines.append(f"checkpoint_dir = {_toml_value(str(sweep.run_dir(v)))}")
    path = sweep.config_path(v)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------------------------
# reading a run directory
# ------------------------------------------------------------------------------------------------
def read_run(run_dir: Path, name: str = "") -> VariantResult:
    """Summarize ``run_dir/metrics.jsonl`` (missing file: nothing run yet). Torn lines are skipped."""
    res = VariantResult(name or run_dir.name)
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return res
    finished = False
    for rec in read_records(path):
        kind = rec.get("type")
        if isinstance(rec.get("step"), int):
            res.steps = max(res.steps or 0, rec["step"])
        if isinstance(rec.get("tokens"), int):
            res.tokens = max(res.tokens or 0, rec["tokens"])
        t = finite_number(rec.get("time_s"))
        if t is not None:
            res.wall_s = max(res.wall_s or 0.0, t)
        if kind == "train":
            loss = finite_number(rec.get("loss"))
            if loss is None:  # the trainer writes non-finite numbers as null
                res.nonfinite = True
            elif res.first_loss is None:
                res.first_loss = loss
        elif kind in ("eval", "final"):
            vl = finite_number(rec.get("val_loss"))
            if vl is None:
                res.nonfinite = True
            elif res.best_val_loss is None or vl < res.best_val_loss:
                res.best_val_loss = vl
            if kind == "final":
                finished = True
                res.final_val_loss = vl
        elif kind == "event" and rec.get("event") == "nonfinite":
            res.nonfinite = True
    if finished:
        res.status = "finished"
    return res


def _has_checkpoint(run_dir: Path) -> bool:
    return any(run_dir.glob("checkpoint_iter_*.pt"))


def _last_error(log: Path) -> str:
    """The trainer's one-line ``error: ...`` from the end of a log (empty if none)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 8192))
            tail = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(tail):
        if line.startswith("error:") or line.startswith("[rank"):
            return line.strip()
    return tail[-1].strip() if tail else ""


def classify(res: VariantResult, exit_code: int | None, log: Path | None = None) -> VariantResult:
    """Set ``status``/``note`` from the run's metrics and the process's exit status."""
    res.exit_code = exit_code
    rose = res.first_loss is not None and res.final_val_loss is not None and res.final_val_loss > res.first_loss
    if res.status == "finished" and (res.nonfinite or rose or res.final_val_loss is None):
        res.status = "diverged"
        res.note = (
            "non-finite loss"
            if res.nonfinite or res.final_val_loss is None
            else "final loss above the first logged loss"
        )
    elif res.status == "finished":
        res.note = ""
    elif exit_code == 1 and res.nonfinite:
        res.status, res.note = "diverged", "stopped after repeated non-finite steps"
    elif exit_code == 0:
        res.status, res.note = "interrupted", "stopped before the end (signal); run the sweep again to resume"
    elif exit_code is None:
        res.status = "pending"
    else:
        res.status = "interrupted" if exit_code in (130, -signal.SIGINT, -signal.SIGTERM) else "failed"
        res.note = (_last_error(log) if log else "") or f"exit {exit_code}"
    return res


# ------------------------------------------------------------------------------------------------
# scheduling
# ------------------------------------------------------------------------------------------------
class Process(Protocol):
    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...


def gpu_slots(gpus: str | None, all_cpu: bool) -> list[str | None]:
    """Where variants run: ``[None]`` = one at a time, unpinned; else one slot per GPU id.

    ``gpus``: ``None``/``"auto"`` = the GPUs this process can see (``CUDA_VISIBLE_DEVICES`` ids, or
    torch's device count), a count (``"2"``: the first two of them), or ids (``"0,2"``); ``"0"`` or
    an all-CPU sweep runs one variant at a time.
    """
    if all_cpu:
        return [None]
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        visible = [x.strip() for x in env.split(",") if x.strip()]
    else:
        try:
            import torch

            visible = [str(i) for i in range(torch.cuda.device_count())]
        except Exception:  # noqa: BLE001 - no usable CUDA: run on one device
            visible = []
    if gpus in (None, "auto"):
        ids = visible
    elif re.fullmatch(r"\d+", gpus):
        n = int(gpus)
        if n > len(visible) and n > 0:
            raise SweepError(f"--gpus {gpus}: only {len(visible)} GPU(s) visible")
        ids = visible[:n]
    else:
        ids = [x.strip() for x in gpus.split(",") if x.strip()]
        if not ids or not all(re.fullmatch(r"[0-9A-Za-z-]+", x) for x in ids):
            raise SweepError(f"--gpus {gpus!r}: expected 'auto', a count, or comma-separated GPU ids")
    return list(ids) if ids else [None]


def schedule(
    jobs: Sequence[Any],
    slots: Sequence[str | None],
    launch: Callable[[Any, str | None], Process],
    on_done: Callable[[Any, int], None],
    *,
    poll_s: float = 0.5,
) -> bool:
    """Run ``jobs`` with at most one per slot at a time; ``on_done(job, exit_code)`` as each ends.

    Returns False if interrupted (Ctrl-C, or SIGTERM to the sweep): no new job starts, running ones
    get SIGTERM (the training program finishes its step, checkpoints and exits) and are waited for.
    """
    pending = deque(jobs)
    free = list(slots)
    running: dict[int, tuple[Any, str | None, Process]] = {}
    key = itertools.count()
    try:
        while pending or running:
            while pending and free:
                slot = free.pop(0)
                job = pending.popleft()
                running[next(key)] = (job, slot, launch(job, slot))
            for k, (job, slot, proc) in list(running.items()):
                code = proc.poll()
                if code is not None:
                    del running[k]
                    free.append(slot)
                    on_done(job, code)
            if running:
                time.sleep(poll_s)
        return True
    except KeyboardInterrupt:
        for _job, _slot, proc in running.values():
            if proc.poll() is None:
                try:
                    # SIGTERM, not SIGINT: after a terminal's Ctrl-C (which reached the children too)
                    # a second SIGINT would make the training program abort without a checkpoint.
                    proc.send_signal(signal.SIGTERM)
                except OSError:
                    pass
        for job, _slot, proc in running.values():
            on_done(job, proc.wait())
        return False


# ------------------------------------------------------------------------------------------------
# running a sweep
# ------------------------------------------------------------------------------------------------
def _load_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _flag_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    for k in sorted(set(old) | set(new)):
        if old.get(k) != new.get(k):
            return f"{k}: {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}"
    return ""


@dataclass
class Plan:
    variant: Variant
    action: str  # skip | resume | start
    reason: str = ""


def plan(sweep: Sweep) -> list[Plan]:
    """What each variant needs: ``skip`` (finished or diverged), ``resume`` or ``start``."""
    state = _load_state(sweep.out_dir / "sweep_state.json").get("variants", {})
    plans = []
    for v in sweep.variants:
        run_dir = sweep.run_dir(v)
        res = read_run(run_dir, v.name)
        rec = state.get(v.name, {})
        has_ckpt = _has_checkpoint(run_dir)
        same_flags = rec.get("flags") == v.flags
        if (has_ckpt or res.status == "finished") and isinstance(rec.get("flags"), dict) and not same_flags:
            raise SweepError(
                f"variant {v.name!r} in {sweep.out_dir} was run with other flags ({_flag_diff(rec['flags'], v.flags)}); "
                f"delete {run_dir} to rerun it, or use another --out_dir"
            )
        if res.status == "finished":
            plans.append(Plan(v, "skip", "finished"))
        elif rec.get("status") == "diverged" and same_flags and run_dir.is_dir():
            plans.append(Plan(v, "skip", f"diverged earlier; delete {run_dir} to rerun it"))
        elif has_ckpt:
            plans.append(Plan(v, "resume", "interrupted"))
        else:
            plans.append(Plan(v, "start"))
    return plans


def _popen_launcher(sweep: Sweep, resume: set[str]) -> Callable[[Variant, str | None], Process]:
    def launch(v: Variant, slot: str | None) -> Process:
        cfg = write_variant_config(sweep, v)
        cmd = [sys.executable, "-m", TRAINER, "--config", str(cfg)]
        if v.name in resume:
            cmd.append("--resume")
        env = dict(os.environ)
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot
        env.setdefault("PYTHONUNBUFFERED", "1")
        log = sweep.log_path(v)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as f:
            where = f" on GPU {slot}" if slot is not None else ""
            f.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')}{where}: {' '.join(cmd)}\n")
            f.flush()
            return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)  # noqa: S603

    return launch


def run_sweep(
    sweep: Sweep,
    *,
    slots: Sequence[str | None] = (None,),
    launch: Callable[[Variant, str | None], Process] | None = None,
    progress: Callable[[str], None] | None = None,
    poll_s: float = 0.5,
) -> tuple[list[VariantResult], bool]:
    """Run what is not done yet, then write summary.md, curves.csv (and curves.png).

    Returns ``(results, completed)``; ``completed`` is False after a Ctrl-C. ``launch`` (for tests)
    starts one variant on a slot and returns a process-like object.
    """
    say = progress or (lambda _msg: None)
    sweep.out_dir.mkdir(parents=True, exist_ok=True)
    state_path = sweep.out_dir / "sweep_state.json"
    state = _load_state(state_path)
    state.setdefault("variants", {})
    plans = plan(sweep)
    resume = {p.variant.name for p in plans if p.action == "resume"}
    todo = [p.variant for p in plans if p.action != "skip"]
    for p in plans:
        if p.action == "skip":
            say(f"[{p.variant.name}] skipped: {p.reason}")
    launch = launch or _popen_launcher(sweep, resume)
    started: dict[str, float] = {}

    def start(v: Variant, slot: str | None) -> Process:
        where = f" on GPU {slot}" if slot is not None else ""
        verb = "resuming" if v.name in resume else "starting"
        say(f"[{v.name}] {verb}{where} (log: {sweep.log_path(v)})")
        started[v.name] = time.perf_counter()
        return launch(v, slot)

    def done(v: Variant, code: int) -> None:
        res = classify(read_run(sweep.run_dir(v), v.name), code, sweep.log_path(v))
        took = time.perf_counter() - started.get(v.name, time.perf_counter())
        detail = f" ({res.note})" if res.note else ""
        loss = f", val loss {res.final_val_loss:.4f}" if res.final_val_loss is not None else ""
        # Two clocks, each named: the whole process (startup included) and summary.md's train time.
        train = f", train time {_fmt_time(res.wall_s)}" if res.wall_s is not None else ""
        say(f"[{v.name}] {res.status}{loss}, exit {code}, process time {_fmt_time(took)}{train}{detail}")
        state["variants"][v.name] = {"flags": v.flags, "status": res.status, "exit_code": code, "note": res.note}
        atomic_write_text(state_path, json.dumps(state, indent=2, default=str) + "\n")

    completed = schedule(todo, slots, start, done, poll_s=poll_s)
    results = collect(sweep, state["variants"])
    write_outputs(sweep, results)
    return results, completed


def collect(sweep: Sweep, recorded: dict[str, Any]) -> list[VariantResult]:
    """Each variant's result from its run directory plus the recorded exit status."""
    out = []
    for v in sweep.variants:
        rec = recorded.get(v.name, {})
        code = rec.get("exit_code")
        res = classify(read_run(sweep.run_dir(v), v.name), code if isinstance(code, int) else None, sweep.log_path(v))
        if res.status == "failed" and rec.get("note"):
            res.note = rec["note"]
        if res.status == "pending" and _has_checkpoint(sweep.run_dir(v)):  # e.g. the sweep itself was killed
            res.status, res.note = "interrupted", "checkpointed but not finished; run the sweep again to resume"
        res.overrides = v.overrides
        out.append(res)
    return out


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.1f}min"
    return f"{s / 3600:.2f}h"


def _fmt_loss(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def format_summary(sweep: Sweep, results: Sequence[VariantResult], plot_note: str = "") -> str:
    """summary.md: one row per variant, best finished variant first in the notes."""
    lines = [f"# Sweep: {sweep.name}", ""]
    if sweep.description:
        lines += [sweep.description.strip(), ""]
    src = Path(sweep.source).resolve()
    source = (
        f"preset `{src.stem}` (cs336_basics/tools/experiments/{src.name})"
        if src.parent == PRESET_DIR
        else f"`{sweep.source}`"
    )
    lines.append(f"Source: {source}; runs in `{sweep.out_dir / 'runs'}`, logs in `{sweep.out_dir / 'logs'}`.")
    if sweep.sets:
        lines.append(
            "Overrides for every variant: "
            + " ".join(f"`--set {k}={_fmt_value(v)}`" for k, v in sweep.sets.items())
            + "."
        )
    lines += [
        "",
        "| variant | changes | status | final val loss | best val loss | steps | tokens | train time | diverged | exit |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        changes = ", ".join(f"{k}={_fmt_value(v)}" for k, v in r.overrides.items()) or "(base)"
        status = r.status + (f" ({r.note})" if r.note else "")
        status = status.replace("|", "\\|")
        lines.append(
            f"| {r.name} | {changes} | {status} | {_fmt_loss(r.final_val_loss)} | {_fmt_loss(r.best_val_loss)} | "
            f"{r.steps if r.steps is not None else '-'} | {f'{r.tokens:,}' if r.tokens is not None else '-'} | "
            f"{_fmt_time(r.wall_s)} | {'yes' if r.status == 'diverged' else 'no'} | "
            f"{r.exit_code if r.exit_code is not None else '-'} |"
        )
    ok = [r for r in results if r.status == "finished" and r.final_val_loss is not None]
    lines.append("")
    if ok:
        best = min(ok, key=lambda r: r.final_val_loss)
        lines.append(f"Lowest final val loss: **{best.name}** ({best.final_val_loss:.4f}).")
    counts = {
        s: sum(r.status == s for r in results) for s in ("finished", "diverged", "failed", "interrupted", "pending")
    }
    lines.append("Variants: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + ".")
    if plot_note:
        lines += ["", plot_note]
    return "\n".join(lines) + "\n"


def write_outputs(sweep: Sweep, results: Sequence[VariantResult]) -> tuple[Path, str]:
    """summary.md, curves.csv and (with matplotlib) curves.png. Returns (summary path, plot note)."""
    from cs336_basics.tools import plot_metrics as pm

    curves = []
    for v in sweep.variants:
        try:
            c = pm.read_metrics(sweep.run_dir(v))
        except pm.MetricsError:
            continue
        c.name = v.name
        curves.append(c)
    note = ""
    if curves:
        pm.write_csv(curves, sweep.out_dir / "curves.csv")
        # A diverged run's losses would squash every other curve: leave out points far above any
        # run's starting loss.
        starts = [c.train[0][2] for c in curves if c.train]
        cap = 1.5 * max(starts) if starts else math.inf
        clipped = sum(1 for c in curves for p in c.train + c.val if p[2] > cap)
        diverged = {r.name for r in results if r.status == "diverged"}
        for c in curves:
            c.train = [p for p in c.train if p[2] <= cap]
            c.val = [p for p in c.val if p[2] <= cap]
            if c.name in diverged:  # its line ends where it blew up (maybe at once): say why in the legend
                c.name += " (diverged)"
        try:
            pm.plot(curves, sweep.out_dir / "curves.png", title=f"sweep {sweep.name}")
            note = "Curves: `curves.png` (loss vs steps and vs wall-clock time), data in `curves.csv`."
            if clipped:
                note += f" {clipped} points above {cap:.2f} (1.5x the highest starting loss) are left out of the plot."
        except pm.MetricsError:
            note = "Curves: matplotlib is not installed, so no curves.png; the data is in `curves.csv` (uv sync --extra plot to draw it)."
    summary = sweep.out_dir / "summary.md"
    atomic_write_text(summary, format_summary(sweep, results, note))
    return summary, note


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cs336_basics.tools.sweep",
        description="Run the variants of a training sweep (TOML) one after another or one per GPU; "
        "resumable; writes summary.md and an overlay plot.",
    )
    p.add_argument("--config", help="sweep TOML file, or a preset name (see --list)")
    p.add_argument("--list", action="store_true", help="list the shipped presets and exit")
    p.add_argument(
        "--out_dir", default=None, help="sweep directory (default: the file's out_dir, else runs/sweeps/NAME)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a [base] training flag for every variant (repeatable), e.g. --set device=cuda",
    )
    p.add_argument("--only", default=None, help="comma-separated variant names to run (the others are left alone)")
    p.add_argument(
        "--gpus", default="auto", help="'auto' (every visible GPU), a count, or ids like 0,2; one variant per GPU"
    )
    p.add_argument("--dry_run", action="store_true", help="show what would run (and the commands) without running")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        for name in list_presets():
            with open(PRESET_DIR / f"{name}.toml", "rb") as f:
                desc = tomllib.load(f).get("description", "").strip().splitlines()
            print(f"{name:<22}{desc[0] if desc else ''}")
        return 0
    if not args.config:
        raise SweepError("--config is required (a sweep TOML file or a preset name; see --list)")
    path = resolve_config(args.config)
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    sweep = load_sweep(path, sets=parse_set(args.set), out_dir=args.out_dir, only=only)
    all_cpu = all(str(v.flags.get("device", "")).startswith("cpu") for v in sweep.variants)
    slots = gpu_slots(args.gpus, all_cpu)
    where = "one at a time" if slots == [None] else f"one per GPU on {', '.join(map(str, slots))}"
    print(f"Sweep {sweep.name}: {len(sweep.variants)} variant(s) -> {sweep.out_dir} ({where})")
    if args.dry_run:
        for p in plan(sweep):
            cmd = f"python -m {TRAINER} --config {sweep.config_path(p.variant)}" + (
                " --resume" if p.action == "resume" else ""
            )
            extra = f" ({p.reason})" if p.reason else ""
            print(f"  {p.variant.name}: {p.action}{extra}" + ("" if p.action == "skip" else f": {cmd}"))
        return 0

    def on_term(signum, frame):
        raise KeyboardInterrupt  # handled in schedule(): stop the running variants gracefully

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        # One sweep per directory (each variant's own run directory is locked by its trainer).
        with runlock.hold(sweep.out_dir, what="sweep directory", hint="wait for it to end or pass another --out_dir"):
            results, completed = run_sweep(sweep, slots=slots, progress=lambda m: print(m, flush=True))
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"Summary: {sweep.out_dir / 'summary.md'}")
    if not completed:
        print("Interrupted: run the same command again to continue.", file=sys.stderr)
        return 130
    return 1 if any(r.status == "failed" for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
