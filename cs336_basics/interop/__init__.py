"""Models and tokenizers to and from other formats: safetensors (written and read here), the Hugging Face
Llama layout, and Hugging Face tokenizer.json. The command is ``python -m cs336_basics.tools.export``."""
