"""Ray Serve OpenAI-compatible generation app (its engines live in drdo_ray.generation)."""
