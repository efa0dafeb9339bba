"""The run's checkpoints: files that survive crashes, full disks and tampering.

The course's ``save_checkpoint`` / ``load_checkpoint`` (``cs336_basics/checkpoint.py``) are the
interface a learner reads; the safety they rely on is here:

* ``write_checkpoint``: the file is written atomically (temp file + fsync + rename, via ``fsutil``),
  so a crash or a full disk leaves the previous checkpoint untouched, and a JSON sidecar
  (``<stem>.json``) records the sha256 and size of the exact bytes written; ``verify_checkpoint``
  catches bit rot and truncated copies, which ``torch.load`` itself does not always notice.
* ``read_checkpoint``: the only way we load -- ``torch.load(weights_only=True)`` on the CPU, so a
  malicious pickle cannot run code, and every failure becomes one ``CheckpointError`` line naming
  the file and the reason.
* ``load_model_weights``: the one weights loader (wrapper prefixes, a fit check that names the
  config difference, FSDP2 parameters filled from whole tensors); ``model_from_checkpoint`` rebuilds
  a ``TransformerLM`` from the config a checkpoint carries.
* ``CheckpointManager``: ``checkpoint_iter_{N}.pt`` naming, ``best.pt``, rotation, and
  ``latest_intact()`` for resuming from the newest checkpoint that actually verifies.

Payloads must be loadable with ``weights_only=True``: tensors, Python scalars/strings/None,
dicts/lists/tuples of those, and (allow-listed here) numeric NumPy arrays/scalars such as
``np.random.get_state()``. Anything else (custom classes, functions, object arrays) is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import re
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import torch

from cs336_basics.lm.model import unwrap_model
from cs336_basics.utils.dtensor import is_dtensor
from cs336_basics.utils.errors import UserError, os_reason
from cs336_basics.utils.fsutil import atomic_write, atomic_write_text, fsync_dir

__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "build_payload",
    "load_checkpoint",
    "load_model_weights",
    "load_optimizer_state",
    "model_from_checkpoint",
    "read_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
    "sidecar_path",
    "verify_checkpoint",
    "write_checkpoint",
    "write_sidecar",
]

PathLike = str | os.PathLike
Source = PathLike | BinaryIO | IO[bytes]

_HASH_CHUNK = 8 << 20
_CKPT_RE = re.compile(r"^checkpoint_iter_(\d+)\.pt$")


class CheckpointError(UserError):
    """A checkpoint cannot be written/read/used; ``str(err)`` names the file and the reason."""


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _is_path(obj: object) -> bool:
    return isinstance(obj, (str, os.PathLike))


def _name(src: object) -> str:
    if _is_path(src):
        return str(os.fspath(src))
    name = getattr(src, "name", None)
    return str(name) if isinstance(name, (str, os.PathLike)) else "<checkpoint stream>"


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _summarize(items: list[str], n: int = 3) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" (+{len(items) - n} more)" if len(items) > n else "")


def sidecar_path(path: PathLike) -> Path:
    """``checkpoint_iter_5.pt`` -> ``checkpoint_iter_5.json``; ``best.pt`` -> ``best.json``."""
    p = Path(path)
    return p.with_suffix(".json") if p.suffix != ".json" else p.with_name(p.name + ".sidecar.json")


def _sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


class _HashingWriter:
    """File-like wrapper: hashes exactly the bytes torch.save writes, and remembers I/O errors.

    torch's zip writer calls ``write`` from C++ and reports a failure as an unrelated
    RuntimeError ("unexpected pos"); we keep the original OSError (e.g. ENOSPC) to re-raise it.
    """

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.sha = hashlib.sha256()
        self.size = 0
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            n = self._f.write(data)
        except OSError as err:
            self.error = err
            raise
        mv = memoryview(data)
        self.sha.update(mv)
        self.size += mv.nbytes
        return mv.nbytes if n is None else n

    def flush(self) -> None:
        try:
            self._f.flush()
        except OSError as err:
            self.error = err
            raise


def _write_torch_file(obj: Any, path: Path) -> tuple[str, int]:
    """Atomically ``torch.save`` ``obj`` to ``path``; return (sha256, size) of the bytes written."""
    try:
        with atomic_write(path, "wb") as f:
            writer = _HashingWriter(f)
            try:
                torch.save(obj, writer)
            except Exception:
                if writer.error is not None:
                    raise writer.error from None
                raise
            if writer.error is not None:  # never publish a file whose write failed, even if swallowed
                raise writer.error
    except OSError as err:
        raise CheckpointError(f"could not write checkpoint {path}: {os_reason(err)}") from None
    return writer.sha.hexdigest(), writer.size


# ----------------------------------------------------------------------------------------------
# model / payload
# ----------------------------------------------------------------------------------------------
def _model_config_dict(model: torch.nn.Module) -> dict | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    if is_dataclass(config) and not isinstance(config, type):
        return asdict(config)
    if isinstance(config, Mapping):
        return dict(config)
    return None


def build_payload(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, iteration: int, **extra: Any
) -> dict[str, Any]:
    """The checkpoint dict: unwrapped model state, optimizer state, iteration, model config, extras."""
    bare = unwrap_model(model)
    payload: dict[str, Any] = {"model": bare.state_dict(), "iteration": int(iteration)}
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    config = _model_config_dict(bare)
    if config is not None:
        payload["model_config"] = config
    payload.update(extra)
    return payload


def write_checkpoint(payload: dict[str, Any], out: Source) -> None:
    """Write a checkpoint payload to a path or a binary file object.

    For a path the write is atomic (the old file survives any failure) and a sha256 sidecar
    ``<stem>.json`` is written next to it; failures raise ``CheckpointError``.
    """
    if not _is_path(out):
        torch.save(payload, out)
        return
    path = Path(out)
    if path.parent and not path.parent.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CheckpointError(f"could not write checkpoint {path}: {os_reason(err)}") from None
    sha, size = _write_torch_file(payload, path)
    write_sidecar(path, {"iteration": int(payload["iteration"])}, sha256=sha, size=size)


# ----------------------------------------------------------------------------------------------
# sidecars
# ----------------------------------------------------------------------------------------------
def write_sidecar(
    path: PathLike,
    extra: Mapping[str, Any] | None = None,
    *,
    sha256: str | None = None,
    size: int | None = None,
) -> Path:
    """Atomically write ``<stem>.json`` = {"file", "sha256", "size", **extra} beside ``path``.

    Pass the ``sha256``/``size`` computed while writing (so the hash is of the bytes we wrote);
    without them the file is hashed from disk.
    """
    path = Path(path)
    if sha256 is None or size is None:
        try:
            sha256, size = _sha256_file(path)
        except OSError as err:
            raise CheckpointError(f"{path}: cannot read to hash: {os_reason(err)}") from None
    meta = {"file": path.name, "sha256": sha256, "size": int(size)}
    meta.update(dict(extra or {}))
    meta["sha256"], meta["size"] = sha256, int(size)  # extras must not override the hash
    side = sidecar_path(path)
    try:
        atomic_write_text(side, json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    except OSError as err:
        raise CheckpointError(f"could not write checkpoint sidecar {side}: {os_reason(err)}") from None
    return side


def read_sidecar(path: PathLike) -> dict[str, Any]:
    """The sidecar dict for checkpoint ``path``; ``CheckpointError`` if missing or unreadable."""
    path = Path(path)
    side = sidecar_path(path)
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no sidecar ({side.name} missing)") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read sidecar {side.name}: {os_reason(err)}") from None
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: sidecar {side.name} is not valid JSON") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str):
        raise CheckpointError(f"{path}: sidecar {side.name} has no sha256")
    return meta


def verify_checkpoint(path: PathLike) -> None:
    """Check ``path`` against its sidecar's size and sha256; ``CheckpointError`` on any mismatch."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    meta = read_sidecar(path)
    try:
        actual_size = path.stat().st_size
        if isinstance(meta.get("size"), int) and meta["size"] != actual_size:
            raise CheckpointError(
                f"{path}: size mismatch ({actual_size:,} bytes on disk, sidecar says {meta['size']:,}; truncated?)"
            )
        sha, _ = _sha256_file(path)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read: {os_reason(err)}") from None
    if sha != meta["sha256"]:
        raise CheckpointError(
            f"{path}: sha256 mismatch (file {sha[:12]}..., sidecar {meta['sha256'][:12]}...; corrupted?)"
        )


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------
_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")
_OPERAND_RE = re.compile(r"Unsupported operand (\d+)")


