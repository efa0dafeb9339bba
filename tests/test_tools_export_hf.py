"""Export to the Hugging Face Llama format and back, with ``transformers.LlamaForCausalLM`` as the reference.

Same logits (fp32 within 1e-4, bf16/fp16 within their rounding), same greedy tokens, export -> import bit
for bit, a run directory that carries its tokenizer, and one-line refusals of what Llama cannot express.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from cs336_basics import generate as generate_cli
from cs336_basics import training_together
from cs336_basics.fast.tokenizer import Tokenizer
from cs336_basics.interop.hf_llama import HFFormatError, check_llama_expressible, export_dir, import_dir
from cs336_basics.interop.safetensors_io import load_file, save_file
from cs336_basics.lm.generate import generate
from cs336_basics.lm.model import ModelConfig, TransformerLM
from cs336_basics.tools import export
from cs336_basics.training.checkpoints import save_checkpoint
from cs336_basics.utils.errors import run_cli
from cs336_basics.utils.token_files import tokenizer_fingerprint
from tests._torch_threads import one_torch_thread  # noqa: F401  (autouse fixture)
from tests._train_utils import base_argv, load_pt, write_pattern_data

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

EOT = "<|endoftext|>"

SHAPES = [
    # odd head count, d_head 16, a non-default rope_theta
    ModelConfig(vocab_size=97, context_length=24, d_model=48, num_layers=2, num_heads=3, d_ff=80, rope_theta=500.0),
    # d_head 64
    ModelConfig(vocab_size=64, context_length=16, d_model=128, num_layers=1, num_heads=2, d_ff=96),
    # five heads of 16, three layers, the plain attention path
    ModelConfig(vocab_size=50, context_length=20, d_model=80, num_layers=3, num_heads=5, d_ff=64, attention="plain"),
]


def _random_model(cfg: ModelConfig, seed: int = 0) -> TransformerLM:
    torch.manual_seed(seed)
    model = TransformerLM(cfg)
    with torch.no_grad():  # norm gains away from 1, so a swapped or missing norm would show
        for name, p in model.named_parameters():
            if name.endswith("ln1.weight") or name.endswith("ln2.weight") or name == "ln_final.weight":
                p.uniform_(0.5, 1.5)
    return model.eval()


def _logits_diff(model: TransformerLM, hf: LlamaForCausalLM, lengths: list[int]) -> float:
    g = torch.Generator().manual_seed(1)
    worst = 0.0
    for n in lengths:
        ids = torch.randint(0, model.config.vocab_size, (2, n), generator=g)
        with torch.no_grad():
            ours, theirs = model(ids), hf(ids).logits.float()
        assert theirs.shape == ours.shape
        worst = max(worst, (ours - theirs).abs().max().item())
    return worst


def _hf_greedy(hf: LlamaForCausalLM, prompt: list[int], n: int) -> list[int]:
    out = hf.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, min_new_tokens=n)
    return out[0, len(prompt) :].tolist()


@pytest.mark.parametrize("cfg", SHAPES, ids=lambda c: f"d{c.d_model}h{c.num_heads}L{c.num_layers}")
def test_same_logits_and_greedy_tokens_as_transformers(cfg, tmp_path):
    model = _random_model(cfg)
    export_dir(model, tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert isinstance(hf, LlamaForCausalLM) and hf.dtype == torch.float32
    ctx = cfg.context_length
    assert _logits_diff(model, hf, [1, ctx // 2 + 1, ctx]) <= 1e-4
    prompt = [3, 1, 4, 1, 5]
    ours = generate(model, prompt, ctx - len(prompt), temperature=0)
    assert _hf_greedy(hf, prompt, ctx - len(prompt)) == ours


def test_permutation_is_what_makes_rope_agree(tmp_path):
    """Without the q/k row permutation the logits differ: the test above could fail."""
    cfg = SHAPES[0]
    model = _random_model(cfg)
    export_dir(model, tmp_path / "hf")
    tensors = load_file(tmp_path / "hf" / "model.safetensors")
    state = model.state_dict()
    for i in range(cfg.num_layers):
        for p in ("q", "k"):
            tensors[f"model.layers.{i}.self_attn.{p}_proj.weight"] = state[f"layers.{i}.attn.{p}_proj.weight"]
    save_file(tensors, tmp_path / "hf" / "model.safetensors", metadata={"format": "pt"})
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert _logits_diff(model, hf, [cfg.context_length]) > 1e-2


@pytest.mark.parametrize("dtype, torch_dtype, tol", [("bf16", torch.bfloat16, 0.03), ("fp16", torch.float16, 0.005)])
def test_half_precision_export_within_rounding(dtype, torch_dtype, tol, tmp_path):
    cfg = SHAPES[0]
    model = _random_model(cfg)
    export_dir(model, tmp_path / "hf", dtype=dtype)
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["torch_dtype"] == str(torch_dtype).split(".")[1]
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert hf.dtype == torch_dtype  # the dtype the config names, with no extra argument
    ids = torch.randint(0, cfg.vocab_size, (2, cfg.context_length), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits.float()
    assert (ours - theirs).abs().max().item() <= tol * ours.abs().max().item()
    # Read back: exactly the rounded weights.
    back, _ = import_dir(tmp_path / "hf")
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v.to(torch_dtype).float()), k


@pytest.mark.parametrize("fmt", ["hf", "safetensors"])
def test_export_then_import_is_bit_exact(fmt, tmp_path, capsys):
    cfg = SHAPES[2]
    model = _random_model(cfg)
    (tmp_path / "run").mkdir()
    save_checkpoint(model, None, 5, tmp_path / "run" / "checkpoint_iter_5.pt")
    assert (
        run_cli(export.main, ["--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "x"), "--format", fmt])
        == 0
    )
    assert "warning: no tokenizer/ folder" in capsys.readouterr().err
    out_pt = tmp_path / "imported" / "model.pt"
    assert run_cli(export.main, ["--from_hf", str(tmp_path / "x"), "--out", str(out_pt)]) == 0
    payload = load_pt(out_pt)
    # hf has no field for the attention implementation (same function either way): the default comes back.
    assert payload["model_config"] == (
        cfg.to_dict() if fmt == "safetensors" else {**cfg.to_dict(), "attention": "fast"}
    )
    for k, v in model.state_dict().items():
        assert torch.equal(payload["model"][k], v), k
    if fmt == "safetensors":  # our names, readable by the reference package
        from safetensors.torch import load_file as st_load_file

        assert set(st_load_file(tmp_path / "x" / "model.safetensors")) == set(model.state_dict())


def _refused(capsys, argv, *fragments):
    rc = run_cli(export.main, [str(a) for a in argv])
    err = "\n".join(ln for ln in capsys.readouterr().err.splitlines() if not ln.startswith("warning: no tokenizer/"))
    assert rc == 2 and len(err.splitlines()) == 1, err
    for frag in fragments:
        assert frag in err, err
    return err


@pytest.mark.parametrize(
    "change, name",
    [
        ({"use_post_norm": True}, "use_post_norm=True"),
        ({"remove_rmsnorm": True}, "remove_rmsnorm=True"),
        ({"remove_rope": True}, "remove_rope=True"),
        ({"ffn_type": "silu"}, "ffn_type='silu'"),
    ],
)
def test_options_llama_cannot_express_are_refused(change, name, tmp_path, capsys):
    cfg = dataclasses.replace(SHAPES[1], **change)
    save_checkpoint(TransformerLM(cfg), None, 0, tmp_path / "m.pt")
    _refused(capsys, ["--checkpoint", tmp_path / "m.pt", "--out", tmp_path / "x"], name, "Llama format")
    assert not (tmp_path / "x").exists()
    # The portable safetensors form keeps any architecture.
    assert (
        run_cli(
            export.main,
            ["--checkpoint", str(tmp_path / "m.pt"), "--out", str(tmp_path / "y"), "--format", "safetensors"],
        )
        == 0
    )


def test_an_unknown_future_flag_is_refused_too():
    @dataclasses.dataclass
    class FutureConfig(ModelConfig):
        qk_norm: bool = False

    check_llama_expressible(FutureConfig())  # at its default: fine
    with pytest.raises(HFFormatError, match="qk_norm=True .*no field for"):
        check_llama_expressible(FutureConfig(qk_norm=True))


def _llama_dir(tmp_path, **config_changes):
    model = _random_model(SHAPES[1])
    d = tmp_path / "llama"
    export_dir(model, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(config_changes)
    (d / "config.json").write_text(json.dumps(cfg))
    return d


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"num_key_value_heads": 1}, "grouped-query attention (num_key_value_heads=1 < num_attention_heads=2)"),
        ({"rms_norm_eps": 1e-6}, "rms_norm_eps 1e-06"),
        ({"attention_bias": True}, "attention_bias is true"),
        ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "RoPE scaling 'llama3'"),
        ({"model_type": "mistral", "architectures": ["MistralForCausalLM"]}, "not a Llama model"),
        ({"head_dim": 32}, "head_dim 32 x 2 heads != hidden_size 128"),
        ({"intermediate_size": 50}, "the config needs (50, 128)"),
        ({"num_hidden_layers": 2}, "weights do not match the config: missing model.layers.1."),
    ],
)
def test_import_refusals(change, fragment, tmp_path, capsys):
    d = _llama_dir(tmp_path, **change)
    _refused(capsys, ["--from_hf", d, "--out", tmp_path / "m.pt"], fragment)
    assert not (tmp_path / "m.pt").exists()


def test_import_refuses_pickles_and_foreign_out_dirs(tmp_path, capsys):
    d = _llama_dir(tmp_path)
    (d / "model.safetensors").rename(d / "pytorch_model.bin")
    _refused(capsys, ["--from_hf", d, "--out", tmp_path / "m.pt"], "pytorch_model.bin", "never loaded")
    save_checkpoint(_random_model(SHAPES[1]), None, 0, tmp_path / "c.pt")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    _refused(capsys, ["--checkpoint", tmp_path / "c.pt", "--out", tmp_path / "busy"], "notes.txt")


def test_model_trained_a_few_steps_matches(tmp_path):
    data = write_pattern_data(tmp_path / "data")
    run = tmp_path / "run"
    assert training_together.main(base_argv(data, run, max_iters=15, eval_interval=15, checkpoint_interval=15)) == 0
    assert run_cli(export.main, ["--checkpoint", str(run), "--out", str(tmp_path / "hf")]) == 0
    model, _, _ = generate_cli.load_model(run)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert _logits_diff(model, hf, [5, model.config.context_length]) <= 1e-4
    prompt = [1, 2, 3]
    ours = generate(model, prompt, 12, temperature=0)
    assert _hf_greedy(hf, prompt, 12) == ours


def test_quickstart_sized_run_exports_and_generates_the_same_text(tmp_path, capsys):
    """The whole path: BPE + token files -> training (the run carries its tokenizer) -> export of the
    run directory alone -> transformers' AutoTokenizer + AutoModelForCausalLM greedy text == ours.
    Then import the export back, generate from it, and start training from it."""
    from cs336_basics.fast.bpe import train_bpe
    from cs336_basics.quickstart.storygen import write_corpus
    from cs336_basics.tokenize_data import tokenize_file

    text_dir, tok_dir, run = tmp_path / "text", tmp_path / "tok", tmp_path / "run"
    text_dir.mkdir()
    write_corpus(text_dir / "train.txt", 150, seed=1)
    write_corpus(text_dir / "valid.txt", 20, seed=2)
    vocab, merges = train_bpe(str(text_dir / "train.txt"), 300, [EOT])
    tok = Tokenizer(vocab, merges, [EOT])
    tok.save(tok_dir)
    for split in ("train", "valid"):
        tokenize_file(tok_dir, text_dir / f"{split}.txt", tmp_path / f"{split}.npy")
    vocab_size = 64 * math.ceil(tok.vocab_size / 64)  # rounded up: ids past the tokenizer must never appear
    argv = [
        "--train_data_path", tmp_path / "train.npy", "--val_data_path", tmp_path / "valid.npy",
        "--vocab_size", vocab_size, "--context_length", 32, "--d_model", 32, "--num_layers", 2, "--num_heads", 2,
        "--d_ff", 64, "--batch_size", 16, "--max_iters", 100, "--lr", 1e-2, "--min_lr", 1e-3, "--warmup_iters", 5,
        "--eval_interval", 100, "--eval_iters", 1, "--checkpoint_interval", 100, "--log_interval", 100, "--checkpoint_dir", run,
        "--device", "cpu", "--seed", 3,
    ]  # fmt: skip
    assert training_together.main([str(a) for a in argv]) == 0
    assert "copied to" in capsys.readouterr().out
    assert tokenizer_fingerprint(run / "tokenizer") == tokenizer_fingerprint(tok_dir)

    assert run_cli(export.main, ["--checkpoint", str(run), "--out", str(tmp_path / "hf")]) == 0
    capsys.readouterr()
    prompt = "Once upon a time"
    gen_argv = ["--prompt", prompt, "--temperature", "0", "--max_new_tokens", "24"]
    assert run_cli(generate_cli.main, ["--checkpoint", str(run), *gen_argv]) == 0
    ours = capsys.readouterr().out.strip()

    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    ids = hf_tok(prompt, return_tensors="pt").input_ids
    out = hf.generate(ids, max_new_tokens=24, do_sample=False)
    theirs = (prompt + hf_tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)).rstrip()
    assert theirs == ours and len(ours) > len(prompt)

    # Back again: the import loads in generate (same text) and training starts from it.
    assert run_cli(export.main, ["--from_hf", str(tmp_path / "hf"), "--out", str(tmp_path / "imp" / "model.pt")]) == 0
    capsys.readouterr()
    imp_argv = ["--checkpoint", str(tmp_path / "imp" / "model.pt"), "--tokenizer", str(tmp_path / "hf"), *gen_argv]
    assert run_cli(generate_cli.main, imp_argv) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == ours and "warning" not in captured.err
    resume = [str(a) for a in argv[:-6]] + ["--max_iters", "2", "--warmup_iters", "1", "--checkpoint_dir", str(tmp_path / "ft"), "--device",
              "cpu", "--resume_from", str(tmp_path / "imp" / "model.pt")]  # fmt: skip
    assert training_together.main(resume) == 0
    assert (tmp_path / "ft" / "checkpoint_iter_2.pt").is_file()


def test_carry_tokenizer_copies_only_the_unchanged_tokenizer_once(tmp_path):
    from cs336_basics.utils.token_files import carry_tokenizer

    tok_dir, run = tmp_path / "tok", tmp_path / "run"
    vocab = {i: bytes([i]) for i in range(256)}
    Tokenizer(vocab, [], [EOT]).save(tok_dir)
    run.mkdir()
    meta = {"tokenizer_dir": str(tok_dir), "tokenizer_sha256": tokenizer_fingerprint(tok_dir)}
    assert carry_tokenizer(None, tmp_path / "d.npy", run) is None  # no sidecar: nothing to do
    changed = {**meta, "tokenizer_sha256": "0" * 64}
    assert "not there unchanged" in carry_tokenizer(changed, tmp_path / "d.npy", run)
    assert not (run / "tokenizer").exists()
    assert "copied to" in carry_tokenizer(meta, tmp_path / "d.npy", run)
    assert tokenizer_fingerprint(run / "tokenizer") == meta["tokenizer_sha256"]
    assert (run / "tokenizer" / "tokenizer.json").is_file()
    assert carry_tokenizer(meta, tmp_path / "d.npy", run) is None  # once: a resumed run keeps its copy
    assert [p.name for p in run.iterdir()] == ["tokenizer"]  # no temp directory left behind
    # A relative tokenizer_dir resolves beside the data file too.
    rel = {**meta, "tokenizer_dir": "tok"}
    (tmp_path / "run2").mkdir()
    assert "copied to" in carry_tokenizer(rel, tmp_path / "d.npy", tmp_path / "run2")


def _snapshot(d):
    """Every file of ``d``: name -> (bytes, mtime in ns)."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.iterdir())}


