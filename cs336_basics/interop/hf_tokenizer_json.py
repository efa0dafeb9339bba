"""Our byte-level BPE tokenizer <-> Hugging Face's ``tokenizer.json``, both ways.

``tokenizer.json`` is the single-file format of HF ``tokenizers`` (and of every "fast" tokenizer in
``transformers``: ``AutoTokenizer.from_pretrained(DIR)`` reads it). For a GPT-2-style byte-level
BPE (Radford et al., 2019; Sennrich et al., 2016) it says:

* ``pre_tokenizer``: split text with the GPT-2 regex, then map each UTF-8 byte to GPT-2's printable
  alphabet (``ByteLevel``). We write the regex explicitly, a ``Split`` with our own
  ``pretokenize.GPT2_PAT`` followed by ``ByteLevel(use_regex=False)``, rather than relying on
  the regex built into ``ByteLevel``: what the file says is then exactly what we do. (The two forms
  give the same pre-tokens on every code point assigned in the Unicode version of the running
  Python; they differ only on code points assigned later, where the ``regex`` module and HF's
  Oniguruma engine know different Unicode versions. The tests check this.)
* ``model``: ``BPE`` with the vocabulary and the merges, in our rank order, tokens written in
  GPT-2's alphabet (``gpt2_files.token_to_str``);
* ``added_tokens``: the special tokens, each matched in the raw text before pre-tokenization and
  never split (as ours are: longest first);
* ``decoder``: ``ByteLevel``, back from the alphabet to bytes, then UTF-8.

:func:`read_tokenizer_json` reads such a file, e.g. one trained with HF ``tokenizers``
(``ByteLevel`` pre-tokenizer, ``BpeTrainer``), and refuses in one line anything that would encode
differently from our :class:`~cs336_basics.tokenizer.Tokenizer` (WordPiece, Unigram, another
pre-tokenizer or regex, a normalizer, ``add_prefix_space``, BPE dropout, ...).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cs336_basics.corpus import chat
from cs336_basics.fast.pretokenize import GPT2_PAT
from cs336_basics.interop.gpt2_files import EOT, TokenizerError, bytes_to_unicode, token_to_str
from cs336_basics.utils.errors import read_error_line
from cs336_basics.utils.fsutil import atomic_write_text

__all__ = ["TOKENIZER_JSON", "TOKENIZER_CONFIG", "tokenizer_json", "write_hf_tokenizer_files", "read_tokenizer_json"]

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"

# The regex HF's ByteLevel pre-tokenizer uses when ``use_regex`` is true: GPT-2's, with the
# contractions spelled out one by one. It matches exactly what GPT2_PAT matches.
HF_BYTELEVEL_PAT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_GPT2_PATTERNS = (GPT2_PAT, HF_BYTELEVEL_PAT)


def _added(token_id: int, content: str) -> dict[str, Any]:
    return {"id": token_id, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": True}  # fmt: skip


def tokenizer_json(tokenizer: Any) -> dict[str, Any]:
    """The ``tokenizer.json`` dict of a :class:`~cs336_basics.tokenizer.Tokenizer`."""
    vocab: dict[str, int] = {}
    for i, b in sorted(tokenizer.vocab.items()):
        vocab.setdefault(token_to_str(b), i)
    specials = [_added(tokenizer.token_id(s), s) for s in tokenizer.special_tokens]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": sorted(specials, key=lambda t: t["id"]),
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": GPT2_PAT}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        },
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            # "a b" strings (every tokenizers version reads them): GPT-2's alphabet has no space.
            "merges": [f"{token_to_str(a)} {token_to_str(b)}" for a, b in tokenizer.merges],
        },
    }


def write_hf_tokenizer_files(directory: str | os.PathLike, tokenizer: Any, model_max_length: int | None = None) -> None:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` (each atomically) into ``directory``.

    ``tokenizer_config.json`` makes ``transformers.AutoTokenizer`` load ``tokenizer.json`` as it is
    (``PreTrainedTokenizerFast``), with ``<|endoftext|>`` as BOS/EOS when present, no extra
    prefix space and no "clean-up" of spaces on decode (either would change the text). A tokenizer
    with the chat special tokens also gets a ``chat_template`` (:func:`cs336_basics.corpus.chat.hf_chat_template`),
    so ``apply_chat_template`` formats conversations exactly as fine-tuning and ``generate --chat`` do.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / TOKENIZER_JSON, json.dumps(tokenizer_json(tokenizer), ensure_ascii=False, indent=1) + "\n")
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(tokenizer.token_id(s)): {k: v for k, v in _added(0, s).items() if k != "id"}
            for s in tokenizer.special_tokens
        },
    }
    if EOT in tokenizer.special_tokens:
        config["bos_token"] = config["eos_token"] = EOT
    if model_max_length is not None:
        config["model_max_length"] = int(model_max_length)
    if not chat.missing_chat_tokens(tokenizer.special_tokens):  # a chat tokenizer: apply_chat_template works
        config["chat_template"] = chat.hf_chat_template()
    atomic_write_text(d / TOKENIZER_CONFIG, json.dumps(config, ensure_ascii=False, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------
def _check_byte_level(pre: Any, where: str) -> None:
    """The pre-tokenizer must be GPT-2's: ByteLevel(regex) or Split(GPT-2 regex) + ByteLevel(no regex)."""

    def byte_level(p: Any, use_regex: bool) -> bool:
        return (
            isinstance(p, dict)
            and p.get("type") == "ByteLevel"
            and bool(p.get("use_regex", True)) == use_regex
            and not p.get("add_prefix_space", False)
        )

    if byte_level(pre, True):
        return
    parts = pre.get("pretokenizers") if isinstance(pre, dict) and pre.get("type") == "Sequence" else None
    if isinstance(parts, list) and len(parts) == 1 and byte_level(parts[0], True):
        return
    if isinstance(parts, list) and len(parts) == 2 and byte_level(parts[1], False):
        split = parts[0]
        if (
            isinstance(split, dict)
            and split.get("type") == "Split"
            and isinstance(split.get("pattern"), dict)
            and split["pattern"].get("Regex") in _GPT2_PATTERNS
            and split.get("behavior") == "Isolated"
            and not split.get("invert", False)
        ):
            return
    if isinstance(pre, dict) and pre.get("type") == "ByteLevel" and pre.get("add_prefix_space"):
        raise TokenizerError(f"{where}: ByteLevel pre-tokenizer with add_prefix_space is not supported")
    desc = pre.get("type") if isinstance(pre, dict) else pre
    if isinstance(parts, list):
        desc = "Sequence[" + ", ".join(str(p.get("type") if isinstance(p, dict) else p) for p in parts) + "]"
    raise TokenizerError(
        f"{where}: pre-tokenizer {desc} is not GPT-2's byte-level one (the GPT-2 regex + ByteLevel); "
        "this tokenizer would split text differently from ours"
    )


