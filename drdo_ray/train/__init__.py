"""Training: one per-worker loop for every stage and loss (loop.py), the engine it runs on
(DeepSpeed or plain torch/DDP, engine.py), checkpoints (checkpoint.py), and the Ray Train
assembly (ray_trainer.py). loop.py imports no Ray: it is callable directly."""
