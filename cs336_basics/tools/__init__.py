"""Companion tools: quick experiments, sweeps, an LR finder, accounting, tokenizer stats, plots, export."""