def _load_failure(name: str, err: BaseException) -> CheckpointError:
    text = str(err)
    if isinstance(err, pickle.UnpicklingError) and "weights_only" in text.lower().replace(" ", "_"):
        m = _GLOBAL_RE.search(text)
        if m:  # a pickle that wants to import/call something: the attack case
            return CheckpointError(
                f"{name}: refused to unpickle {m.group(1)} (weights_only); not loading untrusted code"
            )
        op = _OPERAND_RE.search(text)
        detail = (
            f"unsupported pickle opcode {op.group(1)}"
            if op
            else _one_line(text.split("WeightsUnpickler error:")[-1], 80)
        )
        return CheckpointError(f"{name}: corrupt or not a checkpoint (refused to unpickle by weights_only: {detail})")
    if isinstance(err, EOFError):
        return CheckpointError(f"{name}: truncated or empty file (unexpected end of file)")
    if isinstance(err, zipfile.BadZipFile) or "zip archive" in text or "central directory" in text:
        return CheckpointError(f"{name}: truncated or corrupt checkpoint ({_one_line(text.split('.')[0])})")
    if isinstance(err, pickle.UnpicklingError):
        return CheckpointError(f"{name}: corrupt or not a checkpoint ({_one_line(text)})")
    return CheckpointError(
        f"{name}: corrupt or not a PyTorch checkpoint ({type(err).__name__}: {_one_line(text) or 'no detail'})"
    )


