"""Sample text from a trained checkpoint: ``python -m cs336_basics.generate``.

    uv run python -m cs336_basics.generate --checkpoint runs/quickstart/model \\
        --tokenizer runs/quickstart/tokenizer --prompt "Once upon a time" \\
        --max_new_tokens 200 --temperature 0.8 --top_p 0.9 --num_samples 3 --seed 1

``--checkpoint`` may be a ``.pt`` file or a run directory (then ``best.pt``, else the newest
``checkpoint_iter_N.pt``; the choice is printed to stderr, so stdout is only the samples).
``--tokenizer`` defaults to a ``tokenizer/`` folder beside the checkpoint or its run directory (the
quickstart's layout). Checkpoints are read with ``weights_only=True``: a file that would need
arbitrary code to unpickle is refused, never executed.

The tokenizer may have fewer ids than the model's vocabulary (training accepts a ``--vocab_size``
rounded up, e.g. to a multiple of 64): ids it cannot decode are then never sampled. More ids than the
model has is an error. When the checkpoint records which tokenizer made its training data (its
``"tokenizer"`` entry, the token file's sidecar), a different tokenizer gets a one-line warning.

A masked-diffusion checkpoint (``--objective diffusion``: its model config has a ``[MASK]`` token)
samples by unmasking over ``--diffusion_steps`` steps (``cs336_basics.extensions.diffusion.generate``)
instead of left to right.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from cs336_basics.training.checkpoints import resolve_checkpoint
from cs336_basics.utils.devices import resolve_device
from cs336_basics.utils.errors import UserError, run_cli


def find_tokenizer_dir(checkpoint: Path) -> Path | None:
    """Look for ``tokenizer/`` beside the checkpoint file/dir, one and two levels up (quickstart layout)."""
    start = checkpoint if checkpoint.is_dir() else checkpoint.parent
    for d in (start, start.parent, start.parent.parent):
        cand = d / "tokenizer"
        if (cand / "vocab.json").is_file() or (cand / "tokenizer.json").is_file():
            return cand
    return None


def load_model(checkpoint: str | Path, device: torch.device | str = "cpu"):
    """Load a trained model for inference -> ``(model, payload, resolved_path)``.

    ``checkpoint`` is a ``.pt`` file or a run directory. The model is rebuilt from the
    ``model_config`` stored in the checkpoint, so no flags need repeating; in a notebook::

        model, payload, path = load_model("runs/quickstart/model")
    """
    from cs336_basics.training.checkpoints import model_from_checkpoint, read_checkpoint

    path = resolve_checkpoint(checkpoint)
    payload = read_checkpoint(path)
    model = model_from_checkpoint(payload, path, device)
    model.eval()
    return model, payload, path


def check_tokenizer(
    tokenizer, model, tok_dir: str | Path = "the tokenizer", ckpt: str | Path = "the checkpoint"
) -> int | None:
    """The ``vocab_limit`` for sampling: None when the sizes match, the tokenizer's size when it is
    smaller than the model's vocabulary (the extra rows were never trained on real ids). A tokenizer
    larger than the model cannot be right: it could emit ids the model has no embedding for."""
    n_tok, n_model = tokenizer.vocab_size, model.config.vocab_size
    n_model -= model.config.mask_token_id is not None  # diffusion's [MASK] is the model's id, not the tokenizer's
    if n_tok > n_model:
        raise UserError(
            f"tokenizer {tok_dir} has {n_tok} tokens but the model in {ckpt} has vocab_size {n_model}; "
            "use the tokenizer the model was trained with"
        )
    return n_tok if n_tok < n_model else None


def tokenizer_mismatch(payload: dict, tok_dir: str | Path) -> str | None:
    """A one-line warning when the checkpoint names the tokenizer of its training data and ``tok_dir``
    is a different one (by content fingerprint), else None (also when the checkpoint does not say)."""
    from cs336_basics.utils.token_files import tokenizer_fingerprint

    meta = payload.get("tokenizer") if isinstance(payload, dict) else None
    want = meta.get("tokenizer_sha256") if isinstance(meta, dict) else None
    if not isinstance(want, str) or not want:
        return None
    have = tokenizer_fingerprint(tok_dir)
    if have == want:
        return None
    trained = meta.get("tokenizer_dir")
    made_by = f" (made with {trained})" if isinstance(trained, str) and trained else ""
    return (
        f"warning: tokenizer {tok_dir} differs from the one that made this model's training data{made_by}; "
        "samples may be garbled"
    )


def sample(
    model,
    tokenizer,
    prompt: str,
    max_new_tokens: int,
    temperature: float = 0.8,
    top_p: float = 0.9,
    seed: int | None = None,
    num_samples: int = 1,
    diffusion_steps: int | None = None,
) -> list[str]:
    """Generate ``num_samples`` continuations of ``prompt`` (the continuation only, decoded).

    An empty prompt starts from ``<|endoftext|>`` (the document boundary the model saw in training).
    Generation stops early at ``<|endoftext|>``. A tokenizer smaller than the model's vocabulary is
    fine (ids beyond it are never sampled); a larger one raises :class:`UserError`. A
    masked-diffusion model samples by unmasking over ``diffusion_steps`` steps (default: one token
    per step).
    """
    from cs336_basics.extensions import diffusion
    from cs336_basics.lm.generate import generate

    extra = {}
    if diffusion.is_diffusion(model.config):  # the objective is the checkpoint's, chosen here once
        generate, extra = diffusion.generate, {"steps": diffusion_steps}

    vocab_limit = check_tokenizer(tokenizer, model)

    ids = tokenizer.encode(prompt) if prompt else []
    eot = getattr(tokenizer, "eot_id", None)
    if not ids:
        if eot is None:
            raise UserError("--prompt is empty and the tokenizer has no <|endoftext|> token to start from")
        ids = [eot]
    ctx = model.config.context_length
    if len(ids) >= ctx:  # keep the most recent context so something can still be generated
        ids = ids[-(ctx - 1) :] if ctx > 1 else ids[-1:]
    device = next(model.parameters()).device
    gen = None
    if seed is not None:
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
    outs = []
    with torch.no_grad():
        for _ in range(num_samples):
            new = generate(
                model,
                ids,
                max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                eos_id=eot,
                generator=gen,
                vocab_limit=vocab_limit,
                **extra,
            )
            outs.append(tokenizer.decode(list(new)))
    return outs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cs336_basics.generate",
        description="Sample text from a trained checkpoint.",
    )
    p.add_argument(
        "--checkpoint", required=True, help="a .pt file, or a run directory (uses best.pt, else the newest checkpoint)"
    )
    p.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer directory (vocab.json, merges.txt); default: a tokenizer/ folder beside the checkpoint",
    )
    p.add_argument(
        "--prompt",
        default="Once upon a time",
        help="text to continue; empty starts from <|endoftext|> (default: %(default)r)",
    )
    p.add_argument("--max_new_tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default: %(default)s)")
    p.add_argument("--top_p", type=float, default=0.9, help="nucleus sampling mass in (0, 1] (default: %(default)s)")
    p.add_argument("--num_samples", type=int, default=1)
    p.add_argument(
        "--diffusion_steps",
        type=int,
        default=None,
        help="masked-diffusion checkpoints: unmasking steps (default: --max_new_tokens, one token per step)",
    )
    p.add_argument("--seed", type=int, default=None, help="make sampling reproducible")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default: %(default)s)")
    p.add_argument(
        "--chat",
        action="store_true",
        help="--prompt is a user turn: format it with the chat template (cs336_basics.corpus.chat) and print "
        "the assistant's answer, which ends at its <|endoftext|>. A chat special token inside --prompt or "
        "--system is refused, as the chat data reader refuses it",
    )
    p.add_argument("--system", default=None, help="with --chat: a system message before the user turn")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_new_tokens < 0:
        raise UserError(f"--max_new_tokens must be >= 0, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise UserError(f"--temperature must be >= 0, got {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise UserError(f"--top_p must be in (0, 1], got {args.top_p}")
    if args.num_samples < 1:
        raise UserError(f"--num_samples must be >= 1, got {args.num_samples}")
    if args.diffusion_steps is not None and args.diffusion_steps < 1:
        raise UserError(f"--diffusion_steps must be >= 1, got {args.diffusion_steps}")
    if args.chat:  # as the chat data reader refuses such a record: the model never saw one
        from cs336_basics.corpus.chat import special_token_in

        for flag, text in (("--system", args.system), ("--prompt", args.prompt)):
            tok = special_token_in(text) if text else None
            if tok is not None:
                raise UserError(
                    f"{flag} contains the special token {tok} as text; with --chat the template adds the markers "
                    "(training data never has one inside a turn)"
                )

    ckpt = resolve_checkpoint(args.checkpoint)
    if args.tokenizer is None:
        tok_dir = find_tokenizer_dir(Path(args.checkpoint))
        if tok_dir is None:
            raise UserError(f"no --tokenizer given and no tokenizer/ folder found near {args.checkpoint}")
    else:
        tok_dir = Path(args.tokenizer)
        if not tok_dir.is_dir():
            raise UserError(f"--tokenizer {tok_dir}: no such directory")
        if not (tok_dir / "vocab.json").is_file() and not (tok_dir / "tokenizer.json").is_file():
            raise UserError(
                f"--tokenizer {tok_dir}: no vocab.json or tokenizer.json in it (expected a directory written by "
                "Tokenizer.save or a Hugging Face tokenizer)"
            )
    device = resolve_device(args.device, what="--device")

    from cs336_basics.fast.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_dir(tok_dir)
    model, payload, path = load_model(ckpt, device)
    if Path(args.checkpoint).is_dir():  # say which file a directory resolved to (stderr: stdout is the samples)
        print(f"Using checkpoint {path} (iteration {payload.get('iteration', '?')})", file=sys.stderr)
    if check_tokenizer(tokenizer, model, tok_dir, path) is not None:
        print(
            f"note: tokenizer {tok_dir} has {tokenizer.vocab_size} tokens, the model {model.config.vocab_size}; "
            f"ids >= {tokenizer.vocab_size} are never sampled",
            file=sys.stderr,
        )
    warning = tokenizer_mismatch(payload, tok_dir)
    if warning:
        print(warning, file=sys.stderr)
    prompt = args.prompt
    if args.chat:  # the template up to the answer; generation stops at the answer's <|endoftext|>
        from cs336_basics.corpus.chat import check_chat_tokenizer, prompt_text

        check_chat_tokenizer(tokenizer.special_tokens, f"--tokenizer {tok_dir}")
        prompt = prompt_text(args.prompt, args.system)
    n_prompt, ctx = len(tokenizer.encode(prompt)) if prompt else 0, model.config.context_length
    if n_prompt >= ctx:  # sample() keeps the most recent tokens; say so once rather than silently
        kept = max(ctx - 1, 1)
        print(
            f"note: the prompt is {n_prompt} tokens, more than the model's context_length {ctx} leaves room "
            f"for; it sees only the last {kept}",
            file=sys.stderr,
        )
    outs = sample(
        model, tokenizer, prompt, args.max_new_tokens, args.temperature, args.top_p, args.seed, args.num_samples,
        args.diffusion_steps,
    )  # fmt: skip
    for i, text in enumerate(outs):
        if args.num_samples > 1:
            print(f"--- sample {i + 1} ---")
        print(text.strip() if args.chat else (args.prompt + text).rstrip())  # a story ends with a newline
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
