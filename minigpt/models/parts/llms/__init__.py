"""LLM parts: a transformers causal LM, its tokenizer, LoRA and the freezing policy."""