def _two_checkpoints(tmp_path):
    for seed in (0, 1):
        save_checkpoint(_random_model(SHAPES[1], seed=seed), None, seed, tmp_path / f"c{seed}.pt")
    return tmp_path / "c0.pt", tmp_path / "c1.pt"


def test_export_into_an_earlier_export_is_refused_unless_overwrite(tmp_path, capsys):
    c0, c1 = _two_checkpoints(tmp_path)
    out = tmp_path / "exports" / "hf"
    assert run_cli(export.main, ["--checkpoint", str(c0), "--out", str(out)]) == 0
    capsys.readouterr()
    before = _snapshot(out)
    assert set(before) == {"config.json", "model.safetensors", "generation_config.json"}
    for fmt in ("hf", "safetensors"):
        _refused(capsys, ["--checkpoint", c1, "--out", out, "--format", fmt], f"--out {out}:", "--overwrite")
        assert _snapshot(out) == before  # same names, bytes and modification times
    assert sorted(p.name for p in out.parent.iterdir()) == ["hf"]  # no temp directory left beside it

    # --overwrite replaces the whole export: the other format's files do not survive.
    assert run_cli(export.main, ["--checkpoint", str(c1), "--out", str(out), "--format", "safetensors",
                                 "--overwrite"]) == 0  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["hf"]
    want = torch.load(c1, weights_only=True)["model"]
    got = load_file(out / "model.safetensors")
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    # An empty directory is no earlier export: no flag needed.
    (tmp_path / "empty").mkdir()
    assert run_cli(export.main, ["--checkpoint", str(c0), "--out", str(tmp_path / "empty")]) == 0
    assert (tmp_path / "empty" / "model.safetensors").is_file()


