"""cs336_basics: a from-scratch language-model stack, in two tiers.

The textbook (this folder's modules, in reading order; each is the handout's piece as the handout
writes it, and they import only torch, numpy, regex, einops, jaxtyping and each other):

1. ``pretokenize``, ``bpe``, ``tokenizer``: byte-level BPE, trained and applied;
2. ``layers``: Linear, Embedding, RMSNorm, SwiGLU, RoPE, softmax, attention;
3. ``model``: the Transformer LM, its ablations, and decoding;
4. ``nn_utils``, ``optim``: cross-entropy, gradient clipping, AdamW, the cosine schedule;
5. ``data``, ``checkpoint``: batches of token ids, save and load;
6. ``train``: a plain training loop (``python -m cs336_basics.train``).

The course's programs are thin entry points here too: ``training_together`` (the engine's training
program), ``train_bpe``, ``tokenize_data``, ``generate``, ``quickstart``. The engine lives in the
subpackages: ``fast`` (twins of the textbook's pieces, same function, faster), ``lm`` (the engine's
configurable model and generation), ``training`` (the training program's parts), ``corpus`` (data in),
``interop`` (models out), ``extensions`` (Muon, the leaderboard recipe, MoE, diffusion, schedules),
``tools`` (companions), ``utils``.
"""
