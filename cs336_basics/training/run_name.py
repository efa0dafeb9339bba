"""``--run_name``: one name for the run's directory and its wandb / TensorBoard runs.

Default: a UTC timestamp (``20260131-142501``), chosen on rank 0 and sent to every rank, so all
ranks agree even when their clocks or start times differ; when ``runs/<timestamp>`` already exists
(two runs started in the same second) a ``-2``, ``-3``... suffix keeps them apart. Without
``--checkpoint_dir`` the run directory is ``runs/<run_name>``. A resumed run keeps its checkpoint's
name unless ``--run_name`` is given, so its wandb/TensorBoard curves continue under the same name.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cs336_basics.training import runtime

RUNS_DIR = Path("runs")


def timestamp_name(now: datetime | None = None, taken: Any = None) -> str:
    """``YYYYmmdd-HHMMSS`` in UTC, with ``-2``, ``-3``... while ``taken(name)`` says it is in use."""
    base = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    taken = taken or (lambda name: (RUNS_DIR / name).exists())
    name, n = base, 1
    while taken(name):
        n += 1
        name = f"{base}-{n}"
    return name


def settle_run_name(s: Any, rt: runtime.Runtime) -> None:
    """Fill ``s.run_name`` (rank 0 picks, every rank gets the same) and the default ``s.checkpoint_dir``."""
    if s.run_name is None:
        name = timestamp_name() if rt.is_main else None
        if rt.info.is_distributed:
            runtime.init_process_group(rt)  # (a no-op later in setup)
            name = runtime.all_gather_object(name)[0]
        s.run_name = name
    if s.checkpoint_dir is None:
        s.checkpoint_dir = str(RUNS_DIR / s.run_name)


def adopt_checkpoint_name(s: Any, payload: dict[str, Any], given: bool) -> None:
    """On resume without ``--run_name``: the checkpoint's run name (its directory was given explicitly)."""
    saved = (payload.get("train_config") or {}).get("run_name")
    if not given and isinstance(saved, str) and saved:
        s.run_name = saved