def _numpy_safe_globals() -> list:
    """NumPy arrays/scalars/dtypes (e.g. ``np.random.get_state()``, an ``np.float64`` loss) are
    plain data; allow just their constructors. Anything else (functions, classes) stays refused."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return []
    multiarray = getattr(getattr(np, "_core", None), "multiarray", None) or np.core.multiarray
    allowed = [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [
            getattr(dtypes, name)
            for name in dir(dtypes)
            if name.endswith("DType") and name not in ("ObjectDType", "VoidDType", "StringDType")
        ]
    return allowed


def _safe_load(src: Source, map_location: Any) -> Any:
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    ctx = safe_globals(_numpy_safe_globals()) if safe_globals is not None else contextlib.nullcontext()
    with warnings.catch_warnings(), ctx:
        warnings.simplefilter("ignore")  # pickle-protocol chatter from the unpickler
        return torch.load(src, map_location=map_location, weights_only=True)


def read_checkpoint(src: Source, verify: bool = True, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict safely (``weights_only=True``, tensors on ``map_location``).

    For a path with a sidecar, the sha256 is checked first when ``verify`` (default). Missing,
    truncated, corrupt, malicious, or non-checkpoint files raise one-line ``CheckpointError``s.
    """
    name = _name(src)
    if _is_path(src):
        path = Path(src)
        if not path.exists():
            raise CheckpointError(f"{name}: no such checkpoint file")
        if path.is_dir():
            raise CheckpointError(f"{name}: is a directory, not a checkpoint file")
        if verify and sidecar_path(path).exists():
            verify_checkpoint(path)
    try:
        payload = _safe_load(src, map_location)
    except OSError as err:
        raise CheckpointError(f"{name}: cannot read: {os_reason(err)}") from None
    except Exception as err:  # torch raises RuntimeError/UnpicklingError/EOFError/KeyError/...
        raise _load_failure(name, err) from None
    if not isinstance(payload, dict) or "model" not in payload or "iteration" not in payload:
        keys = sorted(map(str, payload))[:5] if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{name}: not a checkpoint (no 'model'/'iteration' keys; found {keys})")
    return payload


