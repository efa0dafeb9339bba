"""Conversations for instruction fine-tuning: four record formats, one template, a loss mask.

Record formats (``--chat_format auto`` picks one per record by its fields, in this order):

* ``messages``: ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}``
  (the OpenAI / Hugging Face chat-template convention);
* ``conversations``: ``{"conversations": [{"from": "system"|"human"|"gpt", "value": "..."}, ...]}``
  (ShareGPT; ``user``/``assistant`` are accepted for ``from`` too);
* ``prompt_response``: ``{"prompt": "...", "response": "...", "system": "..." (optional)}``;
* ``instruction``: ``{"instruction": "...", "input": "..." (optional), "output": "..."}`` (Alpaca:
  the user turn is the instruction, then a blank line and the input when there is one).

The template (one string per conversation; no other characters are added)::

    <|system|>{system}                      only when the conversation has a system message
    <|user|>{user 1}<|assistant|>{answer 1}<|endoftext|>
    <|user|>{user 2}<|assistant|>{answer 2}<|endoftext|>
    ...

written on one line, e.g. ``<|user|>Hi<|assistant|>Hello!<|endoftext|>``. Every marker is a special
token, so it is one id that no text can produce. ``<|endoftext|>`` closes each answer, so a model
that learned the template stops there, and conversations follow each other in a token file as
documents do in pretraining. The template is written once (``WRAP``): the training data, the prompt
of ``generate --chat`` and the ``chat_template`` a saved or exported tokenizer carries for Hugging
Face's ``apply_chat_template`` (:func:`hf_chat_template`) are all made from it.

The loss mask has one entry per token id: 1 on the tokens of every assistant answer and on the
``<|endoftext|>`` that closes it, 0 elsewhere (system and user text, and the markers). Training
with it (``training_together`` finds ``OUT.mask.npy`` beside ``OUT.npy``) puts the loss on the
answers only, the usual supervised fine-tuning recipe (InstructGPT, Ouyang et al. 2022; Alpaca).

A record is *malformed* when its turns are missing, of the wrong type, empty, in an impossible
order (system not first, user and assistant not alternating, no final answer), or contain one of
the template's special tokens as text; it is skipped and reported by line (or, with ``strict``,
the first one is an error).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cs336_basics.corpus.layout import CorpusError

SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|endoftext|>"
CHAT_TOKENS = (END, SYSTEM, USER, ASSISTANT)
# The template, written once: the markers before and after each role's content. Training data
# (render), generate --chat (prompt_text) and the Jinja chat_template of an export
# (hf_chat_template) are all made from this table.
WRAP = {"system": (SYSTEM, ""), "user": (USER, ""), "assistant": (ASSISTANT, END)}
GENERATION_PROMPT = WRAP["assistant"][0]  # where the model's answer starts
FORMATS = ("messages", "conversations", "prompt_response", "instruction")
_ROLE_OF = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}

Segment = tuple[str, int]  # (text, mask bit of every token it encodes to)


class Malformed(ValueError):
    """A record that is not a usable conversation; ``str(err)`` says why."""


@dataclass(frozen=True)
class Turn:
    role: str  # "system", "user" or "assistant"
    content: str


def train_bpe_command() -> str:
    """The command that trains a tokenizer with the template's special tokens."""
    specials = " ".join(f"'{t}'" for t in CHAT_TOKENS)
    return f"python -m cs336_basics.train_bpe --input DATA --vocab_size N --special_tokens {specials} --output DIR"


def missing_chat_tokens(special_tokens: Sequence[str]) -> list[str]:
    """The template's special tokens that ``special_tokens`` lacks (empty: a chat tokenizer)."""
    return [t for t in CHAT_TOKENS if t not in special_tokens]


def check_chat_tokenizer(special_tokens: Sequence[str], where: str) -> None:
    """Refuse a tokenizer that lacks the template's special tokens, saying how to make one."""
    missing = missing_chat_tokens(special_tokens)
    if missing:
        raise CorpusError(
            f"{where}: tokenizer lacks the chat special token(s) {' '.join(missing)}; train one that has them: "
            + train_bpe_command()
        )


