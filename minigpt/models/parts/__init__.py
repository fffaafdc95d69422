"""The registered parts a model is composed of: vision encoders, projectors, LLMs (and the shipped tokenizer)."""
