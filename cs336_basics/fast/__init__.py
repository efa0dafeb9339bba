"""Fast twins of the textbook's pieces: the same function (tests tie each to the textbook's), computed faster.

``attention`` (fused QKV, blocked causal attention with a recomputing backward) and
``triton_attention`` (a fused FlashAttention-2 kernel for CUDA), ``layers`` (an embedding with a
deterministic backward), ``nn_utils`` (multi-tensor, sync-free gradient clipping; a masked loss),
``optim`` (multi-tensor AdamW whose step can be skipped on the device; parameter groups), ``bpe``
(parallel BPE training with incremental pair counts), ``tokenizer`` and ``pretokenize`` (a cached,
parallel encoder with files).
"""
