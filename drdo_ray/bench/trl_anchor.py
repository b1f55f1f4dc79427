"""A peer anchor: TRL's DPOTrainer on the same model and the same rows (it tokenizes them
itself with the chat template), timed per optimizer step by a callback. TRL is not a
dependency: `bench train` runs this only when it is installed."""

from __future__ import annotations

import time
from typing import Any

import torch

from . import train_inputs as inputs
from .configs import BenchTrainConfig


def trl_dpo_step_times(
    model: str, rows: list[dict[str, str]], cfg: BenchTrainConfig, steps: int, *, precompute: bool
) -> list[float]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            self.times.append(time.perf_counter() - self.start)

    data = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "chosen": [{"role": "assistant", "content": r["chosen"]}],
                "rejected": [{"role": "assistant", "content": r["rejected"]}],
            }
            for r in rows
        ]
    )
    gpu = torch.cuda.is_available()
    args = DPOConfig(
        output_dir=str(inputs.temp_dir("trl")),
        per_device_train_batch_size=cfg.pairs,
        max_steps=steps,
        learning_rate=1e-5,
        beta=0.1,
        precompute_ref_log_probs=precompute,
        logging_steps=10**6,
        save_strategy="no",
        report_to="none",
        use_cpu=not gpu,
        bf16=gpu if cfg.bf16 is None else cfg.bf16,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
        max_length=None,
    )
    timer = StepTimer()
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32),
        args=args,
        train_dataset=data,
        processing_class=AutoTokenizer.from_pretrained(model),
        callbacks=[timer],
    )
    trainer.train()
    return timer.times