def test_a_failed_overwrite_leaves_the_earlier_export_untouched(tmp_path, capsys, monkeypatch):
    from cs336_basics.interop import hf_llama

    c0, c1 = _two_checkpoints(tmp_path)
    out = tmp_path / "exports" / "hf"
    assert run_cli(export.main, ["--checkpoint", str(c0), "--out", str(out)]) == 0
    before = _snapshot(out)
    real = hf_llama._write_json

    def disk_full_at_the_generation_config(path, obj):  # the weights and config.json are written by then
        if path.name == "generation_config.json":
            raise OSError(28, "No space left on device")
        real(path, obj)

    monkeypatch.setattr(hf_llama, "_write_json", disk_full_at_the_generation_config)
    capsys.readouterr()
    _refused(capsys, ["--checkpoint", c1, "--out", out, "--overwrite"], f"--out {out}:", "No space left on device")
    assert _snapshot(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["hf"]  # the half-written temp directory is gone
    # and a first export that fails leaves no --out at all
    _refused(capsys, ["--checkpoint", c1, "--out", tmp_path / "new"], "No space left on device")
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".new*"))


def test_import_onto_an_existing_checkpoint_is_refused_unless_overwrite(tmp_path, capsys):
    d = _llama_dir(tmp_path)
    out = tmp_path / "imp" / "model.pt"
    assert run_cli(export.main, ["--from_hf", str(d), "--out", str(out)]) == 0
    capsys.readouterr()
    before = (out.read_bytes(), out.stat().st_mtime_ns)
    _refused(capsys, ["--from_hf", d, "--out", out], f"--out {out}:", "--overwrite")
    assert (out.read_bytes(), out.stat().st_mtime_ns) == before
    assert run_cli(export.main, ["--from_hf", str(d), "--out", str(out), "--overwrite"]) == 0
    assert out.stat().st_mtime_ns != before[1] or out.read_bytes() != before[0]


