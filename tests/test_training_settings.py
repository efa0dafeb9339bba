"""TrainSettings: the model flags are ModelConfig's fields with its defaults; TOML tables; flag typos."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch

from cs336_basics.lm.model import IMPLEMENTATION_FIELDS, ModelConfig, TransformerLM
from cs336_basics.training.settings import (
    MODEL_FIELDS,
    OBJECTIVE_MODEL_FIELDS,
    ConfigError,
    TrainSettings,
    flatten_toml,
    model_flags,
    parse_settings,
)


def test_every_model_field_is_a_flag_with_modelconfigs_default():
    flags = {f.name: f for f in fields(TrainSettings)}
    for f in fields(ModelConfig):
        if f.name in OBJECTIVE_MODEL_FIELDS:  # set by --objective, not flags of their own
            assert f.name not in flags
            continue
        assert f.name in flags, f"ModelConfig.{f.name} has no training flag"
        assert flags[f.name].default == f.default, f.name
    assert set(MODEL_FIELDS) == {f.name for f in fields(ModelConfig)} - set(IMPLEMENTATION_FIELDS) - set(
        OBJECTIVE_MODEL_FIELDS
    )


def test_model_config_comes_from_the_flags():
    s = parse_settings(["--train_data_path", "t.npy", "--d_model", "64", "--num_heads", "4", "--attention", "plain"])
    cfg = s.model_config()
    assert (cfg.d_model, cfg.num_heads, cfg.attention, cfg.vocab_size) == (64, 4, "plain", ModelConfig().vocab_size)


def test_flatten_toml_groups_by_table_and_refuses_a_key_set_twice():
    data = {"lr": 1e-3, "optim": {"beta1": 0.8, "inner": {"max-iters": 5}}}
    assert flatten_toml("c.toml", data) == {
        "lr": (1e-3, "lr"),
        "beta1": (0.8, "[optim] beta1"),
        "max_iters": (5, "[optim.inner] max-iters"),
    }
    with pytest.raises(ConfigError, match=r"c.toml: key 'lr' is set twice \(lr and \[optim\] lr\)"):
        flatten_toml("c.toml", {"lr": 1, "optim": {"lr": 2}})


def test_a_misspelled_flag_gets_a_suggestion(capsys):
    with pytest.raises(SystemExit) as info:
        parse_settings(["--train_data_path", "t.npy", "--learning_rate", "1e-3"])
    assert info.value.code == 2
    assert "--lr" in capsys.readouterr().err


# Names from other trainers' documents that mean something else: no guess (an honest "unknown").
NOT_TYPOS = [("max_batches", "2"), ("eval_steps", "50"), ("max_position_embeddings", "512"),
             ("resume_from_checkpoint", "runs/x/checkpoint_iter_5.pt"), ("lora_lr", "1e-4")]  # fmt: skip


@pytest.mark.parametrize(("name", "value"), NOT_TYPOS)
def test_a_different_name_gets_no_suggestion(capsys, name, value):
    with pytest.raises(SystemExit):
        parse_settings(["--train_data_path", "t.npy", f"--{name}", value])
    err = capsys.readouterr().err
    assert f"--{name}" in err and "did you mean" not in err, err
    with pytest.raises(ConfigError) as info:
        TrainSettings.from_kwargs(train_data_path="t.npy", **{name: value})
    assert "did you mean" not in str(info.value) and "not a training setting" in str(info.value), info.value


@pytest.mark.parametrize(
    ("name", "value", "meant"),
    [("max_itres", "5", "--max_iters"), ("lerning_rate", "1e-3", "--lr"), ("batchsize", "8", "--batch_size"),
     ("warmup_itres", "10", "--warmup_iters"), ("lr_shedule", "wsd", "--lr_schedule"), ("complie", None, "--compile")],
)  # fmt: skip
def test_a_typo_still_gets_its_suggestion(capsys, name, value, meant):
    with pytest.raises(SystemExit):
        parse_settings(["--train_data_path", "t.npy", f"--{name}", *([value] if value else [])])
    assert f"--{name} (did you mean {meant}?)" in capsys.readouterr().err


def test_a_typo_of_a_setting_of_another_kind_gets_no_suggestion(capsys):
    # --max_iters takes an integer: "0.5" was not meant for it; --lr_schedule takes cosine|wsd|...
    for argv in (["--max_itres", "0.5"], ["--lr_shedule", "fast"]):
        with pytest.raises(SystemExit):
            parse_settings(["--train_data_path", "t.npy", *argv])
        err = capsys.readouterr().err
        assert argv[0] in err and "did you mean" not in err, err


def test_model_flags_rebuild_the_config():
    cfg = ModelConfig(vocab_size=300, d_model=64, num_heads=2, remove_rope=True, ffn_type="silu", attention="plain")
    flags = model_flags(cfg)
    assert flags[:2] == ["--vocab_size", "300"] and "--remove_rope" in flags
    assert parse_settings(["--train_data_path", "t.npy", *flags]).model_config() == cfg
    assert model_flags(ModelConfig()) == []


def test_muon_ns_dtype_reaches_the_optimizer_and_needs_muon():
    from cs336_basics import training_together as tt

    def groups_dtype(*flags):
        s = parse_settings(["--train_data_path", "t.npy", "--d_model", "32", "--num_heads", "4", "--d_ff", "48",
                            "--num_layers", "1", "--vocab_size", "64", "--context_length", "16", *flags])  # fmt: skip
        opt = tt.build_optimizer(TransformerLM(s.model_config()), s)
        return {g["ns_dtype"] for g in opt.param_groups}

    assert groups_dtype("--optimizer", "muon") == {None}  # auto: bfloat16 on CUDA, float32 elsewhere
    assert groups_dtype("--optimizer", "muon", "--muon_ns_dtype", "bfloat16") == {torch.bfloat16}
    assert groups_dtype("--optimizer", "muon", "--muon_ns_dtype", "float32") == {torch.float32}
    with pytest.raises(ConfigError, match="--muon_ns_dtype bfloat16: applies to --optimizer muon only"):
        parse_settings(["--train_data_path", "t.npy", "--muon_ns_dtype", "bfloat16"])


def test_an_empty_tensorboard_dir_is_off_and_an_empty_checkpoint_dir_is_refused():
    """Path('') is the working directory: '' must never send TensorBoard files or checkpoints there."""
    assert parse_settings(["--train_data_path", "t.npy", "--tensorboard_dir", ""]).tensorboard_dir is None
    assert TrainSettings.from_kwargs(train_data_path="t.npy", tensorboard_dir="").tensorboard_dir is None
    assert parse_settings(["--train_data_path", "t.npy", "--tensorboard_dir", "tb"]).tensorboard_dir == "tb"
    with pytest.raises(ConfigError, match="--tensorboard_flush_every needs --tensorboard_dir"):
        parse_settings(["--train_data_path", "t.npy", "--tensorboard_dir", "", "--tensorboard_flush_every", "5"])
    with pytest.raises(ConfigError, match="--checkpoint_dir is empty"):
        parse_settings(["--train_data_path", "t.npy", "--checkpoint_dir", ""])


@pytest.mark.parametrize("flag", ["--init_from", "--resume_from"])
def test_an_empty_checkpoint_to_start_from_is_refused(flag):
    """An unset shell variable ($CKPT) must not silently start a fresh run."""
    with pytest.raises(ConfigError, match=f"{flag} is empty"):
        parse_settings(["--train_data_path", "t.npy", flag, ""])


@pytest.mark.parametrize(
    "name, value",
    [("lr", -1e-3), ("lr", float("inf")), ("min_lr", float("nan")), ("beta1", 1.0), ("beta2", float("nan")),
     ("eps", -1e-8), ("weight_decay", float("inf")), ("lr_hidden", float("inf")), ("lr_embed", -1.0),
     ("moe_z_coef", float("nan"))],
)  # fmt: skip
def test_optimizer_flags_follow_the_optimizers_rule(name, value):
    """The flags are refused by the optimizer's own rule (cs336_basics.optim.check_hparam), in one line
    naming the flag: --lr_hidden inf used to pass the flag checks and fail later, in the optimizer."""
    rule = "in [0, 1)" if name.startswith("beta") else "a finite number >= 0"
    kw = dict(train_data_path="t.npy", optimizer="muon" if name.startswith("lr_") else "adamw")
    with pytest.raises(ConfigError) as err:
        TrainSettings.from_kwargs(**kw, **{name: value})
    assert str(err.value) == f"--{name} must be {rule}, got {value!r}"
    edge = TrainSettings.from_kwargs(train_data_path="t.npy", lr=0.0, beta1=0.0, beta2=0.0, eps=0.0,
                                     weight_decay=0.0)  # fmt: skip
    assert (edge.lr, edge.min_lr, edge.beta1, edge.eps, edge.weight_decay) == (0.0, 0.0, 0.0, 0.0, 0.0)
