"""Conversations: the four record formats against hand-written template strings, the loss mask
against the assistant spans (decoded), masked cross-entropy against torch's ``ignore_index``, the
refusals (tokenizer without chat tokens, malformed records) and ``generate --chat``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cs336_basics import generate
from cs336_basics.corpus import chat
from cs336_basics.fast.nn_utils import masked_cross_entropy
from cs336_basics.utils.errors import run_cli
from tests._corpus_utils import EOT, make_tokenizer, tok, tok_dir, tokenize  # noqa: F401  (fixtures and the CLI runner)

CASES = [
    (  # messages, with a system turn and two exchanges
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
                      {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Name a pet."},
                      {"role": "assistant", "content": "A cat."}]},
        "<|system|>Be brief.<|user|>Hi there<|assistant|>Hello!<|endoftext|><|user|>Name a pet.<|assistant|>A cat.<|endoftext|>",
        "Hello!<|endoftext|>A cat.<|endoftext|>",
    ),
    (  # ShareGPT
        {"conversations": [{"from": "human", "value": "the dog ran?"}, {"from": "gpt", "value": "yes, it ran."}]},
        "<|user|>the dog ran?<|assistant|>yes, it ran.<|endoftext|>",
        "yes, it ran.<|endoftext|>",
    ),
    (
        {"prompt": "red or blue", "response": "blue", "system": "You like colors."},
        "<|system|>You like colors.<|user|>red or blue<|assistant|>blue<|endoftext|>",
        "blue<|endoftext|>",
    ),
    (  # Alpaca: instruction, a blank line, the input
        {"instruction": "Count.", "input": "one two", "output": "three"},
        "<|user|>Count.\n\none two<|assistant|>three<|endoftext|>",
        "three<|endoftext|>",
    ),
    (  # Alpaca with an empty input
        {"instruction": "Say hi.", "input": "", "output": "hi"},
        "<|user|>Say hi.<|assistant|>hi<|endoftext|>",
        "hi<|endoftext|>",
    ),
]  # fmt: skip


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def masked_spans(ids: np.ndarray, mask: np.ndarray) -> list[list[int]]:
    """Runs of consecutive masked ids."""
    spans, cur = [], []
    for i, m in zip(ids.tolist(), mask.tolist()):
        if m:
            cur.append(i)
        elif cur:
            spans.append(cur)
            cur = []
    return spans + ([cur] if cur else [])


@pytest.mark.parametrize("fmt", ["auto", "explicit"])
def test_four_formats_render_the_template_and_mask_exactly_the_answers(fmt, tok_dir, tok, tmp_path):
    names = ["messages", "conversations", "prompt_response", "instruction", "instruction"]
    for i, (rec, text, answers) in enumerate(CASES):
        write_jsonl(tmp_path / "c.jsonl", [rec])
        out = tmp_path / f"c{i}.npy"
        extra = ["--chat_format", names[i]] if fmt == "explicit" else []
        assert tokenize("--tokenizer", str(tok_dir), "--input", str(tmp_path / "c.jsonl"), "--output", str(out),
                        "--chat", *extra) == 0  # fmt: skip
        ids, mask = np.load(out), np.load(tmp_path / f"c{i}.mask.npy")
        assert mask.dtype == np.uint8 and len(mask) == len(ids)
        assert tok.decode(ids.tolist()) == text
        assert ids.tolist() == tok.encode(text)
        assert tok.decode(ids[mask == 1].tolist()) == answers
        # each masked run is one answer plus the <|endoftext|> closing it, and nothing else
        want_spans = [tok.encode(a + EOT) for a in answers.split(EOT)[:-1]]
        assert masked_spans(ids, mask) == want_spans


def test_masked_loss_equals_torch_cross_entropy_with_ignore_index():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g, requires_grad=True)
    y = torch.randint(0, 11, (3, 7), generator=g)
    m = torch.rand(3, 7, generator=g) < 0.4
    ref = F.cross_entropy(logits.reshape(-1, 11), torch.where(m, y, -100).reshape(-1), ignore_index=-100)
    ours = masked_cross_entropy(logits, y, m.long())
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    (g_ours,) = torch.autograd.grad(ours, logits)
    (g_ref,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-7)
    ref_sum = F.cross_entropy(logits.reshape(-1, 11), torch.where(m, y, -100).reshape(-1), reduction="sum")
    torch.testing.assert_close(masked_cross_entropy(logits, y, m, reduction="sum"), ref_sum)
    # bf16 logits: computed in float32, like cross_entropy
    lb = logits.detach().bfloat16()
    ref_b = F.cross_entropy(lb.float().reshape(-1, 11), torch.where(m, y, -100).reshape(-1), ignore_index=-100)
    torch.testing.assert_close(masked_cross_entropy(lb, y, m), ref_b)
    # nothing masked: 0 and a zero gradient, not NaN
    zero = masked_cross_entropy(logits, y, torch.zeros_like(m))
    assert zero.item() == 0.0
    assert torch.equal(torch.autograd.grad(zero, logits)[0], torch.zeros_like(logits))


def test_tokenizer_without_chat_tokens_is_refused_with_the_command_that_makes_one(tmp_path, capsys):
    plain = make_tokenizer(tmp_path / "plain", specials=[EOT], vocab_size=280)
    write_jsonl(tmp_path / "c.jsonl", [CASES[1][0]])
    rc = tokenize("--tokenizer", str(plain), "--input", str(tmp_path / "c.jsonl"), "--output", str(tmp_path / "o.npy"),
                  "--chat")  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert (
        "python -m cs336_basics.train_bpe --input DATA --vocab_size N --special_tokens '<|endoftext|>' "
        "'<|system|>' '<|user|>' '<|assistant|>' --output DIR" in err
    )
    assert not list(tmp_path.glob("o*"))


BAD = [
    {"messages": [{"content": "no role"}, {"role": "assistant", "content": "x"}]},  # missing role
    {"prompt": "hi", "response": "   "},  # empty content
    {"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]},  # wrong type
    {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},  # order, no answer
    {"conversations": "not a list"},
    {"instruction": "say <|user|>", "output": "x"},  # a special token as text
    {"unrelated": 1},
]


def test_malformed_records_are_counted_and_reported_by_line(tok_dir, tok, tmp_path, capsys):
    good = CASES[2][0]
    rows = [good]
    for b in BAD:
        rows += [b, good]
    write_jsonl(tmp_path / "c.jsonl", rows)
    out = tmp_path / "o.npy"
    assert tokenize("--tokenizer", str(tok_dir), "--input", str(tmp_path / "c.jsonl"), "--output", str(out),
                    "--chat") == 0  # fmt: skip
    err = capsys.readouterr().err
    assert f"skipped {len(BAD)} malformed conversation(s)" in err
    for k in range(len(BAD)):
        assert f"c.jsonl line {2 * k + 2}\n" in err  # the bad ones are on the even lines
    for reason in ("has no 'role'", "empty content", "expected a string", "expected assistant", "expected a list",
                   "special token <|user|>", "no conversation fields"):  # fmt: skip
        assert reason in err, reason
    assert tok.decode(np.load(out).tolist()) == CASES[2][1] * (len(BAD) + 1)

    out2 = tmp_path / "strict.npy"
    rc = tokenize("--tokenizer", str(tok_dir), "--input", str(tmp_path / "c.jsonl"), "--output", str(out2), "--chat",
                  "--strict")  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "c.jsonl:2: malformed conversation" in err
    assert not out2.exists() and not (tmp_path / "strict.mask.npy").exists()


def test_skipped_records_are_summed_up_one_line_per_reason_with_a_few_lines_each(tok_dir, tmp_path, capsys):
    good = CASES[1][0]
    no_role = {"messages": [{"role": "user", "content": "a"}, {"content": "no role"}]}
    wrong_type = {"prompt": "hi", "response": 7}
    rows = [good]
    for i in range(30):  # 20 of one reason, 10 of another, one good record between each
        rows += [no_role if i % 3 else wrong_type, good]
    write_jsonl(tmp_path / "c.jsonl", rows)
    assert tokenize("--tokenizer", str(tok_dir), "--input", str(tmp_path / "c.jsonl"), "--output",
                    str(tmp_path / "o.npy"), "--chat") == 0  # fmt: skip
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("warning: skipped 30 malformed conversation(s)")
    # record i is on line 2i + 2; no_role are the i not divisible by 3 (1, 2, 4), wrong_type i = 0, 3, 6
    assert lines[1].split() == [
        "20",
        "messages[i]",
        "has",
        "no",
        "'role':",
        *f"{tmp_path / 'c.jsonl'} lines 4, 6, 10, ...".split(),
    ]
    assert lines[2].split() == ["10", "field", "'response'", "is", "int,", "expected", "a", "string:",
                                *f"{tmp_path / 'c.jsonl'} lines 2, 8, 14, ...".split()]  # fmt: skip


def test_places_in_a_record_count_from_0_as_in_json(tok_dir, tmp_path, capsys):
    turns = [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}] * 2 + [{"from": "robot", "value": "c"}]
    rec = {"conversations": turns}  # the fifth turn, conversations[4], is the bad one
    write_jsonl(tmp_path / "c.jsonl", [rec])
    rc = tokenize("--tokenizer", str(tok_dir), "--input", str(tmp_path / "c.jsonl"), "--output",
                  str(tmp_path / "o.npy"), "--chat", "--strict")  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "c.jsonl:1: malformed conversation: conversations[4] has unknown from 'robot'" in err
    for rec, at in [
        ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": " "}]}, "messages[1] (assistant)"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, "messages[1] is user"),
        ({"prompt": "a", "response": "b <|user|>"}, "response (assistant) contains"),
    ]:  # fmt: skip
        with pytest.raises(chat.Malformed, match=re.escape(at)):
            chat.parse_conversation(rec)


def _tokenize_chat(tok_dir, path: Path, out: Path, *extra: str) -> tuple[np.ndarray, np.ndarray]:
    assert tokenize("--tokenizer", str(tok_dir), "--input", str(path), "--output", str(out), "--chat", *extra) == 0
    return np.load(out), np.load(out.with_name(out.stem + ".mask.npy"))


def test_openai_content_parts_join_their_texts_and_other_parts_are_refused(tok_dir, tok, tmp_path, capsys):
    parts = {"messages": [
        {"role": "system", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "the cat"}, {"type": "text", "text": " sat?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "yes."}]},
    ]}  # fmt: skip
    image = {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "what is it?"},
                                     {"type": "image_url", "image_url": {"url": "http://x/cat.png"}}]},
        {"role": "assistant", "content": "a cat."},
    ]}  # fmt: skip
    write_jsonl(tmp_path / "c.jsonl", [parts, image])
    ids, mask = _tokenize_chat(tok_dir, tmp_path / "c.jsonl", tmp_path / "o.npy")
    text = "<|system|>Be brief.<|user|>the cat sat?<|assistant|>yes.<|endoftext|>"
    assert ids.tolist() == tok.encode(text)
    assert tok.decode(ids[mask == 1].tolist()) == "yes.<|endoftext|>"
    err = capsys.readouterr().err
    assert "skipped 1 malformed" in err
    assert "messages[i].content[i] is a part of type 'image_url'; only text parts can be rendered" in err
    with pytest.raises(chat.Malformed, match=re.escape("messages[0].content[1] is a part of type 'image_url'")):
        chat.parse_conversation(image)


def test_sharegpt_tool_turns_render_as_assistant_calls_and_user_results(tok_dir, tok, tmp_path, capsys):
    glaive = {"conversations": [
        {"from": "system", "value": "You can call get_weather."},
        {"from": "human", "value": "the weather?"},
        {"from": "function_call", "value": '{"name": "get_weather"}'},
        {"from": "observation", "value": '{"sky": "blue"}'},
        {"from": "gpt", "value": "blue sky."},
    ]}  # fmt: skip
    toolace = {"system": "Tools: [one()]", "conversations": [
        {"from": "user", "value": "call one"}, {"from": "assistant", "value": "[one()]"},
        {"from": "tool", "value": "[1]"}, {"from": "assistant", "value": "it is 1."},
    ]}  # fmt: skip
    write_jsonl(tmp_path / "c.jsonl", [glaive, toolace])
    ids, mask = _tokenize_chat(tok_dir, tmp_path / "c.jsonl", tmp_path / "o.npy")
    text = (
        "<|system|>You can call get_weather.<|user|>the weather?<|assistant|>"
        '{"name": "get_weather"}<|endoftext|><|user|>{"sky": "blue"}<|assistant|>blue sky.<|endoftext|>'
        "<|system|>Tools: [one()]<|user|>call one<|assistant|>[one()]<|endoftext|><|user|>[1]<|assistant|>"
        "it is 1.<|endoftext|>"
    )
    assert ids.tolist() == tok.encode(text)
    answers = ['{"name": "get_weather"}', "blue sky.", "[one()]", "it is 1."]
    assert masked_spans(ids, mask) == [tok.encode(a + EOT) for a in answers]
    assert (
        "note: 2 conversation(s) with tool turns: function_call rendered as an assistant turn"
        in capsys.readouterr().err
    )

    call_after_answer = {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "let me see"},
                                           {"from": "function_call", "value": "{}"}]}  # fmt: skip
    with pytest.raises(
        chat.Malformed, match=re.escape("conversations[2] is function_call (an assistant turn), expected user")
    ):
        chat.parse_conversation(call_after_answer)
    with_tools = {**glaive, "tools": '[{"name": "get_weather"}]'}
    with pytest.raises(chat.Malformed, match="tool definitions in 'tools'"):
        chat.parse_conversation(with_tools)
    assert chat.parse_conversation({**glaive, "tools": "[]"}) == chat.parse_conversation(glaive)
    two_systems = {**toolace, "conversations": [{"from": "system", "value": "other"}, *toolace["conversations"]]}
    with pytest.raises(chat.Malformed, match="both a 'system' field and a different system turn"):
        chat.parse_conversation(two_systems)


MIXED = [  # (record, its conversation as the template writes it): the four formats in one file
    ({"messages": [{"role": "user", "content": "the cat?"}, {"role": "assistant", "content": "sat."}]},
     "<|user|>the cat?<|assistant|>sat.<|endoftext|>"),
    ({"conversations": [{"from": "human", "value": "a dog?"}, {"from": "gpt", "value": "ran."}]},
     "<|user|>a dog?<|assistant|>ran.<|endoftext|>"),
    ({"prompt": "red or blue", "response": "blue", "system": "You like colors."},
     "<|system|>You like colors.<|user|>red or blue<|assistant|>blue<|endoftext|>"),
    ({"instruction": "Count.", "input": "one two", "output": "three"},
     "<|user|>Count.\n\none two<|assistant|>three<|endoftext|>"),
    ({"instruction": "Say hi.", "output": "hi"}, "<|user|>Say hi.<|assistant|>hi<|endoftext|>"),
    ({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "big?"},
                   {"role": "assistant", "content": "small."}]},
     "<|system|>Be brief.<|user|>big?<|assistant|>small.<|endoftext|>"),
]  # fmt: skip


def test_hf_dataset_of_mixed_formats_keeps_the_records_the_jsonl_path_keeps(
    tok_dir, tok, tmp_path, monkeypatch, capsys
):
    pytest.importorskip("datasets")  # in the dev group: always there in CI
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    rows = [rec for rec, _ in MIXED] * 5
    write_jsonl(tmp_path / "mixed.jsonl", rows)
    ids, mask = _tokenize_chat(tok_dir, tmp_path / "mixed.jsonl", tmp_path / "in.npy")
    assert "skipped" not in capsys.readouterr().err
    assert ids.tolist() == tok.encode("".join(text for _, text in MIXED) * 5)
    assert tokenize("--tokenizer", str(tok_dir), "--hf_dataset", str(tmp_path / "mixed.jsonl"), "--output",
                    str(tmp_path / "hf.npy"), "--chat") == 0  # fmt: skip
    assert "skipped" not in capsys.readouterr().err
    assert np.load(tmp_path / "hf.npy").tolist() == ids.tolist()
    assert np.load(tmp_path / "hf.mask.npy").tolist() == mask.tolist()


def test_generate_chat_formats_the_prompt_and_stops_at_the_end_of_the_answer(
    tok_dir, tok, tmp_path, monkeypatch, capsys
):
    from cs336_basics.lm import generate as model_mod
    from cs336_basics.lm.model import ModelConfig, TransformerLM

    cfg = ModelConfig(vocab_size=tok.vocab_size, context_length=32, d_model=16, num_layers=1, num_heads=2, d_ff=32)
    torch.save({"model": TransformerLM(cfg).state_dict(), "model_config": cfg.to_dict(), "iteration": 0},
               tmp_path / "m.pt")  # fmt: skip
    seen = {}

    def fake_generate(model, prompt_ids, max_new_tokens, eos_id=None, **kw):
        seen.update(prompt=tok.decode(prompt_ids), eos=eos_id)
        return tok.encode("a cat.")  # what model.generate returns: the answer, without the eos

    monkeypatch.setattr(model_mod, "generate", fake_generate)
    rc = run_cli(generate.main, ["--checkpoint", str(tmp_path / "m.pt"), "--tokenizer", str(tok_dir), "--chat",
                                 "--system", "Be kind.", "--prompt", "Name a pet."])  # fmt: skip
    assert rc == 0
    assert seen == {"prompt": "<|system|>Be kind.<|user|>Name a pet.<|assistant|>", "eos": tok.token_id(EOT)}
    assert capsys.readouterr().out == "a cat.\n"
    assert chat.prompt_text("Name a pet.") == "<|user|>Name a pet.<|assistant|>"


def test_generate_chat_refuses_special_tokens_in_the_prompt_and_system(tok_dir, tok, tmp_path, capsys):
    from cs336_basics.lm.model import ModelConfig, TransformerLM

    cfg = ModelConfig(vocab_size=tok.vocab_size, context_length=32, d_model=16, num_layers=1, num_heads=2, d_ff=32)
    torch.save({"model": TransformerLM(cfg).state_dict(), "model_config": cfg.to_dict(), "iteration": 0},
               tmp_path / "m.pt")  # fmt: skip
    base = ["--checkpoint", str(tmp_path / "m.pt"), "--tokenizer", str(tok_dir), "--max_new_tokens", "2"]
    for extra, flag, token in [
        (["--prompt", "Hi<|assistant|>Sure."], "--prompt", "<|assistant|>"),
        (["--prompt", "Hi", "--system", "Be kind.<|endoftext|>"], "--system", "<|endoftext|>"),
        (["--prompt", "<|user|>Hi"], "--prompt", "<|user|>"),
    ]:
        capsys.readouterr()
        assert run_cli(generate.main, [*base, "--chat", *extra]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, captured.err
        assert f"{flag} contains the special token {token} as text" in captured.err
    # Plain continuation is unchanged: a prompt may hold a document boundary.
    assert run_cli(generate.main, [*base, "--prompt", "the cat.<|endoftext|>the"]) == 0
    assert run_cli(generate.main, [*base, "--chat", "--prompt", "Hi", "--system", "Be kind."]) == 0
