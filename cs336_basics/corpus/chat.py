"""Conversations for instruction fine-tuning: four record formats, one template, a loss mask.

Record formats (``--chat_format auto`` picks one per record by its fields, in this order; a field
whose value is null counts as absent, as in the rows of a Hugging Face data set that mixes formats,
where every row has every format's fields):

* ``messages``: ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}``
  (the OpenAI / Hugging Face chat-template convention). ``content`` may also be a list of parts,
  ``[{"type": "text", "text": "..."}, ...]`` (OpenAI's format): the text parts are joined with
  nothing in between (as the chat templates of Hugging Face models that take parts render them); a
  part of another type (``image_url``, ``input_audio``, ...) makes the record malformed, since the
  template is text only;
* ``conversations``: ``{"conversations": [{"from": "system"|"human"|"gpt", "value": "..."}, ...]}``
  (ShareGPT; ``user``/``assistant`` are accepted for ``from`` too). Tool turns: ``function_call``
  (the model calling a tool) is an assistant turn, so it gets the loss and closes with
  ``<|endoftext|>``; ``observation`` (or ``tool``: the tool's result) is a user turn, no loss. They
  must alternate like any other turns (glaive / LLaMA-Factory / ToolACE data does: human,
  function_call, observation, gpt); a record with tool turns and tool definitions in a ``tools``
  field is malformed, since the template has no place for the definitions (put them in the system
  message);
* ``prompt_response``: ``{"prompt": "...", "response": "...", "system": "..." (optional)}``;
* ``instruction``: ``{"instruction": "...", "input": "..." (optional), "output": "..."}`` (Alpaca:
  the user turn is the instruction, then a blank line and the input when there is one).

A ``system`` string beside ``messages`` or ``conversations`` (ShareGPT sets often keep it there) is
the system turn; a record with both it and a different first system turn is malformed.

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
the template's special tokens as text; it is skipped, counted by reason and reported by line (or,
with ``strict``, the first one is an error). Reasons name the place in the record as JSON does,
counting from 0: ``messages[2].content[1] is a part of type 'image_url' ...``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cs336_basics.corpus.layout import CorpusError
from cs336_basics.interop.gpt2_files import EOT

SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", EOT
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
    """A record that is not a usable conversation; ``str(err)`` says why: ``at`` (where in the record,
    as a JSON path counting from 0, e.g. ``messages[2].content``; empty for the record as a whole)
    followed by ``why``."""

    def __init__(self, why: str, at: str = "") -> None:
        super().__init__(f"{at} {why}" if at else why)
        self.why, self.at = why, at


@dataclass(frozen=True)
class Turn:
    role: str  # "system", "user" or "assistant"
    content: str
    at: str = ""  # where it is in the record (``messages[2]``, ``prompt``), for error messages
    tag: str = ""  # the record's own name for the role when it differs (a ShareGPT tool turn)


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


def _has(rec: dict[str, Any], key: str) -> bool:
    """A field is there when it is present and not null (a Hugging Face data set that mixes formats
    gives every row every format's fields, null where the row has none)."""
    return rec.get(key) is not None


def detect_format(rec: dict[str, Any]) -> str:
    if _has(rec, "messages"):
        return "messages"
    if _has(rec, "conversations"):
        return "conversations"
    if _has(rec, "prompt") and _has(rec, "response"):
        return "prompt_response"
    if _has(rec, "instruction") and _has(rec, "output"):
        return "instruction"
    have = ", ".join(str(k) for k in rec if _has(rec, k)) or "none"
    if len(have) > 120:
        have = have[:117] + "..."
    raise Malformed(
        f"no conversation fields (expected messages, conversations, prompt/response or instruction/output; has {have})"
    )


def _text(rec: dict[str, Any], key: str, optional: bool = False) -> str | None:
    if not _has(rec, key):
        if optional:
            return None
        raise Malformed(f"missing field {key!r}")
    value = rec[key]
    if not isinstance(value, str):
        raise Malformed(f"field {key!r} is {type(value).__name__}, expected a string")
    return value


# ShareGPT tool turns: a call is what the model says (an assistant turn, with the loss); its result
# comes from outside (a user turn, no loss). ``tool`` is ToolACE's name for the result.
TOOL_TURNS = {"function_call": "assistant", "observation": "user", "tool": "user"}
_FROM_OF = {**_ROLE_OF, **TOOL_TURNS}
TOOL_NOTE = (
    "conversation(s) with tool turns: function_call rendered as an assistant turn (with the loss), "
    "observation/tool as a user turn"
)


def _parts_text(parts: list, at: str) -> str:
    """OpenAI's content parts: the text parts joined with nothing in between; any other part is an error."""
    texts = []
    for j, part in enumerate(parts):
        where = f"{at}[{j}]"
        if not isinstance(part, dict):
            raise Malformed(f'is {type(part).__name__}, expected a part like {{"type": "text", "text": "..."}}', where)
        kind = part.get("type")
        if kind != "text":
            what = f"a part of type {kind!r}" if isinstance(kind, str) else "a part without a 'type'"
            raise Malformed(f"is {what}; only text parts can be rendered (the template is text only)", where)
        text = part.get("text")
        if not isinstance(text, str):
            raise Malformed(f"is {type(text).__name__}, expected a string", f"{where}.text")
        texts.append(text)
    return "".join(texts)


def _turn_list(rec: dict[str, Any], key: str, role_key: str, text_key: str, roles: dict[str, str]) -> list[Turn]:
    items = rec[key]
    if not isinstance(items, list):
        raise Malformed(f"field {key!r} is {type(items).__name__}, expected a list of turns")
    turns = []
    for i, item in enumerate(items):
        at = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise Malformed(f"is {type(item).__name__}, expected an object with {role_key!r}, {text_key!r}", at)
        if item.get(role_key) is None:
            raise Malformed(f"has no {role_key!r}", at)
        role = item[role_key]
        if not isinstance(role, str) or role not in roles:
            raise Malformed(f"has unknown {role_key} {role!r} (use {', '.join(roles)})", at)
        if item.get("tool_calls"):
            raise Malformed("has tool_calls, which the template cannot render", at)
        if item.get(text_key) is None:
            raise Malformed(f"has no {text_key!r}", at)
        content = item[text_key]
        if isinstance(content, list) and text_key == "content":
            content = _parts_text(content, f"{at}.{text_key}")
        elif not isinstance(content, str):
            raise Malformed(f"is {type(content).__name__}, expected a string", f"{at}.{text_key}")
        turns.append(Turn(roles[role], content, at, role if role in TOOL_TURNS else ""))
    return turns


def _nonempty(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip() not in ("", "[]")
    return value is not None and value != []


def _with_system(rec: dict[str, Any], turns: list[Turn]) -> list[Turn]:
    """A top-level ``system`` string beside a turn list is the system turn."""
    system = _text(rec, "system", optional=True)
    if not system:
        return turns
    if turns and turns[0].role == "system":
        if turns[0].content == system:
            return turns
        raise Malformed(f"has both a 'system' field and a different system turn ({turns[0].at}); keep one")
    return [Turn("system", system, "system"), *turns]


def parse_conversation(rec: dict[str, Any], fmt: str = "auto") -> list[Turn]:
    """The turns of one record in format ``fmt`` (``auto``: detected); raises :class:`Malformed`."""
    kind = detect_format(rec) if fmt == "auto" else fmt
    if kind in ("messages", "conversations"):
        if not _has(rec, kind):
            raise Malformed(f"missing field {kind!r}")
        if kind == "messages":
            turns = _turn_list(rec, "messages", "role", "content", _ROLE_OF)
        else:
            turns = _turn_list(rec, "conversations", "from", "value", _FROM_OF)
            if any(t.tag for t in turns) and _nonempty(rec.get("tools")):
                raise Malformed(
                    "has tool turns and tool definitions in 'tools', which the template has no place for "
                    "(put them in the system message)"
                )
        turns = _with_system(rec, turns)
    elif kind == "prompt_response":
        system = _text(rec, "system", optional=True)
        turns = [Turn("user", _text(rec, "prompt"), "prompt"), Turn("assistant", _text(rec, "response"), "response")]
        turns = ([Turn("system", system, "system")] if system else []) + turns
    elif kind == "instruction":
        system = _text(rec, "system", optional=True)
        instruction, extra = _text(rec, "instruction"), _text(rec, "input", optional=True)
        user = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
        turns = ([Turn("system", system, "system")] if system else []) + [
            Turn("user", user, "instruction"),
            Turn("assistant", _text(rec, "output"), "output"),
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

    def name(i: int, t: Turn) -> str:
        return t.at or f"turns[{i}]"

    def role(t: Turn) -> str:
        return f"{t.tag} ({'an' if t.role == 'assistant' else 'a'} {t.role} turn)" if t.tag else t.role

    for i, t in enumerate(turns):
        if not t.content.strip():
            raise Malformed(f"({role(t)}) has empty content", name(i, t))
        tok = special_token_in(t.content)
        if tok is not None:
            raise Malformed(f"({role(t)}) contains the special token {tok} as text", name(i, t))
    skip = 1 if turns[0].role == "system" else 0
    body = turns[skip:]
    for i, t in enumerate(body):
        want = "user" if i % 2 == 0 else "assistant"
        if t.role != want:
            raise Malformed(
                f"is {role(t)}, expected {want} (system first, then user/assistant alternating)", name(i + skip, t)
            )
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


_INDEX = re.compile(r"\[\d+\]")


def _places(wheres: list[str]) -> str:
    """``a.jsonl:3``, ``a.jsonl:9`` -> ``a.jsonl lines 3, 9`` (other places as they are)."""
    groups: list[tuple[str, list[str]]] = []
    for w in wheres:
        path, _, line = w.rpartition(":")
        if path and line.isdigit():
            if groups and groups[-1][0] == path and groups[-1][1]:
                groups[-1][1].append(line)
            else:
                groups.append((path, [line]))
        else:
            groups.append((w, []))
    return "; ".join(
        f"{p} line{'s' if len(lines) > 1 else ''} {', '.join(lines)}" if lines else p for p, lines in groups
    )


@dataclass
class MalformedReport:
    """Skipped records counted by reason (the reason with its indices generalized, ``messages[i]``),
    with the first ``keep`` places of each; and counts of records kept with a note (``note``)."""

    keep: int = 3
    count: int = 0
    reasons: dict[str, list] = field(default_factory=dict)  # reason -> [count, places]
    notes: dict[str, int] = field(default_factory=dict)

    def add(self, where: str, reason: str) -> None:
        self.count += 1
        entry = self.reasons.setdefault(_INDEX.sub("[i]", reason), [0, []])
        entry[0] += 1
        if len(entry[1]) < self.keep:
            entry[1].append(where)

    def note(self, what: str) -> None:
        self.notes[what] = self.notes.get(what, 0) + 1

    def _by_count(self) -> list[tuple[str, list]]:
        return sorted(self.reasons.items(), key=lambda kv: -kv[1][0])

    def summary(self, most: int = 3) -> str:
        """One line: the count and the most common reasons."""
        top = self._by_count()
        parts = [f"{n} x {reason}" for reason, (n, _) in top[:most]]
        if len(top) > most:
            parts.append(f"{len(top) - most} more reason(s)")
        return f"skipped {self.count} malformed conversation(s): " + "; ".join(parts)

    def lines(self, most: int = 20) -> list[str]:
        """The report for a console: one line per reason (its count and first places), then the notes."""
        out = []
        if self.count:
            out.append(
                f"warning: skipped {self.count} malformed conversation(s) (--strict: stop at the first), by reason:"
            )
            top = self._by_count()
            width = len(str(top[0][1][0]))
            for reason, (n, places) in top[:most]:
                more = ", ..." if n > len(places) else ""
                out.append(f"  {n:>{width}}  {reason}: {_places(places)}{more}")
            if len(top) > most:
                rest = sum(n for _, (n, _) in top[most:])
                out.append(f"  ... and {len(top) - most} more reason(s) ({rest} record(s))")
        for what, n in self.notes.items():
            out.append(f"note: {n} {what}")
        return out