# ----------------------------------------------------------------------------------------------
# chat: the exported tokenizer's chat_template is our template
# ----------------------------------------------------------------------------------------------
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "repeat: cat dog"},
    {"role": "assistant", "content": " cat dog"},
    {"role": "user", "content": "Name a pet.\n"},
    {"role": "assistant", "content": "A cat. "},
]
# The template by hand (docs/data.md, "Fine-tuning on conversations"): markers and contents, nothing else.
CONVERSATION_TEXT = (
    "<|system|>Be brief.<|user|>repeat: cat dog<|assistant|> cat dog<|endoftext|>"
    "<|user|>Name a pet.\n<|assistant|>A cat. <|endoftext|>"
)


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory):
    """A chat tokenizer, token files of "repeat: W1 W2" -> "W1 W2" conversations, a short run on them
    (the run carries the tokenizer), and its export."""
    import random

    from cs336_basics import tokenize_data
    from tests._corpus_utils import WORDS, make_tokenizer

    d = tmp_path_factory.mktemp("chat")
    tok_dir = make_tokenizer(d / "tok")
    r = random.Random(0)
    for split, n in (("train", 300), ("valid", 30)):
        rows = []
        for _ in range(n):
            words = " ".join(r.choice(WORDS) for _ in range(2))
            rows.append({"messages": [{"role": "user", "content": f"repeat: {words}"},
                                      {"role": "assistant", "content": words}]})  # fmt: skip
        (d / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        argv = ["--quiet", "--tokenizer", str(tok_dir), "--input", str(d / f"{split}.jsonl"),
                "--output", str(d / f"{split}.npy"), "--chat"]  # fmt: skip
        assert run_cli(tokenize_data.main, argv) == 0
    run = d / "run"
    argv = [
        "--train_data_path", d / "train.npy", "--val_data_path", d / "valid.npy",
        "--vocab_size", Tokenizer.from_dir(tok_dir).vocab_size, "--context_length", 32, "--d_model", 32,
        "--num_layers", 1, "--num_heads", 2, "--d_ff", 64, "--batch_size", 16, "--max_iters", 80, "--lr", 1e-2,
        "--min_lr", 1e-3, "--warmup_iters", 5, "--eval_interval", 80, "--eval_iters", 1,
        "--checkpoint_interval", 80, "--log_interval", 80, "--checkpoint_dir", run, "--device", "cpu", "--seed", 3,
    ]  # fmt: skip
    assert training_together.main([str(a) for a in argv]) == 0
    assert (run / "tokenizer").is_dir()
    assert run_cli(export.main, ["--checkpoint", str(run), "--out", str(d / "hf")]) == 0
    return {"tok_dir": tok_dir, "run": run, "hf": d / "hf"}


def test_exported_chat_template_gives_our_ids(chat_run):
    from cs336_basics.corpus import chat

    tok = Tokenizer.from_dir(chat_run["tok_dir"])
    hf_tok = AutoTokenizer.from_pretrained(chat_run["hf"], local_files_only=True)

    def ours(turns):  # our renderer + our tokenizer, as tokenize_data --chat encodes a conversation
        return [i for text, _ in chat.render(turns) for i in tok.encode(text)]

    def theirs(messages, **kw):
        return list(hf_tok.apply_chat_template(messages, tokenize=True, return_dict=False, **kw))

    turns = chat.parse_conversation({"messages": CONVERSATION})
    assert theirs(CONVERSATION) == ours(turns) == tok.encode(CONVERSATION_TEXT)
    assert hf_tok.apply_chat_template(CONVERSATION, tokenize=False) == CONVERSATION_TEXT
    # A prompt ending in a user turn + the generation prompt: what generate --chat feeds the model.
    prompt = CONVERSATION[:2]
    want = tok.encode(chat.prompt_text("repeat: cat dog", "Be brief."))
    assert want == tok.encode("<|system|>Be brief.<|user|>repeat: cat dog<|assistant|>")
    assert theirs(prompt, add_generation_prompt=True) == want
    assert theirs(prompt[1:], add_generation_prompt=True) == tok.encode(chat.prompt_text("repeat: cat dog"))
    # the same after a first exchange: the history as in training, then the new turn's prompt
    history = turns[:3]
    assert theirs(CONVERSATION[:4], add_generation_prompt=True) == ours(history) + tok.encode(
        chat.prompt_text("Name a pet.\n")
    )
    # What the template cannot render as the model was trained is an error, not a different text.
    for bad, fragment in [
        ([{"role": "tool", "content": "x"}], "unknown role tool"),
        ([{"role": "user", "content": "a <|user|> b"}], "contains the special token <|user|>"),
        ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], "only the first may be"),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "must alternate"),
        ([{"role": "assistant", "content": "a"}], "must alternate"),
    ]:
        with pytest.raises(Exception, match=re.escape(fragment)):
            hf_tok.apply_chat_template(bad, tokenize=False)


