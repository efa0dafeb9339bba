"""Our TransformerLM <-> the Hugging Face Llama format (``LlamaForCausalLM``), both ways.

The handout's model *is* a Llama (Touvron et al., 2023, "LLaMA"): pre-norm RMSNorm blocks, RoPE,
a SwiGLU MLP, no biases, an untied output head. So a model trained here can be written as a
directory that ``transformers.AutoModelForCausalLM.from_pretrained(DIR)`` loads with no extra code
(and so lm-evaluation-harness, vLLM and llama.cpp's converter, which all read that layout), and such
a directory can be read back into ``TransformerLM``. What this module maps:

* the config: :class:`ModelConfig` <-> ``config.json`` of ``LlamaForCausalLM``
  (:func:`llama_config`, :func:`model_config_from_llama`). Architecture options the Llama format
  cannot express are refused by name (:func:`check_llama_expressible`), never approximated;
* the weights: our state-dict names <-> Hugging Face's (:func:`to_hf_state_dict`,
  :func:`from_hf_state_dict`), with the q/k row permutation between the two RoPE layouts
  (:func:`interleaved_to_halves`, explained there);
* whole directories: :func:`export_dir` (``hf`` or our own ``safetensors`` layout) and
  :func:`import_dir`; the command is ``python -m cs336_basics.tools.export``.

Weights are written and read with :mod:`cs336_basics.interop.safetensors_io` (nothing is unpickled).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor

from cs336_basics.interop.safetensors_io import load_file, save_file
from cs336_basics.lm.model import IMPLEMENTATION_FIELDS, ModelConfig, TransformerLM
from cs336_basics.utils.errors import UserError, os_reason, read_error_line
from cs336_basics.utils.fsutil import atomic_directory, atomic_write_text

__all__ = [
    "HFFormatError",
    "DTYPES",
    "check_llama_expressible",
    "llama_config",
    "model_config_from_llama",
    "interleaved_to_halves",
    "halves_to_interleaved",
    "to_hf_state_dict",
    "from_hf_state_dict",
    "check_out_dir",
    "check_out_file",
    "export_dir",
    "import_dir",
    "save_start_checkpoint",
]

# layers.RMSNorm's eps, used by every norm of TransformerLM (ModelConfig has no field for it).
RMS_NORM_EPS = 1e-5
WEIGHTS = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_HF_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}

# ModelConfig fields the Llama config carries (ours -> Hugging Face's name).
_MAPPED = {
    "vocab_size": "vocab_size",
    "context_length": "max_position_embeddings",
    "d_model": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "d_ff": "intermediate_size",
    "rope_theta": "rope_theta",
}
# Fields that choose how the same function is computed, not which function: every value exports.
_IMPLEMENTATION_ONLY = set(IMPLEMENTATION_FIELDS)  # how, not what, the model computes
# What the known architecture switches mean, for the refusal message. Every other field that is not
# mapped above is refused too when it differs from its ModelConfig default: a flag added later is
# an architecture change this mapping does not know how to write, so it must not pass silently.
_WHY_NOT = {
    "use_post_norm": "post-norm blocks; Llama is pre-norm",
    "remove_rmsnorm": "no RMSNorm; Llama normalizes in every block",
    "remove_rope": "NoPE; Llama uses RoPE",
    "ffn_type": "the non-gated SiLU FFN; Llama's MLP is SwiGLU",
}


class HFFormatError(UserError, ValueError):
    """A model cannot be written in, or read from, the Llama / safetensors layout (one line)."""


# ----------------------------------------------------------------------------------------------
# config
# ----------------------------------------------------------------------------------------------
def check_llama_expressible(cfg: ModelConfig) -> None:
    """Refuse, naming the option, any architecture choice ``LlamaForCausalLM`` cannot represent."""
    defaults = type(cfg)()
    for f in dataclasses.fields(cfg):
        if f.name in _MAPPED or f.name in _IMPLEMENTATION_ONLY:
            continue
        value, default = getattr(cfg, f.name), getattr(defaults, f.name)
        if value != default:
            why = _WHY_NOT.get(f.name, "an architecture option the Llama format has no field for")
            raise HFFormatError(
                f"model config {f.name}={value!r} ({why}) cannot be expressed in the Llama format; "
                "nothing was exported (use --format safetensors to keep this architecture)"
            )


def llama_config(cfg: ModelConfig, dtype: torch.dtype, eos_id: int | None) -> dict[str, Any]:
    """``config.json`` of the equivalent ``LlamaForCausalLM`` (after :func:`check_llama_expressible`).

    ``max_position_embeddings`` is the context length (Hugging Face only sizes its RoPE cache with
    it); one key/value head per query head (no grouped-query attention); ``rope_theta`` is written
    both at the top level (older transformers, vLLM, llama.cpp) and in ``rope_parameters``
    (transformers >= 5). The document separator ``<|endoftext|>`` is both BOS and EOS.
    """
    check_llama_expressible(cfg)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_heads,
        "head_dim": cfg.d_model // cfg.num_heads,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.context_length,
        "rms_norm_eps": RMS_NORM_EPS,
        "rope_theta": float(cfg.rope_theta),
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": float(cfg.rope_theta)},
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "tie_word_embeddings": False,
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "torch_dtype": _HF_DTYPE_NAMES[dtype],
    }


def _rope_theta(d: Mapping[str, Any], where: str) -> float:
    params = d.get("rope_parameters")
    scaling = d.get("rope_scaling")
    for extra in (params, scaling):
        if isinstance(extra, Mapping) and extra.get("rope_type", extra.get("type", "default")) != "default":
            kind = extra.get("rope_type", extra.get("type"))
            raise HFFormatError(f"{where}: RoPE scaling {kind!r} is not supported (TransformerLM has plain RoPE)")
    if scaling is not None and not isinstance(scaling, Mapping):
        raise HFFormatError(f"{where}: rope_scaling {scaling!r} is not understood")
    theta = d.get("rope_theta")
    if theta is None and isinstance(params, Mapping):
        theta = params.get("rope_theta")
    return 10000.0 if theta is None else theta


def model_config_from_llama(d: Mapping[str, Any], where: str = "config.json") -> ModelConfig:
    """The :class:`ModelConfig` of a Llama ``config.json``; anything TransformerLM cannot compute
    exactly (grouped-query attention, biases, other activations, RoPE scaling, another norm eps) is
    refused in one line naming the field."""
    archs = d.get("architectures") or []
    if d.get("model_type") != "llama" and "LlamaForCausalLM" not in archs:
        raise HFFormatError(
            f"{where}: model_type {d.get('model_type')!r} (architectures {archs}) is not a Llama model; "
            "only LlamaForCausalLM can be imported"
        )

    def need(key: str) -> Any:
        if key not in d:
            raise HFFormatError(f"{where}: missing {key!r}")
        return d[key]

    heads = need("num_attention_heads")
    kv_heads = d.get("num_key_value_heads") or heads
    if kv_heads != heads:
        raise HFFormatError(
            f"{where}: grouped-query attention (num_key_value_heads={kv_heads} < num_attention_heads={heads}) "
            "is not supported: TransformerLM has one key/value head per query head"
        )
    hidden = need("hidden_size")
    head_dim = d.get("head_dim")
    if head_dim is not None and isinstance(heads, int) and heads > 0 and head_dim * heads != hidden:
        raise HFFormatError(
            f"{where}: head_dim {head_dim} x {heads} heads != hidden_size {hidden}; TransformerLM needs them equal"
        )
    act = d.get("hidden_act", "silu")
    if act != "silu":
        raise HFFormatError(f"{where}: hidden_act {act!r} is not supported (TransformerLM's SwiGLU uses silu)")
    for key in ("attention_bias", "mlp_bias"):
        if d.get(key):
            raise HFFormatError(f"{where}: {key} is true; TransformerLM has no biases")
    eps = d.get("rms_norm_eps", 1e-6)
    if eps != RMS_NORM_EPS:
        raise HFFormatError(
            f"{where}: rms_norm_eps {eps} is not supported (TransformerLM's RMSNorm uses {RMS_NORM_EPS})"
        )
    fields = {
        "vocab_size": need("vocab_size"),
        "context_length": need("max_position_embeddings"),
        "d_model": hidden,
        "num_layers": need("num_hidden_layers"),
        "num_heads": heads,
        "d_ff": need("intermediate_size"),
        "rope_theta": _rope_theta(d, where),
    }
    try:
        return ModelConfig(**fields).validate()
    except (TypeError, ValueError) as err:
        raise HFFormatError(f"{where}: {err}") from None


# ----------------------------------------------------------------------------------------------
# weights
# ----------------------------------------------------------------------------------------------
# Why q and k are permuted. Both RoPEs turn 2-D pairs of a head's d coordinates by the same angles
# (pair i at position p by p * rope_theta^(-2i/d), i = 0..d/2-1); they differ only in WHICH two
# coordinates form pair i:
#     the handout (layers.apply_rope):   pair i = (x[2i], x[2i+1])      adjacent ("interleaved")
#     Hugging Face Llama (rotate_half):  pair i = (x[i],  x[i + d/2])   the two halves
# e.g. d = 4 with pairs a = (a0, a1), b = (b0, b1):
#     ours:  [a0 a1 b0 b1]      Hugging Face:  [a0 b0 a1 b1]
# so within each head, Hugging Face's coordinate j is our coordinate [0, 2, ..., d-2, 1, 3, ..., d-1][j].
# Reordering the output rows of q_proj and k_proj that way makes Hugging Face's rotated q and k the
# very vectors ours computes, with their coordinates listed in another order, the same order for both.
# A dot product does not depend on the order it sums in, so q.k, the attention weights and everything
# after them are unchanged. v_proj and o_proj are never rotated and stay as they are. (This is the
# `permute` of transformers' convert_llama_weights_to_hf.py, which maps Meta's interleaved weights.)
def interleaved_to_halves(w: Float[Tensor, "d_out d_in"], num_heads: int) -> Float[Tensor, "d_out d_in"]:
    """q/k projection rows from our adjacent-pair RoPE layout to Hugging Face's rotate-half layout."""
    return rearrange(w, "(heads pair two) d_in -> (heads two pair) d_in", heads=num_heads, two=2).contiguous()


