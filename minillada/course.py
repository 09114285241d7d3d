"""The course map: every lesson, what it builds and how long it takes, in one place.

The README's lesson table and lesson 0's course map are both written from ``LESSONS`` by
``python tools/course_map.py`` (and ``tests/test_course_map.py`` checks that they are), so their
minutes cannot drift apart. Minutes are measured with ``tools/run_notebooks.py`` under
``ATEN_CPU_CAPABILITY=avx2`` on the 2-core machine of ``bench/README.md``: the full-mode run of the
lesson (its stored outputs) and of quick mode (``MINILLADA_QUICK=1``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Lesson:
    number: int
    notebook: str  # file name in notebooks/, without .ipynb
    builds: str  # the README's description
    summary: str  # lesson 0's shorter one
    minutes: str  # "full / quick" on a 2-core CPU


LESSONS: tuple[Lesson, ...] = (
    Lesson(
        0,
        "00_setup",
        "environment check, how lessons, exercises and quick mode work, three warm-up exercises",
        "this check and three warm-ups",
        "< 1 / < 1",
    ),
    Lesson(
        1,
        "01_char_masked_diffusion",
        (
            "char data with a mask token, the masking process, the 1/t-weighted loss (an ELBO), a"
            " bidirectional transformer with RoPE (you write its attention and assemble the "
            "model), training, a validation bound in bits/char, checkpoints, a first unmasking "
            "sampler (yours)"
        ),
        (
            "char data with a mask token, the masking process, the 1/t-weighted loss, a "
            "bidirectional transformer, training, checkpoints, a first sampler"
        ),
        "6.6 / 0.5",
    ),
    Lesson(
        2,
        "02_sampling",
        (
            "LLaDA's sampler exactly: semi-autoregressive blocks, remasking strategies "
            "(confidence, margin, entropy, random), temperature in float64, why float32 noise cuts "
            "the sampling tail, classifier-free "
            "guidance, traces, infilling, quality against steps"
        ),
        "LLaDA's sampler exactly: blocks, remasking strategies, guidance, traces",
        "0.9 / < 1",
    ),
    Lesson(
        3,
        "03_likelihood_and_autoregression",
        (
            "the t- and ℓ-estimators, multiple choice by likelihood, an autoregressive twin at "
            "matched compute, a reversal task where diffusion wins, generative perplexity"
        ),
        "likelihood estimators, an autoregressive twin, where diffusion wins",
        "2.8 / < 1",
    ),
    Lesson(
        4,
        "04_subwords_and_llada_blocks",
        (
            "BPE from scratch and with `tokenizers`, RMSNorm, RoPE at LLaDA's base, attention "
            "with grouped-query heads and SwiGLU written by hand, the LLaDA block, a subword "
            "model with WSD, crop, accumulation, resume, `torchrun`"
        ),
        "BPE, RMSNorm, GQA attention and SwiGLU by hand, the LLaDA block, a subword model",
        "2.0 / < 1",
    ),
    Lesson(
        5,
        "05_the_8b_architecture",
        (
            "LLaDA-8B and iLLaDA-8B on paper and on disk: config.json, exact parameter and memory"
            " counts, the meta device, safetensors shards and index, grouped-query attention, the"
            " tied head, keys and values per token, both snapshot layouts, the tokenizers (mask "
            "id 5) and chat templates"
        ),
        (
            "LLaDA-8B and iLLaDA-8B on paper and on disk: configs, counts, GQA, the tied head, "
            "both checkpoint formats, the tokenizers"
        ),
        "< 1 / < 1",
    ),
    Lesson(
        6,
        "06_instruction_tuning",
        (
            "an instruction data set made from the play, LLaDA's SFT (EOS padding, the prompt "
            "never masked, per-answer normalisation; you write one fine-tuning step) against "
            "iLLaDA's variable-length SFT (packed"
            " examples, one EOS), variable-length generation, forward passes per answer, a chat"
        ),
        (
            "supervised fine-tuning, LLaDA's way and iLLaDA's variable-length way, "
            "variable-length generation, chat"
        ),
        "2.2 / < 1",
    ),
    Lesson(
        7,
        "07_released_weights",
        (
            "the released iLLaDA-8B and LLaDA-8B: downloading and checking a snapshot, bf16 "
            "loading from the shards, a fingerprint of the logits, variable-length sampling with "
            "the authors' settings and the end-of-thinking boost, chat, tokens/s and work per "
            "forward pass against LLaDA's fixed canvas, GSM8K (Instruct 0-shot, Base few-shot) "
            "and HellaSwag (confidence scoring against the Monte Carlo likelihood) beside the "
            "papers' numbers, the confidence score against the Monte Carlo likelihood at equal "
            "cost (an experiment), data-parallel evaluation under `torchrun` with a per-process "
            "resume file that survives a crash (which you write). Runs on a GPU with the "
            "downloaded weights, or anywhere on stand-ins in the released layouts"
        ),
        (
            "the released iLLaDA-8B and LLaDA-8B (or stand-ins in their layouts): loading, "
            "sampling, chat, GSM8K and HellaSwag beside the papers, torchrun"
        ),
        "1.2 / < 1 (stand-ins)",
    ),
    Lesson(
        8,
        "08_fast_sampling",
        (
            "why a bidirectional model has no exact KV cache (measured per layer), Fast-dLLM's "
            "prefix and dual caches (you write the cached sampler loop, with its refresh), "
            "grouped-query attention's 4x smaller cache, threshold "
            "decoding, the measured trade-off on lesson 6's model (passes, seconds, accuracy with"
            " intervals), the same switches on the 8B models or their stand-ins"
        ),
        "approximate caches and threshold decoding, measured against quality",
        "0.6 / 0.2",
    ),
    Lesson(
        9,
        "09_reinforcement_learning",
        (
            "RL with verifiable rewards for a diffusion LM: group advantages (yours, with the "
            "groups that carry no signal counted), d1's one-step log-probability (yours) and a "
            "sequence ELBO with their noise measured on shared and independent masks, a replay of "
            "the sampler's own steps, the clipped loss with a KL (yours), GRPO and wd1 on lesson "
            "6's model against more SFT with paired tests, the headroom by rollout temperature, "
            "a setting that beats the start on three seeds (and why more SFT for the same time, "
            "on three seeds, still matches it), RL after more SFT, rollouts with the "
            "variable-length sampler scored block by block, a setting chosen on development items "
            "whose model beats both the start and more SFT for the same time on that sampler "
            "(tests fixed before their runs), a paired bootstrap over seeds, LoRA from scratch"
        ),
        "RL with verifiable rewards: the ratio problem, GRPO and wd1, measured",
        "3.3 / 0.6",
    ),
)


def readme_table() -> str:
    """The README's lesson table."""
    rows = [
        "| lesson | notebook | what you build | CPU minutes, full / quick |",
        "|---|---|---|---|",
    ]
    for lesson in LESSONS:
        link = f"[`{lesson.notebook}`](notebooks/{lesson.notebook}.ipynb)"
        rows.append(f"| {lesson.number} | {link} | {lesson.builds} | {lesson.minutes} |")
    return "\n".join(rows)


def lesson0_table() -> str:
    """Lesson 0's course map."""
    rows = [
        "| lesson | notebook | what you build | CPU minutes (full / quick) |",
        "|---|---|---|---|",
    ]
    for lesson in LESSONS:
        rows.append(
            f"| {lesson.number} | `{lesson.notebook}.ipynb` | {lesson.summary} | {lesson.minutes} |"
        )
    return "\n".join(rows)
