"""Checkpoint save/load, safety (weights_only, sha256 sidecars), atomic writes and the manager."""

from __future__ import annotations

import errno
import io
import os
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
import torch

from cs336_basics.fast.optim import AdamW
from cs336_basics.lm.model import unwrap_model
from cs336_basics.training import checkpoints as ckpt_mod
from cs336_basics.training.checkpoints import (
    CheckpointError,
    CheckpointManager,
    build_payload,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    sidecar_path,
    verify_checkpoint,
    write_sidecar,
)
from cs336_basics.utils.errors import UserError


@dataclass
class TinyConfig:
    d_in: int = 6
    d_hidden: int = 8

    def to_dict(self) -> dict:
        return asdict(self)


class TinyNet(torch.nn.Module):
    def __init__(self, config: TinyConfig | None = None) -> None:
        super().__init__()
        self.config = config or TinyConfig()
        self.fc1 = torch.nn.Linear(self.config.d_in, self.config.d_hidden)
        self.fc2 = torch.nn.Linear(self.config.d_hidden, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _trained(seed: int = 0, steps: int = 3, config: TinyConfig | None = None):
    torch.manual_seed(seed)
    model = TinyNet(config)
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(4, model.config.d_in)).pow(2).sum().backward()
        opt.step()
    return model, opt