def _bytes_of(token: str, decoder: dict[str, int], where: str) -> bytes:
    try:
        return bytes(decoder[c] for c in token)
    except KeyError as err:
        raise TokenizerError(
            f"{where}: token {token!r} has character {err.args[0]!r}, which is not in GPT-2's byte-to-unicode "
            "alphabet (not a byte-level BPE vocabulary)"
        ) from None


def _merge_place(path: Path, merge: Any) -> str:
    """``FILE:LINE`` of a merge written as a string (one a line, as ours and most files have them), else ``FILE``."""
    if isinstance(merge, str):
        raw = path.read_text(encoding="utf-8")
        start = raw.find('"merges"')
        i = raw.find(json.dumps(merge, ensure_ascii=False), start) if start != -1 else -1
        if i != -1:
            return f"{path}:{raw.count(chr(10), 0, i) + 1}"
    return str(path)


def read_tokenizer_json(path: str | os.PathLike) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]], list[str]]:
    """``(vocab, merges, special_tokens)`` of a byte-level BPE ``tokenizer.json``, ready for
    ``Tokenizer(vocab, merges, special_tokens)``; every added token becomes a special token (HF
    matches them in the raw text before pre-tokenization, as we match special tokens)."""
    path = Path(path)
    where = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise TokenizerError(read_error_line(where, err)) from None
    except UnicodeDecodeError as err:
        raise TokenizerError(f"{where}: cannot read ({err})") from None
    except json.JSONDecodeError as err:
        raise TokenizerError(f"{where}:{err.lineno}: invalid JSON: {err.msg} (column {err.colno})") from None
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict):
        raise TokenizerError(f"{where}: no 'model' object; not a Hugging Face tokenizer.json")
    kind = model.get("type", "BPE" if "merges" in model else None)
    if kind != "BPE":
        raise TokenizerError(f"{where}: model type {kind!r} is not supported (only byte-level BPE)")
    if data.get("normalizer") is not None:
        norm = data["normalizer"]
        raise TokenizerError(
            f"{where}: normalizer {norm.get('type') if isinstance(norm, dict) else norm} is not supported "
            "(ours encodes the text as it is)"
        )
    _check_byte_level(data.get("pre_tokenizer"), where)
    post = data.get("post_processor")
    if post is not None and not (isinstance(post, dict) and post.get("type") == "ByteLevel"):
        raise TokenizerError(
            f"{where}: post-processor {post.get('type') if isinstance(post, dict) else post} adds tokens around "
            "each text; ours never does"
        )
    for key, ok in (("dropout", (None, 0, 0.0)), ("continuing_subword_prefix", (None, "")),
                    ("end_of_word_suffix", (None, "")), ("ignore_merges", (None, False)),
                    ("byte_fallback", (None, False))):  # fmt: skip
        if model.get(key) not in ok:
            raise TokenizerError(f"{where}: BPE option {key}={model[key]!r} is not supported (ours encodes without it)")

    decoder = {c: b for b, c in bytes_to_unicode().items()}
    added: dict[int, str] = {}
    for tok in data.get("added_tokens") or []:
        if not isinstance(tok, dict) or not isinstance(tok.get("id"), int) or not isinstance(tok.get("content"), str):
            raise TokenizerError(f"{where}: added token {tok!r} needs an integer id and a content string")
        for flag in ("single_word", "lstrip", "rstrip"):
            if tok.get(flag):
                raise TokenizerError(f"{where}: added token {tok['content']!r} has {flag}; not supported")
        added[tok["id"]] = tok["content"]

    raw_vocab = model.get("vocab")
    if not isinstance(raw_vocab, dict):
        raise TokenizerError(f"{where}: model.vocab must be an object mapping tokens to ids")
    vocab: dict[int, bytes] = {}
    for token, i in raw_vocab.items():
        if isinstance(i, bool) or not isinstance(i, int) or i < 0:
            raise TokenizerError(f"{where}: id of {token!r} is {i!r}, expected an integer >= 0")
        if i in vocab:
            raise TokenizerError(f"{where}: id {i} is used twice in model.vocab")
        vocab[i] = added[i].encode("utf-8") if i in added else _bytes_of(token, decoder, where)
    for i, content in added.items():  # added tokens need not be in the model's vocabulary
        vocab[i] = content.encode("utf-8")
    seen: dict[bytes, int] = {}
    for i, b in sorted(vocab.items()):
        if b in seen:
            raise TokenizerError(f"{where}: ids {seen[b]} and {i} are the same token {b!r}")
        seen[b] = i

    known = set(vocab.values())
    merges: list[tuple[bytes, bytes]] = []
    for n, m in enumerate(model.get("merges") or [], 1):
        parts = m.split(" ") if isinstance(m, str) else m
        if not (isinstance(parts, list) and len(parts) == 2 and all(isinstance(p, str) and p for p in parts)):
            raise TokenizerError(f"{_merge_place(path, m)}: merge #{n} {m!r} is not a pair of tokens")
        a, b = _bytes_of(parts[0], decoder, where), _bytes_of(parts[1], decoder, where)
        for t, shown in ((a, parts[0]), (b, parts[1]), (a + b, parts[0] + parts[1])):
            if t not in known:  # (else Tokenizer() refuses it without naming the file)
                raise TokenizerError(
                    f"{_merge_place(path, m)}: merge #{n} {m!r}: token {shown!r} is not in model.vocab"
                )
        merges.append((a, b))
    specials = [added[i] for i in sorted(added)]
    return vocab, merges, specials
