"""Text generation engines (vLLM, transformers) behind one interface; used by serving and by
sampling for evaluation alike."""
