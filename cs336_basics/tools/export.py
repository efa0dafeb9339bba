"""Export a trained model for other tools, or import one: ``python -m cs336_basics.tools.export``.

    # a run (directory or .pt) -> a Hugging Face Llama directory (transformers, lm-eval, vLLM, llama.cpp)
    uv run python -m cs336_basics.tools.export --checkpoint runs/quickstart/model --out exports/qs-hf
    # the portable form of a run: our names and ModelConfig, in safetensors
    uv run python -m cs336_basics.tools.export --checkpoint runs/ts-base --out exports/ts --format safetensors
    # back: a Llama directory (plain multi-head attention) -> a checkpoint training and generate start from
    uv run python -m cs336_basics.tools.export --from_hf exports/qs-hf --out runs/imported/model.pt

``--checkpoint`` is resolved as ``generate`` resolves it (a run directory -> ``best.pt``, else the
newest checkpoint); the tokenizer is the ``tokenizer/`` folder the run carries (or ``--tokenizer``).
``--dtype`` picks the precision of the written weights (fp32, bf16, fp16). What the Llama format
cannot express (post-norm, no RMSNorm, NoPE, the SiLU FFN, ...) is refused with one line. The
mapping itself lives in :mod:`cs336_basics.interop.hf_llama`.

An existing non-empty ``--out`` (an import's existing ``--out`` file) is refused in one line unless
``--overwrite``; with it an earlier export is replaced as a whole: the new one is written into a temp
directory beside it and swapped in only when complete (a directory holding other files is never
replaced).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cs336_basics.utils.errors import UserError, run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cs336_basics.tools.export",
        description="Export a checkpoint as a Hugging Face Llama (or safetensors) directory, or import one.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a .pt file, or a run directory (uses best.pt, else the newest checkpoint)")
    src.add_argument(
        "--from_hf", metavar="DIR", help="import: a Llama-format (or --format safetensors) directory to read"
    )
    p.add_argument(
        "--out", required=True, help="export: the directory to write; import: the checkpoint file (.pt) to write"
    )
    p.add_argument(
        "--format",
        choices=("hf", "safetensors"),
        default="hf",
        help="hf: LlamaForCausalLM for transformers and friends; safetensors: our names and ModelConfig "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="weights' precision (default: %(default)s)"
    )
    p.add_argument(
        "--tokenizer", default=None, help="tokenizer directory (default: the tokenizer/ folder beside the checkpoint)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier export in --out (import: an existing --out file); without it they are refused. "
        "The new export is written beside the old one and swapped in only when complete",
    )
    return p


def _export(args: argparse.Namespace) -> int:
    from cs336_basics.fast.tokenizer import Tokenizer
    from cs336_basics.generate import check_tokenizer, find_tokenizer_dir, load_model, tokenizer_mismatch
    from cs336_basics.interop.hf_llama import check_llama_expressible, check_out_dir, export_dir

    model, payload, path = load_model(args.checkpoint)
    if args.format == "hf":
        check_llama_expressible(model.config)  # refuse before reading or writing anything else
    check_out_dir(args.out, args.overwrite)
    tok_dir = Path(args.tokenizer) if args.tokenizer else find_tokenizer_dir(Path(args.checkpoint))
    tokenizer = None
    if tok_dir is None:
        print(
            f"warning: no tokenizer/ folder found near {args.checkpoint}; exporting the model only "
            "(pass --tokenizer DIR to include one)",
            file=sys.stderr,
        )
    else:
        if not tok_dir.is_dir():
            raise UserError(f"--tokenizer {tok_dir}: no such directory")
        tokenizer = Tokenizer.from_dir(tok_dir)
        check_tokenizer(tokenizer, model, tok_dir, path)
        warning = tokenizer_mismatch(payload, tok_dir)
        if warning:
            print(warning, file=sys.stderr)
    written = export_dir(model, args.out, args.format, args.dtype, tokenizer, overwrite=args.overwrite)
    print(f"Exported {path} (iteration {payload.get('iteration', '?')}) to {args.out}/ as {args.format}, {args.dtype}:")
    print("  " + ", ".join(written))
    if args.format == "hf":
        print(f"  load it: transformers.AutoModelForCausalLM.from_pretrained({str(args.out)!r})")
    return 0


def _import(args: argparse.Namespace) -> int:
    from cs336_basics.interop.hf_llama import check_out_file, import_dir, save_start_checkpoint

    check_out_file(args.out, args.overwrite)  # refuse before reading anything
    model, kind = import_dir(args.from_hf)
    out = save_start_checkpoint(model, args.out, args.from_hf, overwrite=args.overwrite)
    c = model.config
    print(
        f"Imported {args.from_hf} ({kind}: {c.num_layers} layers, d_model {c.d_model}, {c.num_heads} heads, "
        f"vocab {c.vocab_size}, context {c.context_length}) to {out}"
    )
    src = Path(args.from_hf)
    if (src / "tokenizer.json").is_file() or (src / "vocab.json").is_file():
        print(f"  generate: python -m cs336_basics.generate --checkpoint {out} --tokenizer {src}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _import(args) if args.from_hf else _export(args)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
