"""Ray Serve OpenAI-compatible generation app and its engines (vLLM on GPU, transformers on CPU)."""