def _assert_same_model(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _assert_same_optimizer(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for i in sa["state"]:
        for k, v in sa["state"][i].items():
            w = sb["state"][i][k]
            assert torch.equal(v, w) if torch.is_tensor(v) else v == w


def _step(model, opt, seed=99):
    g = torch.Generator().manual_seed(seed)
    opt.zero_grad()
    model(torch.randn(4, model.config.d_in, generator=g)).pow(2).sum().backward()
    opt.step()


# ----------------------------------------------------------------------------------------------
# round trips
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["path", "str", "bytesio"])
def test_round_trip_model_and_optimizer(tmp_path, kind):
    model, opt = _trained()
    target: object
    if kind == "bytesio":
        target = io.BytesIO()
    elif kind == "str":
        target = str(tmp_path / "c.pt")
    else:
        target = tmp_path / "c.pt"
    save_checkpoint(model, opt, 42, target)
    if kind == "bytesio":
        target.seek(0)
    fresh, _ = _trained(seed=1, steps=0)
    fresh_opt = AdamW(fresh.parameters(), lr=1.0)
    assert load_checkpoint(target, fresh, fresh_opt) == 42
    _assert_same_model(model, fresh)
    _assert_same_optimizer(opt, fresh_opt)
    # and training continues identically
    _step(model, opt)
    _step(fresh, fresh_opt)
    _assert_same_model(model, fresh)


def test_payload_contents_and_plain_weights_only_load(tmp_path):
    model, opt = _trained()
    path = tmp_path / "c.pt"
    save_checkpoint(model, opt, 7, path, best_val_loss=1.5, train_config={"lr": 1e-3})
    raw = torch.load(path, weights_only=True, map_location="cpu")
    assert raw["iteration"] == 7
    assert raw["model_config"] == {"d_in": 6, "d_hidden": 8}
    assert raw["best_val_loss"] == 1.5 and raw["train_config"] == {"lr": 1e-3}
    assert set(raw["model"]) == set(model.state_dict())
    assert "optimizer" in raw
    assert sidecar_path(path).exists()
    verify_checkpoint(path)


def test_optimizer_none(tmp_path):
    model, opt = _trained()
    path = tmp_path / "noopt.pt"
    save_checkpoint(model, None, 3, path)
    assert "optimizer" not in read_checkpoint(path)
    fresh, _ = _trained(seed=5, steps=0)
    assert load_checkpoint(path, fresh) == 3
    _assert_same_model(model, fresh)
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(path, fresh, AdamW(fresh.parameters()))
    # a checkpoint with optimizer state can be loaded into a model alone
    save_checkpoint(model, opt, 4, tmp_path / "withopt.pt")
    assert load_checkpoint(tmp_path / "withopt.pt", fresh, None) == 4


def test_unwraps_compiled_model(tmp_path):
    model, opt = _trained()
    compiled = torch.compile(model)  # never run: only the wrapper matters
    assert hasattr(compiled, "_orig_mod")
    assert unwrap_model(compiled) is model
    path = tmp_path / "compiled.pt"
    save_checkpoint(compiled, opt, 1, path)
    keys = set(read_checkpoint(path)["model"])
    assert keys == set(model.state_dict()) and not any(k.startswith("_orig_mod") for k in keys)
    assert read_checkpoint(path)["model_config"] == {"d_in": 6, "d_hidden": 8}
    fresh = torch.compile(TinyNet())
    load_checkpoint(path, fresh)  # loads into a compiled model too
    _assert_same_model(model, unwrap_model(fresh))


class FakeDDP(torch.nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module


class NotAModule:
    def __init__(self, module):
        self.module = module


def test_unwraps_ddp_like_wrappers(tmp_path):
    model, opt = _trained()
    assert unwrap_model(FakeDDP(model)) is model
    assert unwrap_model(NotAModule(model)) is model
    assert unwrap_model(torch.compile(FakeDDP(model))) is model
    save_checkpoint(FakeDDP(model), opt, 2, tmp_path / "ddp.pt")
    assert not any(k.startswith("module.") for k in read_checkpoint(tmp_path / "ddp.pt")["model"])
    fresh = TinyNet()
    load_checkpoint(tmp_path / "ddp.pt", FakeDDP(fresh))
    _assert_same_model(model, fresh)


def test_module_child_in_a_real_model_is_not_a_wrapper():
    class HasModuleChild(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.module = torch.nn.Linear(2, 2)
            self.head = torch.nn.Linear(2, 2)

    m = HasModuleChild()
    assert unwrap_model(m) is m


def test_real_ddp_world_size_one(tmp_path):
    import torch.distributed as dist

    if not dist.is_available() or dist.is_initialized():
        pytest.skip("torch.distributed unavailable or already initialized")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model, opt = _trained()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        assert unwrap_model(ddp) is model
        save_checkpoint(ddp, opt, 9, tmp_path / "real_ddp.pt")
        assert set(read_checkpoint(tmp_path / "real_ddp.pt")["model"]) == set(model.state_dict())
    finally:
        dist.destroy_process_group()


def test_loads_checkpoints_saved_with_wrapper_prefixes(tmp_path):
    """Files written by other code from a compiled/DDP model (keys '_orig_mod.'/'module.')."""
    model, _ = _trained()
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"model": state, "iteration": 5}, tmp_path / "foreign.pt")
    fresh = TinyNet()
    assert load_checkpoint(tmp_path / "foreign.pt", fresh) == 5
    _assert_same_model(model, fresh)


# ----------------------------------------------------------------------------------------------
# bad files
# ----------------------------------------------------------------------------------------------
class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("container", ["torch_zip", "plain_pickle"])
def test_malicious_pickle_refused_without_running_code(tmp_path, container):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"model": _Evil(marker), "iteration": 1}
    if container == "torch_zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    model = TinyNet()
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, model)
    msg = str(e.value)
    assert "evil.pt" in msg and "refused to unpickle" in msg and "weights_only" in msg
    if container == "torch_zip" or "system" in msg:
        assert "system" in msg
    assert "\n" not in msg
    assert not marker.exists()


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"nothere\.pt: no such"):
        load_checkpoint(tmp_path / "nothere.pt", TinyNet())


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(CheckpointError, match="directory"):
        read_checkpoint(tmp_path)


@pytest.mark.parametrize("keep_bytes", [0, 10, "half"])
def test_truncated_file(tmp_path, keep_bytes):
    model, opt = _trained()
    buf = io.BytesIO()
    save_checkpoint(model, opt, 1, buf)
    data = buf.getvalue()
    n = len(data) // 2 if keep_bytes == "half" else keep_bytes
    path = tmp_path / "trunc.pt"
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path)
    msg = str(e.value)
    assert "trunc.pt" in msg and ("truncated" in msg or "corrupt" in msg)
    assert "\n" not in msg


def test_truncated_file_with_sidecar_reports_size(tmp_path):
    model, opt = _trained()
    path = tmp_path / "c.pt"
    save_checkpoint(model, opt, 1, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=r"c\.pt: size mismatch"):
        read_checkpoint(path)


def test_byte_flip_caught_by_sha256(tmp_path):
    model, opt = _trained()
    path = tmp_path / "flip.pt"
    save_checkpoint(model, opt, 1, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # torch.load alone would not notice this
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"flip\.pt: sha256 mismatch"):
        verify_checkpoint(path)
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_checkpoint(path, TinyNet())