def detect_format(rec: dict[str, Any]) -> str:
    if "messages" in rec:
        return "messages"
    if "conversations" in rec:
        return "conversations"
    if "prompt" in rec and "response" in rec:
        return "prompt_response"
    if "instruction" in rec and "output" in rec:
        return "instruction"
    have = ", ".join(map(str, list(rec)[:8])) or "none"
    raise Malformed(
        f"no conversation fields (expected messages, conversations, prompt/response or instruction/output; has {have})"
    )


def _text(rec: dict[str, Any], key: str, optional: bool = False) -> str | None:
    if key not in rec or (optional and rec[key] is None):
        if optional:
            return None
        raise Malformed(f"missing field {key!r}")
    value = rec[key]
    if not isinstance(value, str):
        raise Malformed(f"field {key!r} is {type(value).__name__}, expected a string")
    return value


def _turn_list(rec: dict[str, Any], key: str, role_key: str, text_key: str) -> list[Turn]:
    items = rec[key]
    if not isinstance(items, list):
        raise Malformed(f"field {key!r} is {type(items).__name__}, expected a list of turns")
    turns = []
    for i, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise Malformed(f"{key}[{i}] is {type(item).__name__}, expected an object with {role_key!r}, {text_key!r}")
        if role_key not in item:
            raise Malformed(f"{key}[{i}] has no {role_key!r}")
        role = item[role_key]
        if not isinstance(role, str) or role not in _ROLE_OF:
            raise Malformed(f"{key}[{i}] has unknown {role_key} {role!r} (use {', '.join(_ROLE_OF)})")
        if text_key not in item:
            raise Malformed(f"{key}[{i}] has no {text_key!r}")
        content = item[text_key]
        if not isinstance(content, str):
            raise Malformed(f"{key}[{i}].{text_key} is {type(content).__name__}, expected a string")
        turns.append(Turn(_ROLE_OF[role], content))
    return turns


def parse_conversation(rec: dict[str, Any], fmt: str = "auto") -> list[Turn]:
    """The turns of one record in format ``fmt`` (``auto``: detected); raises :class:`Malformed`."""
    kind = detect_format(rec) if fmt == "auto" else fmt
    if kind == "messages":
        turns = _turn_list(rec, "messages", "role", "content") if "messages" in rec else _text(rec, "messages")
    elif kind == "conversations":
        turns = (
            _turn_list(rec, "conversations", "from", "value") if "conversations" in rec else _text(rec, "conversations")
        )
    elif kind == "prompt_response":
        system = _text(rec, "system", optional=True)
        turns = [Turn("user", _text(rec, "prompt")), Turn("assistant", _text(rec, "response"))]
        turns = ([Turn("system", system)] if system else []) + turns
    elif kind == "instruction":
        system = _text(rec, "system", optional=True)
        instruction, extra = _text(rec, "instruction"), _text(rec, "input", optional=True)
        user = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
        turns = ([Turn("system", system)] if system else []) + [
            Turn("user", user),
            Turn("assistant", _text(rec, "output")),
        ]
    else:
        raise ValueError(f"unknown chat format {fmt!r} (use auto or {', '.join(FORMATS)})")
    check_turns(turns)  # type: ignore[arg-type]
    return turns  # type: ignore[return-value]


def special_token_in(text: str) -> str | None:
    """The first of the template's special tokens that ``text`` contains, else None. A turn may not
    contain one: as text it would encode to the marker's id, a turn boundary no one wrote."""
    return next((tok for tok in CHAT_TOKENS if tok in text), None)


def check_turns(turns: list[Turn]) -> None:
    """System first (if at all), then user and assistant alternating, ending with an answer."""
    if not turns:
        raise Malformed("no turns")
    for i, t in enumerate(turns, 1):
        if not t.content.strip():
            raise Malformed(f"turn {i} ({t.role}) has empty content")
        tok = special_token_in(t.content)
        if tok is not None:
            raise Malformed(f"turn {i} ({t.role}) contains the special token {tok} as text")
    body = turns[1:] if turns[0].role == "system" else turns
    for i, t in enumerate(body):
        want = "user" if i % 2 == 0 else "assistant"
        if t.role != want:
            pos = i + 1 + (len(turns) - len(body))
            raise Malformed(f"turn {pos} is {t.role}, expected {want} (system first, then user/assistant alternating)")
    if not body or body[-1].role != "assistant":
        raise Malformed("no assistant answer (a conversation must end with one)")


