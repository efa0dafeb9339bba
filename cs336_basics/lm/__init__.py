"""The engine's language model: ``ModelConfig`` and a ``TransformerLM`` with every option (``model``), the
engine's attention with a KV cache (``attention``), and sampling (``generate``). At the same settings
it is the textbook's ``cs336_basics.model`` (``tests/test_model_twins.py``)."""
