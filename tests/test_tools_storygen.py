"""The synthetic story corpus: deterministic per seed, varied, TinyStories-shaped."""

import re

from cs336_basics.quickstart.storygen import EOT, generate_corpus, iter_stories, write_corpus


def test_same_seed_same_text_and_different_seed_differs():
    a = generate_corpus(50, seed=3)
    assert a == generate_corpus(50, seed=3)
    assert a != generate_corpus(50, seed=4)


def test_separators_and_layout():
    text = generate_corpus(20, seed=0)
    docs = text.split(EOT)
    assert len(docs) == 21 and docs[-1] == "\n"
    assert text.endswith(f"\n{EOT}\n")
    for d in docs[:-1]:
        story = d.strip("\n")
        assert story and EOT not in story
        assert story[0].isupper() and story[-1] in '.!"'


def test_variety_dialogue_and_plot_words():
    text = generate_corpus(400, seed=1)
    body = text.replace(EOT, " ")
    sentences = set(re.split(r'(?<=[.!?"])\s+', body))
    words = set(re.findall(r"[A-Za-z']+", body))
    assert len(sentences) > 2000
    assert len(words) > 400
    assert body.count('"') >= 400 and body.count('"') % 2 == 0  # dialogue, balanced quotes
    starts = {s.split(",")[0] for s in iter_stories(400, seed=1)}
    assert len(starts) > 50  # openings vary
    for w in ("Once upon a time", "learned", "friend", "happy"):
        assert w in body
    assert text.isascii()


def test_write_corpus(tmp_path):
    p = tmp_path / "sub" / "stories.txt"
    n = write_corpus(p, 30, seed=7)
    assert p.read_bytes() == generate_corpus(30, seed=7).encode()
    assert n == p.stat().st_size