def render(turns: Sequence[Turn]) -> list[Segment]:
    """The template as (text, mask bit) segments; joining the texts gives the conversation string.
    The mask is 1 on an answer and the marker after it (its ``<|endoftext|>``), 0 elsewhere."""
    segs: list[Segment] = []
    for t in turns:
        before, after = WRAP[t.role]
        bit = int(t.role == "assistant")
        segs += [(before, 0)] if before else []
        segs.append((t.content, bit))
        segs += [(after, bit)] if after else []
    return segs


def prompt_text(user: str, system: str | None = None) -> str:
    """What ``generate --chat`` feeds the model: the template up to where the answer starts."""
    turns = ([Turn("system", system)] if system else []) + [Turn("user", user)]
    return "".join(text for text, _ in render(turns)) + GENERATION_PROMPT


def hf_chat_template() -> str:
    """The template as a Hugging Face ``chat_template`` (Jinja, for ``tokenizer_config.json``).

    ``tokenizer.apply_chat_template(messages)`` then gives the string :func:`render` gives (and so
    the same ids), and ``add_generation_prompt=True`` appends :data:`GENERATION_PROMPT` as
    :func:`prompt_text` does. Messages use the OpenAI roles (system, user, assistant); an unknown
    role, a system message after the first, user and assistant not alternating, or a chat special
    token inside a message's text raise an error (as :func:`check_turns` refuses such records)
    rather than render something the model never saw.
    """
    for marker in (*CHAT_TOKENS, *(m for pair in WRAP.values() for m in pair)):
        assert not set("{}%#'\\") & set(marker), marker  # written literally into the Jinja below
    roles = list(WRAP)

    def fail(msg: str) -> str:
        return "{{ raise_exception(" + msg + ") }}"

    checks = (
        "{%- if role not in "
        + repr(roles)
        + " -%}"
        + fail("'message ' ~ loop.index ~ ' has unknown role ' ~ role ~ ' (use " + ", ".join(roles) + ")'")
        + "{%- elif role == 'system' and not loop.first -%}"
        + fail("'message ' ~ loop.index ~ ' is a system message; only the first may be'")
        + "{%- elif role != 'system' and (role == 'user') != ((loop.index0 - offset) % 2 == 0) -%}"
        + fail("'message ' ~ loop.index ~ ' is ' ~ role ~ '; user and assistant must alternate, user first'")
        + "{%- endif -%}"
        + "{%- set n = loop.index -%}"
        + "{%- for token in "
        + repr(list(CHAT_TOKENS))
        + " -%}{%- if token in message['content'] -%}"
        + fail("'message ' ~ n ~ ' (' ~ role ~ ') contains the special token ' ~ token ~ ' as text'")
        + "{%- endif -%}{%- endfor -%}"
    )
    body = "".join(
        ("{%- if" if i == 0 else "{%- elif") + f" role == '{role}' -%}}{before}{{{{ message['content'] }}}}{after}"
        for i, (role, (before, after)) in enumerate(WRAP.items())
    )
    return (
        "{%- set offset = 1 if messages and messages[0]['role'] == 'system' else 0 -%}"
        "{%- for message in messages -%}{%- set role = message['role'] -%}"
        + checks + body + "{%- endif -%}{%- endfor -%}"
        + "{%- if add_generation_prompt -%}" + GENERATION_PROMPT + "{%- endif -%}"
    )  # fmt: skip


@dataclass
class MalformedReport:
    """Skipped records (where, why); the first ``keep`` are listed in the summary."""

    keep: int = 10
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, where: str, reason: str) -> None:
        self.count += 1
        if len(self.examples) < self.keep:
            self.examples.append(f"{where} ({reason})")

    def summary(self) -> str:
        more = f"; and {self.count - len(self.examples)} more" if self.count > len(self.examples) else ""
        return f"skipped {self.count} malformed conversation(s): " + "; ".join(self.examples) + more