def test_no_chat_template_without_the_chat_tokens(tmp_path):
    vocab = {i: bytes([i]) for i in range(256)}
    Tokenizer(vocab, [], [EOT]).save(tmp_path / "tok")
    assert "chat_template" not in json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())


def test_transformers_chat_reply_is_generate_chat(chat_run, capsys):
    argv = ["--checkpoint", str(chat_run["run"]), "--chat", "--system", "Be brief.", "--temperature", "0",
            "--max_new_tokens", "20"]  # fmt: skip
    hf_tok = AutoTokenizer.from_pretrained(chat_run["hf"], local_files_only=True)
    hf = AutoModelForCausalLM.from_pretrained(chat_run["hf"], local_files_only=True)
    eot = hf_tok.convert_tokens_to_ids(EOT)
    stopped = 0
    for user in ("repeat: cat dog", "repeat: red tree", "hello"):
        capsys.readouterr()
        assert run_cli(generate_cli.main, [*argv, "--prompt", user]) == 0
        ours = capsys.readouterr().out
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": user}]
        ids = hf_tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=False)
        out = hf.generate(ids, max_new_tokens=20, do_sample=False)[0, ids.shape[1] :].tolist()
        stopped += eot in out
        reply = out[: out.index(eot)] if eot in out else out
        assert ours == hf_tok.decode(reply).strip() + "\n", user
    assert stopped  # the answer's <|endoftext|> was reached (the stop is part of what is compared)
