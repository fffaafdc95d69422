"""DreamLLM: learned dream queries and a diffusion head on the multimodal LLM (docs/dream.md)."""