def halves_to_interleaved(w: Float[Tensor, "d_out d_in"], num_heads: int) -> Float[Tensor, "d_out d_in"]:
    """The inverse of :func:`interleaved_to_halves` (Hugging Face layout back to ours)."""
    return rearrange(w, "(heads two pair) d_in -> (heads pair two) d_in", heads=num_heads, two=2).contiguous()


# Per-layer weights: (our name, Hugging Face's name, permute rows for RoPE).
_LAYER_NAMES = (
    ("attn.q_proj.weight", "self_attn.q_proj.weight", True),
    ("attn.k_proj.weight", "self_attn.k_proj.weight", True),
    ("attn.v_proj.weight", "self_attn.v_proj.weight", False),
    ("attn.output_proj.weight", "self_attn.o_proj.weight", False),
    ("ln1.weight", "input_layernorm.weight", False),
    ("ln2.weight", "post_attention_layernorm.weight", False),
    ("ffn.w1.weight", "mlp.gate_proj.weight", False),  # SwiGLU: W2(SiLU(W1 x) * W3 x)
    ("ffn.w3.weight", "mlp.up_proj.weight", False),
    ("ffn.w2.weight", "mlp.down_proj.weight", False),
)
_TOP_NAMES = (
    ("token_embeddings.weight", "model.embed_tokens.weight"),
    ("ln_final.weight", "model.norm.weight"),
    ("lm_head.weight", "lm_head.weight"),
)


