"""Settings of the `drdo-ray bench serve|generate|train` commands (the quality benchmark's are in
quality_config.py). Benchmarks own their configs: the stage configs in drdo_ray/config.py do not
know them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from ..config import StageConfig


class BenchServeConfig(StageConfig):
    """`drdo-ray bench serve`: a load table of the app, one cell per engine x mode x concurrency,
    ``requests`` each; ratios to the first engine's first mode at the same concurrency."""

    model: str | None = Field(None, description="model folder; default: a tiny random model built on the fly")
    out: str = Field("bench_serve", description="output folder for bench_serve.json")
    requests: int = Field(64, gt=0, description="requests per cell")
    concurrency: list[int] = Field(
        default_factory=lambda: [1, 16, 64], description="requests in flight, one cell each"
    )
    max_tokens: int = Field(32, gt=0, description="tokens generated per request")
    max_batch_size: int = Field(16, gt=0, description="@serve.batch size")
    batch_wait_timeout_s: float = Field(0.02, ge=0)
    port: int = Field(0, ge=0, le=65535, description="0: a free port")
    backend: list[Literal["auto", "vllm", "transformers"]] = Field(
        default_factory=lambda: ["transformers", "vllm"],
        description="engines, one deployment each; the first is the baseline; "
        "vllm where it cannot run is skipped with the reason",
    )
    modes: list[Literal["batched", "sequential"]] = Field(
        default_factory=lambda: ["batched"],
        description="batched: @serve.batch of max_batch_size; sequential: one request at a time",
    )
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="extra vLLM engine arguments")

    @field_validator("concurrency", "backend", "modes", mode="before")
    @classmethod
    def _one_is_a_list(cls, value: Any) -> Any:
        """``concurrency: 64`` or ``backend: vllm`` (the settings before they were lists) still work,
        as does ``--set concurrency=1,16``."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return [value] if isinstance(value, int) else value

    @field_validator("concurrency")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if not value or min(value) < 1:
            raise ValueError(f"concurrency needs values >= 1, got {value}")
        return value


class BenchGenerateConfig(StageConfig):
    """`drdo-ray bench generate`: tokens/s of the engines (vLLM, the transformers engine) and of
    plain Hugging Face ``generate`` on the same prompts in the same run, ratios to ``generate``."""

    model: str | None = Field(
        None, description="model folder; default: a tiny random model (head size 32) built on the fly"
    )
    out: str = Field("bench_generate", description="output folder for bench_generate.json")
    prompts: int = Field(64, gt=0, description="prompts, generated as one batch")
    max_tokens: int = Field(64, gt=0, description="new tokens per prompt (EOS ignored)")
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(0.8, gt=0, le=1)
    repeats: int = Field(3, gt=0, description="interleaved repetitions; the median counts")
    engines: list[Literal["hf_generate", "transformers", "vllm"]] = Field(
        default_factory=lambda: ["hf_generate", "transformers", "vllm"]
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=lambda: {"enforce_eager": True}, description="extra vLLM engine arguments"
    )


class BenchTrainConfig(StageConfig):
    """`drdo-ray bench train`: step time, tokens/s, memory (and MFU on GPU) of the one training
    loop per method, with ratios to DRDO measured in the same run."""

    model: str | None = Field(None, description="model folder; default: --shape, else the tiny random model")
    shape: Literal["opt-125m", "opt-350m", "opt-1.3b", "opt-2.7b"] | None = Field(
        None, description="random-init model of this shape (no download)"
    )
    seq_len: int | None = Field(
        None,
        gt=1,
        description="synthetic rows of exactly this many tokens per sequence; "
        "default: the shipped Ultrafeedback rows",
    )
    out: str = Field("bench_train", description="output folder for bench_train.json")
    pairs: int = Field(8, gt=0, description="pairs per optimizer step")
    steps: int = Field(12, gt=0, description="timed steps per repetition (after warmup)")
    warmup: int = Field(3, ge=0)
    repeats: int = Field(3, gt=0, description="interleaved repetitions of every method")
    methods: list[Literal["drdo", "dpo", "dpo_live_ref", "edpo", "sft"]] = Field(
        default_factory=lambda: ["drdo", "dpo", "dpo_live_ref", "edpo", "sft"]
    )
    engines: list[Literal["torch", "deepspeed"]] = Field(
        default_factory=lambda: ["torch"],
        description="the first is the baseline; others add method+engine rows",
    )
    zero_stage: Literal[0, 1, 2, 3] = 2
    bf16: bool | None = Field(None, description="default: on with a GPU")
    logps_chunk_sizes: list[int] = Field(
        default_factory=list, description="add drdo+chunkN rows (chunked vocabulary log-probs)"
    )
    term_grads: list[Literal["hidden", "params"]] = Field(
        default_factory=lambda: ["hidden", "params"],
        description="add drdo+term_grads_<wrt> rows: DRDO with its per-term gradient diagnostics on every "
        "step (training's default is hidden at every logged step)",
    )
    lora_ranks: list[int] = Field(
        default_factory=lambda: [16],
        description="add drdo+lora<r> rows: DRDO training LoRA adapters of rank r (alpha 2r) instead of "
        "every weight, against the drdo row's full fine-tuning (needs peft)",
    )
    ray_overhead: bool = Field(True, description="also DRDO under Ray Train, 1 worker (needs Ray)")
    trl: bool = Field(True, description="also TRL's DPOTrainer on the same rows, when trl is installed")
    peak_tflops: float | None = Field(None, gt=0, description="device bf16 peak for MFU; default: known GPUs")
    threads: int = Field(1, gt=0, description="torch CPU threads")


class BenchTablesConfig(StageConfig):
    """`drdo-ray bench tables`: the Markdown tables of every committed benchmark JSON."""

    folder: str = Field("benchmarks", description="folder of the benchmark JSON files (and their figures)")
    readme: str = Field("benchmarks/README.md", description="tables with the figures, beside the JSON")
    docs: str | None = Field("docs/benchmarks.md", description="the documentation's page (tables only)")
    check: bool = Field(False, description="write nothing; fail when a file differs from what the JSON gives")


class BenchOnlineConfig(StageConfig):
    """`drdo-ray bench online`: the wall time of a pipeline's online rounds with ``overlap``
    false (the baseline) and true, from the same start (its offline stages run once), in one run."""

    pipeline: str = Field(
        "demo-online-tiny-cpu",
        description="pipeline config with an online section (a path or a shipped name)",
    )
    pipeline_set: list[str] = Field(
        default_factory=list, description="KEY=VALUE overrides of the pipeline config (as its --set)"
    )
    out: str = Field("bench_online", description="output folder: the runs and bench_online.json")