def _strip_wrapper_prefixes(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept checkpoints saved from a compiled/DDP model by other code (keys ``_orig_mod.``/``module.``)."""
    for prefix in ("_orig_mod.", "module."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _check_model_fit(name: str, payload: dict, model: torch.nn.Module, state: Mapping[str, Any]) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {list(state[k].shape)} in file vs {list(own[k].shape)} in model"
        for k in own
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return
    parts = []
    file_cfg, own_cfg = payload.get("model_config"), _model_config_dict(model)
    if isinstance(file_cfg, dict) and isinstance(own_cfg, dict):
        diffs = [f"{k}={file_cfg.get(k)!r} vs {own_cfg.get(k)!r}" for k in own_cfg if file_cfg.get(k) != own_cfg.get(k)]
        if diffs:
            parts.append("config differs: " + _summarize(diffs))
    if shapes:
        parts.append("shape mismatch: " + _summarize(shapes, 2))
    if missing:
        parts.append(f"{len(missing)} missing keys: " + _summarize(missing))
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: " + _summarize(unexpected))
    raise CheckpointError(f"{name}: checkpoint does not fit this model (different model config?): " + "; ".join(parts))


def load_model_weights(model: torch.nn.Module, payload: dict[str, Any], name: object = "checkpoint") -> None:
    """The one weights loader: ``payload["model"]`` into ``model`` (compiled/DDP wrappers unwrapped).

    Keys saved from a wrapper by other code are accepted; a state dict that does not fit is one
    ``CheckpointError`` naming the config difference; FSDP2 (DTensor) parameters are filled from the
    whole tensors a checkpoint holds (every rank calls this with the same payload).
    """
    name = _name(name)
    bare = unwrap_model(model)
    state = _strip_wrapper_prefixes(payload["model"])
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{name}: 'model' entry is not a state dict")
    _check_model_fit(name, payload, bare, state)
    try:
        if any(is_dtensor(p) for p in bare.parameters()):
            _load_sharded(bare, state)
        else:
            bare.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{name}: cannot load model state: {_one_line(str(err))}") from None


def _load_sharded(model: torch.nn.Module, state: Mapping[str, Any]) -> None:
    """Fill FSDP2-sharded parameters from whole tensors: each rank keeps its own slice."""
    from torch.distributed.tensor import distribute_tensor

    with torch.no_grad():
        for key, p in model.named_parameters():
            p.copy_(distribute_tensor(state[key].to(p.device, p.dtype), p.device_mesh, p.placements))


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, payload: dict[str, Any], name: object = "checkpoint"
) -> None:
    """``payload["optimizer"]`` into ``optimizer``, or one ``CheckpointError`` saying why it can't."""
    name = _name(name)
    if "optimizer" not in payload:
        raise CheckpointError(f"{name}: has no optimizer state (saved without an optimizer)")
    try:
        optimizer.load_state_dict(payload["optimizer"])
    except (ValueError, KeyError, RuntimeError, TypeError) as err:
        raise CheckpointError(f"{name}: optimizer state does not match this optimizer: {_one_line(str(err))}") from None


def checkpoint_iteration(payload: dict[str, Any], name: object = "checkpoint") -> int:
    """The step a checkpoint was saved at."""
    try:
        return int(payload["iteration"])
    except (TypeError, ValueError):
        raise CheckpointError(f"{_name(name)}: iteration {payload['iteration']!r} is not an integer") from None


def model_from_checkpoint(payload: dict[str, Any], name: object = "checkpoint", device: Any = "cpu"):
    """A ``TransformerLM`` built from the ``model_config`` the checkpoint carries, with its weights."""
    from cs336_basics.lm.model import ModelConfig, TransformerLM

    name = _name(name)
    cfg_dict = payload.get("model_config")
    if not isinstance(cfg_dict, dict):
        raise CheckpointError(f"{name}: checkpoint has no model_config; it was not written by this project's trainer")
    try:
        config = ModelConfig.from_dict(cfg_dict)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{name}: bad model_config: {err}") from None
    model = TransformerLM(config, device=torch.device(device))
    load_model_weights(model, payload, name)
    return model


def resolve_checkpoint(path: PathLike, flag: str = "--checkpoint") -> Path:
    """A ``.pt`` file as given; a run directory: its ``best.pt``, else its newest ``checkpoint_iter_N.pt``."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{flag} {path}: no such file or directory")
    if path.is_file():
        return path
    manager = CheckpointManager(path)
    if manager.best_path.is_file():
        return manager.best_path
    numbered = manager.list()
    if not numbered:
        raise CheckpointError(f"{flag} {path}: directory has no best.pt or checkpoint_iter_N.pt")
    return numbered[-1]


# ----------------------------------------------------------------------------------------------
# manager
# ----------------------------------------------------------------------------------------------
def _link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` = the same bytes as ``src``: an atomic hard link, or an atomic copy if links fail."""
    tmp = dst.parent / f".{dst.name}.{os.getpid()}.link.tmp"
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.link(src, tmp)
        os.replace(tmp, dst)
        fsync_dir(dst.parent)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        try:
            with open(src, "rb") as f, atomic_write(dst, "wb") as out:
                shutil.copyfileobj(f, out, _HASH_CHUNK)
        except OSError as err:
            raise CheckpointError(f"could not write checkpoint {dst}: {os_reason(err)}") from None


WEIGHT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def weights_copy_path(path: PathLike, precision: str) -> Path:
    """``checkpoint_iter_5.pt`` -> ``checkpoint_iter_5.bf16.safetensors`` (``--save_precision bf16``)."""
    p = Path(path)
    return p.with_name(f"{p.stem}.{precision}.safetensors")


class CheckpointManager:
    """``checkpoint_iter_{N}.pt`` + sidecars in one directory, with ``best.pt`` and rotation.

    ``keep_last=None`` keeps everything; otherwise only the newest ``keep_last`` numbered
    checkpoints are kept (never ``best.pt``, never the one just written). ``best_dir``: each new
    best checkpoint is also kept there under its numbered name (with its sidecar), the newest
    ``keep_best`` of them (all when None); they are the best ones, each better than the one before.
    ``weights_precision`` (fp32, fp16, bf16): beside each checkpoint (and ``best.pt``) a copy of its
    weights in that precision, ``checkpoint_iter_N.bf16.safetensors``, removed with it.
    """

    BEST = "best.pt"

    def __init__(
        self,
        directory: PathLike,
        keep_last: int | None = None,
        *,
        best_dir: PathLike | None = None,
        keep_best: int | None = None,
        weights_precision: str | None = None,
    ) -> None:
        for name, keep in (("keep_last", keep_last), ("keep_best", keep_best)):
            if keep is not None and (not isinstance(keep, int) or keep < 1):
                raise CheckpointError(f"{name} must be a positive integer or None, got {keep!r}")
        if weights_precision is not None and weights_precision not in WEIGHT_DTYPES:
            raise CheckpointError(
                f"weights_precision must be one of {', '.join(WEIGHT_DTYPES)}, got {weights_precision!r}"
            )
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.best = None if best_dir is None else CheckpointManager(best_dir, keep_last=keep_best)
        if self.best is not None and self.best.directory.resolve() == self.directory.resolve():
            raise CheckpointError(f"the best-checkpoint directory {best_dir} is the run directory: name another one")
        self.weights_precision = weights_precision
        self.skipped: list[str] = []  # reasons from the last latest_intact() call

    def path_for(self, iteration: int) -> Path:
        return self.directory / f"checkpoint_iter_{int(iteration)}.pt"

    @property
    def best_path(self) -> Path:
        return self.directory / self.BEST

    def check_writable(self) -> None:
        """Fail before training starts (not after hours) if checkpoints could not be written."""
        d = self.directory
        try:
            d.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise CheckpointError(f"checkpoint directory {d} exists and is not a directory") from None
        except OSError as err:
            raise CheckpointError(f"cannot create checkpoint directory {d}: {os_reason(err)}") from None
        try:
            fd, tmp = tempfile.mkstemp(prefix=".write_test.", suffix=".tmp", dir=d)
            os.close(fd)
            os.unlink(tmp)
        except OSError as err:
            raise CheckpointError(f"checkpoint directory {d} is not writable: {os_reason(err)}") from None

    def remove_stale_temps(self) -> list[Path]:
        """Delete temp files a killed writer left behind (``.checkpoint_iter_N.pt.XXXX.tmp`` and the
        like; they can be as large as a checkpoint). They are never taken for checkpoints anyway;
        call this only when no other process writes to this directory."""
        removed = []
        if not self.directory.is_dir():
            return removed
        for p in self.directory.iterdir():
            n = p.name
            ours = n.startswith((".checkpoint_iter_", f".{self.BEST}", ".best.", ".write_test."))
            if ours and n.endswith(".tmp") and p.is_file():
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed.append(p)
        return removed

    def save(
        self,
        payload: dict[str, Any],
        iteration: int,
        sidecar_extra: Mapping[str, Any] | None = None,
        is_best: bool = False,
    ) -> Path:
        """Write ``checkpoint_iter_{iteration}.pt`` (+ sidecar), maybe ``best.pt``, then rotate."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CheckpointError(f"cannot create checkpoint directory {self.directory}: {os_reason(err)}") from None
        path = self.path_for(iteration)
        sha, size = _write_torch_file(payload, path)
        meta = {"iteration": int(iteration), **dict(sidecar_extra or {})}
        write_sidecar(path, meta, sha256=sha, size=size)
        self._write_weights_copy(payload, path)
        if is_best:
            self._publish_best(path, meta, sha, size)
            self._write_weights_copy(payload, self.best_path)
            self._keep_best(path, path.name, meta, sha, size)
        self._rotate(keep=path)
        return path

    def save_best(
        self, payload: dict[str, Any], iteration: int, sidecar_extra: Mapping[str, Any] | None = None
    ) -> Path:
        """Write only ``best.pt`` (+ ``best.json``), e.g. at an eval that is not a checkpoint step."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CheckpointError(f"cannot create checkpoint directory {self.directory}: {os_reason(err)}") from None
        sha, size = _write_torch_file(payload, self.best_path)
        meta = {"iteration": int(iteration), **dict(sidecar_extra or {})}
        write_sidecar(self.best_path, meta, sha256=sha, size=size)
        self._write_weights_copy(payload, self.best_path)
        self._keep_best(self.best_path, self.path_for(iteration).name, meta, sha, size)
        return self.best_path

    def _publish_best(self, path: Path, meta: dict, sha: str, size: int) -> None:
        """best.pt = same bytes as ``path``: an atomic hard link, or an atomic copy if links fail."""
        _link_or_copy(path, self.best_path)
        write_sidecar(self.best_path, {**meta, "source": path.name}, sha256=sha, size=size)

    def _keep_best(self, path: Path, name: str, meta: dict, sha: str, size: int) -> None:
        """With a best directory: the new best checkpoint there too, as ``name``; the oldest beyond
        ``keep_best`` go."""
        if self.best is None:
            return
        try:
            self.best.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CheckpointError(
                f"cannot create the best-checkpoint directory {self.best.directory}: {os_reason(err)}"
            ) from None
        kept = self.best.directory / name
        _link_or_copy(path, kept)
        write_sidecar(kept, meta, sha256=sha, size=size)
        self.best._rotate(keep=kept)

    def _write_weights_copy(self, payload: dict[str, Any], path: Path) -> None:
        """``--save_precision``: the payload's weights in that precision, beside ``path``."""
        if self.weights_precision is None:
            return
        from cs336_basics.interop.safetensors_io import save_file

        dtype = WEIGHT_DTYPES[self.weights_precision]
        weights = {
            k: v.to(dtype) if v.is_floating_point() else v for k, v in _strip_wrapper_prefixes(payload["model"]).items()
        }
        out = weights_copy_path(path, self.weights_precision)
        try:
            save_file(
                weights,
                out,
                metadata={"format": "pt", "iteration": str(int(payload["iteration"])), "source": path.name},
            )
        except UserError as err:
            raise CheckpointError(f"could not write {out}: {err}") from None

    def _rotate(self, keep: Path) -> None:
        if self.keep_last is None:
            return
        ckpts = self.list()
        keep_set = set(ckpts[-self.keep_last :]) | {keep}
        for old in ckpts:
            if old in keep_set:
                continue
            try:
                old.unlink(missing_ok=True)  # .pt first: a lone sidecar is ignored by list()
                sidecar_path(old).unlink(missing_ok=True)
                for copy in self.directory.glob(f"{old.stem}.*.safetensors"):  # --save_precision's copies
                    copy.unlink(missing_ok=True)
            except OSError as err:
                warnings.warn(f"could not remove old checkpoint {old}: {os_reason(err)}", stacklevel=3)

    def list(self) -> list[Path]:
        """Numbered checkpoints in the directory, oldest iteration first."""
        if not self.directory.is_dir():
            return []
        found = []
        for entry in self.directory.iterdir():
            m = _CKPT_RE.match(entry.name)
            if m and entry.is_file():
                found.append((int(m.group(1)), entry))
        return [p for _, p in sorted(found)]

    def latest_intact(
        self, accept: Callable[[Path, dict[str, Any]], None] | None = None
    ) -> tuple[Path, dict[str, Any], list[str]] | None:
        """Newest checkpoint that verifies against its sidecar, loads, and passes ``accept`` (a
        check that raises CheckpointError), plus why newer ones didn't.

        Returns ``(path, payload, skipped_reasons)`` or ``None`` when nothing usable exists (the
        reasons, each ``"<path>: <why>"``, are also in ``self.skipped``).
        """
        reasons: list[str] = []
        for path in reversed(self.list()):
            try:
                verify_checkpoint(path)
                payload = read_checkpoint(path, verify=False)
                if accept is not None:
                    accept(path, payload)
            except CheckpointError as err:
                reason = str(err)
                reasons.append(reason if reason.startswith(str(path)) else f"{path}: {reason}")
                continue
            self.skipped = reasons
            return path, payload, reasons
        self.skipped = reasons
        return None


# ----------------------------------------------------------------------------------------------
# The course's interface, with all of the above: the fast twin of cs336_basics.checkpoint
# ----------------------------------------------------------------------------------------------
def save_checkpoint(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, iteration: int, out: Source, **extra: Any
) -> None:
    """The textbook's ``save_checkpoint`` (model, optimizer, iteration; plus ``extra`` keys and the
    model's config), written atomically with a sha256 sidecar, the model unwrapped from compile/DDP."""
    write_checkpoint(build_payload(model, optimizer, iteration, **extra), out)


def load_checkpoint(src: Source, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """The textbook's ``load_checkpoint``, verified (sidecar, ``weights_only``) with one-line errors
    that name what does not fit; returns the saved iteration."""
    payload = read_checkpoint(src)
    load_model_weights(model, payload, src)
    if optimizer is not None:
        load_optimizer_state(optimizer, payload, src)
    return checkpoint_iteration(payload, src)