def _name_pairs(cfg: ModelConfig) -> list[tuple[str, str, bool]]:
    pairs = [(ours, hf, False) for ours, hf in _TOP_NAMES]
    for i in range(cfg.num_layers):
        pairs += [(f"layers.{i}.{ours}", f"model.layers.{i}.{hf}", perm) for ours, hf, perm in _LAYER_NAMES]
    return pairs


def _check_keys(have: set[str], want: set[str], where: str) -> None:
    missing, extra = sorted(want - have), sorted(have - want)
    if missing or extra:
        parts = []
        if missing:
            parts.append(
                f"missing {', '.join(missing[:3])}" + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else "")
            )
        if extra:
            parts.append(
                f"unexpected {', '.join(extra[:3])}" + (f" (+{len(extra) - 3} more)" if len(extra) > 3 else "")
            )
        raise HFFormatError(f"{where}: weights do not match the config: {'; '.join(parts)}")


def to_hf_state_dict(state: Mapping[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """Our state dict (names as ``TransformerLM`` has them) -> Hugging Face ``LlamaForCausalLM``'s."""
    check_llama_expressible(cfg)
    state = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in state.items()}
    pairs = _name_pairs(cfg)
    _check_keys(set(state), {ours for ours, _, _ in pairs}, "checkpoint")
    return {hf: interleaved_to_halves(state[ours], cfg.num_heads) if perm else state[ours] for ours, hf, perm in pairs}


def from_hf_state_dict(tensors: Mapping[str, Tensor], cfg: ModelConfig, where: str = "weights") -> dict[str, Tensor]:
    """Hugging Face Llama weights -> our state dict. A tied head (no ``lm_head.weight``, as with
    ``tie_word_embeddings``) becomes a copy of the embedding: the same function, untied from here on."""
    tensors = {k: v for k, v in tensors.items() if not k.endswith("rotary_emb.inv_freq")}  # old files kept it
    if "lm_head.weight" not in tensors and "model.embed_tokens.weight" in tensors:
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    pairs = _name_pairs(cfg)
    _check_keys(set(tensors), {hf for _, hf, _ in pairs}, where)
    return {
        ours: halves_to_interleaved(tensors[hf], cfg.num_heads) if perm else tensors[hf] for ours, hf, perm in pairs
    }


# ----------------------------------------------------------------------------------------------
# directories
# ----------------------------------------------------------------------------------------------
# Every file an export may write: a directory holding only these is an earlier export, which
# --overwrite may replace (a directory holding anything else never is).
EXPORT_FILES = (
    "config.json",
    WEIGHTS,
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens.json",
)


def check_out_dir(out: str | os.PathLike, overwrite: bool = False) -> None:
    """``out`` must be new or empty; with ``overwrite``, also a previous export (only files an export
    writes). Anything else is refused in one line, before anything is written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise HFFormatError(f"--out {out}: exists and is not a directory")
    if out.is_dir():
        names = sorted(p.name for p in out.iterdir())
        foreign = [n for n in names if n not in EXPORT_FILES]
        if foreign:
            raise HFFormatError(
                f"--out {out}: directory holds files an export does not write ({', '.join(foreign[:3])}); "
                "choose a new or empty directory"
            )
        if names and not overwrite:
            raise HFFormatError(
                f"--out {out}: already holds an export ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}); "
                "nothing was written (pass --overwrite to replace it)"
            )


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def export_dir(
    model: TransformerLM,
    out: str | os.PathLike,
    fmt: str = "hf",
    dtype: str = "fp32",
    tokenizer: Any | None = None,
    overwrite: bool = False,
) -> list[str]:
    """Write ``model`` (and ``tokenizer``, a :class:`~cs336_basics.tokenizer.Tokenizer`) to ``out``.

    ``fmt="hf"``: ``config.json`` (LlamaForCausalLM), ``model.safetensors`` with Hugging Face's
    names, ``generation_config.json``; ``fmt="safetensors"``: ``model.safetensors`` with our names
    and ``config.json`` = our ``ModelConfig``. Both add the tokenizer's files (ours and
    ``tokenizer.json``). ``dtype`` is fp32, bf16 or fp16. Returns the file names written.

    ``out`` must be new or empty (:func:`check_out_dir`); ``overwrite`` lets it be an earlier export,
    which is then replaced as a whole. Either way the files are written into a temp directory beside
    ``out`` that is renamed into place when complete (:func:`~cs336_basics.utils.fsutil.atomic_directory`):
    a failed export leaves ``out`` as it was, never a partial or mixed directory.
    """
    if fmt not in ("hf", "safetensors"):
        raise HFFormatError(f"--format must be hf or safetensors, got {fmt!r}")
    if dtype not in DTYPES:
        raise HFFormatError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    cfg: ModelConfig = model.config
    torch_dtype = DTYPES[dtype]
    state = {k: v.detach().to("cpu", torch_dtype) for k, v in model.state_dict().items()}
    eos_id = tokenizer.eot_id if tokenizer is not None else None
    if fmt == "hf":
        tensors = to_hf_state_dict(state, cfg)  # refuses what Llama cannot express, before touching --out
        config = llama_config(cfg, torch_dtype, eos_id)
    else:
        tensors, config = state, cfg.to_dict()
    out = Path(out)
    check_out_dir(out, overwrite)
    try:
        with atomic_directory(out, replace=overwrite) as tmp:
            written = _write_export(tmp, fmt, cfg, tensors, config, eos_id, tokenizer)
    except OSError as err:
        raise HFFormatError(f"--out {out}: cannot write the export there: {os_reason(err)}") from None
    return written


def _write_export(
    d: Path, fmt: str, cfg: ModelConfig, tensors: dict[str, Tensor], config: dict, eos_id: int | None, tokenizer: Any
) -> list[str]:
    metadata = {"format": "pt"}  # transformers checks this key
    if fmt == "safetensors":
        metadata["model_config"] = json.dumps(cfg.to_dict())
    save_file(tensors, d / WEIGHTS, metadata=metadata)
    _write_json(d / "config.json", config)
    written = ["config.json", WEIGHTS]
    if fmt == "hf":
        gen: dict[str, Any] = {"bos_token_id": eos_id, "eos_token_id": eos_id, "pad_token_id": eos_id}
        if tokenizer is not None and tokenizer.vocab_size < cfg.vocab_size:
            # Ids past the tokenizer were never trained on; generate() never samples them (vocab_limit).
            gen["suppress_tokens"] = list(range(tokenizer.vocab_size, cfg.vocab_size))
        _write_json(d / "generation_config.json", gen)
        written.append("generation_config.json")
    if tokenizer is not None:
        from cs336_basics.interop.hf_tokenizer_json import write_hf_tokenizer_files

        tokenizer.save(d)
        write_hf_tokenizer_files(d, tokenizer, model_max_length=cfg.context_length)
        written += ["vocab.json", "merges.txt", "special_tokens.json", "tokenizer.json", "tokenizer_config.json"]
    return written


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise HFFormatError(read_error_line(str(path), err)) from None
    except UnicodeDecodeError as err:
        raise HFFormatError(f"{path}: cannot read: {err}") from None
    except json.JSONDecodeError as err:
        raise HFFormatError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None


def _read_weights(src: Path) -> dict[str, Tensor]:
    """``model.safetensors``, or every shard named by ``model.safetensors.index.json``."""
    if (src / WEIGHTS).is_file():
        return load_file(src / WEIGHTS)
    if (src / SHARD_INDEX).is_file():
        index = _read_json(src / SHARD_INDEX)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict):
            raise HFFormatError(f"{src / SHARD_INDEX}: no weight_map")
        tensors: dict[str, Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            if not isinstance(shard, str) or Path(shard).name != shard:
                raise HFFormatError(f"{src / SHARD_INDEX}: shard name {shard!r} is not a file in {src}")
            tensors.update(load_file(src / shard))
        return tensors
    pickles = [n for n in ("pytorch_model.bin", "model.pt") if (src / n).exists()]
    if pickles:
        raise HFFormatError(
            f"{src}: only safetensors weights are read, and it has {pickles[0]} (a pickle, never loaded here)"
        )
    raise HFFormatError(f"{src}: no {WEIGHTS} (or {SHARD_INDEX})")


def import_dir(src: str | os.PathLike) -> tuple[TransformerLM, str]:
    """Read a Llama-format directory (or one this module wrote with ``fmt="safetensors"``) into a
    ``TransformerLM`` in float32 -> ``(model, kind)`` with kind ``"hf"`` or ``"safetensors"``.

    Values are cast to float32, which is exact from bf16/fp16/fp32, so an fp32 export reads back bit
    for bit."""
    src = Path(src)
    if not src.is_dir():
        raise HFFormatError(f"--from_hf {src}: no such directory")
    raw = _read_json(src / "config.json")
    if not isinstance(raw, dict):
        raise HFFormatError(f"{src / 'config.json'}: expected a JSON object")
    tensors = _read_weights(src)
    where = str(src / WEIGHTS)
    if "model_type" in raw or "architectures" in raw:
        kind = "hf"
        cfg = model_config_from_llama(raw, str(src / "config.json"))
        state = from_hf_state_dict(tensors, cfg, where)
    else:
        kind = "safetensors"
        try:
            cfg = ModelConfig.from_dict(raw)
        except (TypeError, ValueError) as err:
            raise HFFormatError(f"{src / 'config.json'}: neither a Llama config nor ours: {err}") from None
        state = dict(tensors)
    model = TransformerLM(cfg)
    want = model.state_dict()
    _check_keys(set(state), set(want), where)
    for k, v in state.items():
        if tuple(v.shape) != tuple(want[k].shape):
            raise HFFormatError(f"{where}: {k} has shape {tuple(v.shape)}, the config needs {tuple(want[k].shape)}")
        if not v.is_floating_point():
            raise HFFormatError(f"{where}: {k} has dtype {v.dtype}, expected floating point")
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
    model.eval()
    return model, kind


def check_out_file(out: str | os.PathLike, overwrite: bool = False) -> None:
    """An import's ``out`` (a checkpoint file) must not exist yet, unless ``overwrite``."""
    out = Path(out)
    if out.is_dir():
        raise HFFormatError(f"--out {out}: is a directory; an import writes a checkpoint file (e.g. {out}/model.pt)")
    if out.exists() and not overwrite:
        raise HFFormatError(f"--out {out}: already exists; nothing was written (pass --overwrite to replace it)")


def save_start_checkpoint(
    model: TransformerLM, out: str | os.PathLike, source: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Write ``model`` as a checkpoint the training program starts from (``--resume_from OUT`` with
    the same model flags, AdamW) and that ``generate`` loads: iteration 0, a fresh AdamW state (no
    moments yet), the model config, and, when ``source`` holds one of our tokenizers, its
    fingerprint (so generate can warn about a different tokenizer). An existing ``out`` is replaced
    (atomically) only with ``overwrite``."""
    from cs336_basics.fast.optim import AdamW, param_groups
    from cs336_basics.training.checkpoints import save_checkpoint
    from cs336_basics.utils.token_files import TOKENIZER_FILES, tokenizer_fingerprint

    optimizer = AdamW(param_groups(model, "adamw", weight_decay=0.0, lr=1e-3))
    extra: dict[str, Any] = {"imported_from": str(source)}
    if all((Path(source) / name).is_file() for name in TOKENIZER_FILES):
        extra["tokenizer"] = {"tokenizer_sha256": tokenizer_fingerprint(source), "tokenizer_dir": str(source)}
    out = Path(out)
    check_out_file(out, overwrite)
    save_checkpoint(model, optimizer, 0, out, **extra)
    return out