def test_not_a_checkpoint(tmp_path):
    torch.save({"weights": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt: not a checkpoint"):
        read_checkpoint(tmp_path / "other.pt")
    torch.save(torch.ones(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match=r"tensor\.pt: not a checkpoint"):
        read_checkpoint(tmp_path / "tensor.pt")
    (tmp_path / "text.pt").write_text("hello, I am a text file\n")
    with pytest.raises(CheckpointError, match=r"text\.pt: (corrupt|not a)"):
        read_checkpoint(tmp_path / "text.pt")
    (tmp_path / "random.pt").write_bytes(bytes(range(256)) * 20)
    with pytest.raises(CheckpointError, match=r"random\.pt: corrupt or not a checkpoint") as e:
        read_checkpoint(tmp_path / "random.pt")
    assert "\n" not in str(e.value)


def test_foreign_model_config_message(tmp_path):
    model, opt = _trained()
    path = tmp_path / "small.pt"
    save_checkpoint(model, opt, 1, path)
    other = TinyNet(TinyConfig(d_in=6, d_hidden=16))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, other)
    msg = str(e.value)
    assert "small.pt" in msg and "shape mismatch" in msg and "fc1.weight" in msg
    assert "d_hidden=8 vs 16" in msg
    assert "\n" not in msg

    class Different(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(6, 8)

    with pytest.raises(CheckpointError, match=r"missing keys: layer\.weight.*unexpected keys"):
        load_checkpoint(path, Different())


def test_optimizer_mismatch_message(tmp_path):
    model, opt = _trained()
    path = tmp_path / "c.pt"
    save_checkpoint(model, opt, 1, path)
    fresh = TinyNet()
    two_groups = AdamW([{"params": [fresh.fc1.weight]}, {"params": [fresh.fc1.bias]}])
    with pytest.raises(CheckpointError, match=r"c\.pt: optimizer state does not match"):
        load_checkpoint(path, fresh, two_groups)


def test_error_class():
    assert issubclass(CheckpointError, UserError)


# ----------------------------------------------------------------------------------------------
# atomic writes
# ----------------------------------------------------------------------------------------------
def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_enospc_on_fsync_keeps_previous_and_leaves_no_temp(tmp_path, monkeypatch):
    model, opt = _trained()
    path = tmp_path / "c.pt"
    save_checkpoint(model, opt, 1, path)
    before = path.read_bytes()
    before_side = sidecar_path(path).read_text()
    _step(model, opt)
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(CheckpointError) as e:
        save_checkpoint(model, opt, 2, path)
    monkeypatch.undo()
    assert str(e.value) == f"could not write checkpoint {path}: No space left on device"
    assert path.read_bytes() == before and sidecar_path(path).read_text() == before_side
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.pt"]
    assert read_checkpoint(path)["iteration"] == 1


def test_enospc_mid_write_in_manager(tmp_path, monkeypatch):
    model, opt = _trained()
    mgr = CheckpointManager(tmp_path / "run")
    mgr.save(build_payload(model, opt, 1), 1)
    real_write = ckpt_mod._HashingWriter.write
    calls = {"n": 0}

    def failing_write(self, data):
        calls["n"] += 1
        if calls["n"] > 3:  # fail partway through the zip stream
            self.error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            raise self.error
        return real_write(self, data)

    monkeypatch.setattr(ckpt_mod._HashingWriter, "write", failing_write)
    with pytest.raises(
        CheckpointError, match=r"could not write checkpoint .*checkpoint_iter_2\.pt: No space left on device"
    ):
        mgr.save(build_payload(model, opt, 2), 2)
    monkeypatch.undo()
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == ["checkpoint_iter_1.json", "checkpoint_iter_1.pt"]
    path, payload, skipped = mgr.latest_intact()
    assert path.name == "checkpoint_iter_1.pt" and payload["iteration"] == 1 and skipped == []


def test_enospc_from_real_file_write(tmp_path, monkeypatch):
    """The OSError raised by the underlying file object (not our wrapper) is reported as is."""
    model, opt = _trained()
    real_atomic = ckpt_mod.atomic_write

    class FullDisk(io.RawIOBase):
        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, b):
            self.n += 1
            if self.n > 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.f.write(b)

        def flush(self):
            self.f.flush()

        def fileno(self):
            return self.f.fileno()

    import contextlib

    @contextlib.contextmanager
    def full_atomic(path, mode="wb", **kw):
        with real_atomic(path, mode, **kw) as f:
            yield FullDisk(f)

    monkeypatch.setattr(ckpt_mod, "atomic_write", full_atomic)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_checkpoint(model, opt, 1, tmp_path / "x.pt")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_sidecar_hash_is_of_bytes_written(tmp_path):
    import hashlib
    import json

    model, opt = _trained()
    path = tmp_path / "c.pt"
    save_checkpoint(model, opt, 1, path)
    meta = json.loads(sidecar_path(path).read_text())
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["size"] == path.stat().st_size and meta["iteration"] == 1
    # write_sidecar without a precomputed hash hashes the file itself
    side = write_sidecar(path, {"note": "x"})
    assert json.loads(side.read_text())["sha256"] == meta["sha256"]


# ----------------------------------------------------------------------------------------------
# CheckpointManager
# ----------------------------------------------------------------------------------------------
def test_manager_rotation_keeps_best_and_latest(tmp_path):
    model, opt = _trained()
    mgr = CheckpointManager(tmp_path / "run", keep_last=2)
    for it in (100, 200, 300, 400, 500):
        p = mgr.save(build_payload(model, opt, it), it, {"val_loss": 1.0 / it}, is_best=(it == 200))
        assert p == tmp_path / "run" / f"checkpoint_iter_{it}.pt"
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == [
        "best.json",
        "best.pt",
        "checkpoint_iter_400.json",
        "checkpoint_iter_400.pt",
        "checkpoint_iter_500.json",
        "checkpoint_iter_500.pt",
    ]
    assert [p.name for p in mgr.list()] == ["checkpoint_iter_400.pt", "checkpoint_iter_500.pt"]
    verify_checkpoint(tmp_path / "run" / "best.pt")
    assert read_checkpoint(tmp_path / "run" / "best.pt")["iteration"] == 200


def test_manager_list_sorted_numerically(tmp_path):
    model, opt = _trained()
    mgr = CheckpointManager(tmp_path)
    for it in (1000, 20, 300):
        mgr.save(build_payload(model, opt, it), it)
    (tmp_path / "checkpoint_iter_x.pt").write_bytes(b"")  # not matched
    assert [p.name for p in mgr.list()] == [
        "checkpoint_iter_20.pt",
        "checkpoint_iter_300.pt",
        "checkpoint_iter_1000.pt",
    ]


def test_manager_latest_intact_falls_back_with_reasons(tmp_path):
    model, opt = _trained()
    mgr = CheckpointManager(tmp_path)
    for it in (1, 2, 3, 4):
        mgr.save(build_payload(model, opt, it), it)
    # 4: byte flip; 3: sidecar deleted; 2: truncated with a fresh (lying) sidecar; 1: fine
    p4 = mgr.path_for(4)
    data = bytearray(p4.read_bytes())
    data[len(data) // 3] ^= 0xFF
    p4.write_bytes(bytes(data))
    sidecar_path(mgr.path_for(3)).unlink()
    p2 = mgr.path_for(2)
    p2.write_bytes(p2.read_bytes()[:200])
    write_sidecar(p2, {"iteration": 2})
    found = mgr.latest_intact()
    assert found is not None
    path, payload, reasons = found
    assert path == mgr.path_for(1) and payload["iteration"] == 1
    assert len(reasons) == 3
    assert "checkpoint_iter_4.pt" in reasons[0] and "sha256 mismatch" in reasons[0]
    assert "checkpoint_iter_3.pt" in reasons[1] and "no sidecar" in reasons[1]
    assert "checkpoint_iter_2.pt" in reasons[2] and ("truncated" in reasons[2] or "corrupt" in reasons[2])
    fresh, _ = _trained(seed=3, steps=0)
    assert load_checkpoint(path, fresh) == 1


def test_manager_latest_intact_none(tmp_path):
    mgr = CheckpointManager(tmp_path / "empty")
    assert mgr.list() == [] and mgr.latest_intact() is None
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "checkpoint_iter_5.pt").write_bytes(b"junk")
    assert mgr.latest_intact() is None
    assert len(mgr.skipped) == 1 and "no sidecar" in mgr.skipped[0]


def test_manager_check_writable(tmp_path):
    CheckpointManager(tmp_path / "a" / "b").check_writable()
    assert (tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="not a directory"):
        CheckpointManager(tmp_path / "file").check_writable()
    with pytest.raises(CheckpointError):
        CheckpointManager(tmp_path / "file" / "sub").check_writable()
    if os.geteuid() != 0:  # root ignores permissions
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(CheckpointError, match="not writable"):
                CheckpointManager(ro).check_writable()
        finally:
            ro.chmod(0o700)


def test_manager_rejects_bad_keep_last(tmp_path):
    with pytest.raises(CheckpointError, match="keep_last"):
        CheckpointManager(tmp_path, keep_last=0)


def test_manager_sidecar_extra_and_payload_round_trip(tmp_path):
    import json

    model, opt = _trained()
    mgr = CheckpointManager(tmp_path)
    rng_state = torch.get_rng_state()
    payload = build_payload(model, opt, 10, rng={"torch": rng_state}, best_val_loss=None)
    path = mgr.save(payload, 10, {"val_loss": 2.5, "tokens_seen": 1234})
    meta = json.loads(sidecar_path(path).read_text())
    assert meta["iteration"] == 10 and meta["val_loss"] == 2.5 and meta["tokens_seen"] == 1234
    _, loaded, _ = mgr.latest_intact()
    assert torch.equal(loaded["rng"]["torch"], rng_state) and loaded["best_val_loss"] is None
    fresh, _ = _trained(seed=4, steps=0)
    fresh_opt = AdamW(fresh.parameters())
    assert load_checkpoint(path, fresh, fresh_opt) == 10
    _assert_same_optimizer(opt, fresh_opt)


def test_numpy_rng_state_and_scalars_load_but_object_arrays_do_not(tmp_path):
    import numpy as np

    model, opt = _trained()
    np_state = np.random.get_state()
    path = tmp_path / "np.pt"
    save_checkpoint(
        model,
        opt,
        1,
        path,
        rng={"numpy": np_state, "generator": np.random.default_rng(0).bit_generator.state},
        best_val_loss=np.float64(2.5),
    )
    loaded = read_checkpoint(path)
    assert loaded["rng"]["numpy"][0] == np_state[0]
    assert np.array_equal(loaded["rng"]["numpy"][1], np_state[1])
    assert loaded["best_val_loss"] == 2.5
    np.random.set_state(loaded["rng"]["numpy"])  # usable as is
    torch.save({"model": {}, "iteration": 1, "o": np.array([1, "x"], dtype=object)}, tmp_path / "obj.pt")
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        read_checkpoint(tmp_path / "obj.pt")


def test_manager_save_best_only(tmp_path):
    model, opt = _trained()
    mgr = CheckpointManager(tmp_path, keep_last=1)
    mgr.save(build_payload(model, opt, 10), 10)
    best = mgr.save_best(build_payload(model, opt, 15), 15, {"val_loss": 1.25})
    assert best == tmp_path / "best.pt"
    verify_checkpoint(best)
    assert read_checkpoint(best)["iteration"] == 15
    assert [p.name for p in mgr.list()] == ["checkpoint_iter_10.pt"]
    mgr.save(build_payload(model, opt, 20), 20)
    assert [p.name for p in mgr.list()] == ["checkpoint_iter_20.pt"]
    assert best.exists() and read_checkpoint(best)["iteration"] == 15


def test_save_into_new_directory_and_load_from_open_file(tmp_path):
    model, opt = _trained()
    path = tmp_path / "deep" / "er" / "c.pt"
    save_checkpoint(model, opt, 8, path)
    fresh = TinyNet()
    with open(path, "rb") as f:
        assert load_checkpoint(f, fresh) == 8
    _assert_same_model(model, fresh)
    with open(path, "rb") as f:
        data = f.read()
    with pytest.raises(CheckpointError, match="stream"):
        read_checkpoint(io.BytesIO(data[:50]))


def test_textbook_checkpoint_round_trip(tmp_path):
    """cs336_basics.checkpoint: the course's save/load, plain torch.save / torch.load."""
    from cs336_basics import checkpoint as textbook
    from cs336_basics import optim

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    buf = io.BytesIO()
    textbook.save_checkpoint(model, opt, 7, buf)
    buf.seek(0)
    other = torch.nn.Linear(3, 2)
    other_opt = optim.AdamW(other.parameters(), lr=0.1)
    assert textbook.load_checkpoint(buf, other, other_opt) == 7
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    assert other_opt.state_dict()["state"][0]["step"] == 1
    textbook.save_checkpoint(model, opt, 7, tmp_path / "c.pt")
    assert set(torch.load(tmp_path / "c.pt", weights_only=True)) == {"model", "optimizer", "iteration"}
