"""The published numbers lesson 7 compares against, each with the setting that produced it.

A benchmark number means little without its setting (shots, prompt, sampler, scoring rule), so
each entry carries it, and where it comes from: [V] the model card or the paper's abstract, [F]
the authors' published evaluation scripts, [U] a secondary source not checked against the paper
(see ../shared/docs/illada-spec.md §7 and llada-spec.md §7 in the project's design notes).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperResult:
    model: str  # released model name, e.g. "iLLaDA-8B-Instruct"
    task: str  # "gsm8k", "hellaswag_confidence", "hellaswag_mc"
    value: float  # percent
    setting: str
    source: str

    def line(self) -> str:
        return f"{self.value:.1f}% ({self.setting}; {self.source})"


PAPER_RESULTS: tuple[PaperResult, ...] = (
    PaperResult(
        "iLLaDA-8B-Instruct",
        "gsm8k",
        89.0,
        "0-shot, chat template, the authors' prompt, answer after the last </think>, variable "
        "length budget 2048, blocks of 32, 32 steps per block, end-of-thinking boost 100 power 3",
        "iLLaDA paper, Instruct table [U]; settings from eval_illada.sh [F]",
    ),
    PaperResult(
        "iLLaDA-8B-Base",
        "gsm8k",
        81.9,
        "8-shot (lm-eval gsm8k_cot), variable length budget 1024, blocks of 32, 32 steps per block",
        "iLLaDA-8B-Base model card [V]; settings [F]",
    ),
    PaperResult(
        "iLLaDA-8B-Base",
        "hellaswag_confidence",
        76.6,
        "0-shot, confidence-based scoring, padd_eos, BOS",
        "iLLaDA-8B-Base model card [V]; settings [F]",
    ),
    PaperResult(
        "iLLaDA-8B-Base",
        "hellaswag_mc",
        74.3,
        "0-shot, Monte Carlo likelihood (the ablation against confidence scoring)",
        "iLLaDA paper's ablation [U]",
    ),
    PaperResult(
        "LLaDA-8B-Base",
        "gsm8k",
        70.3,
        "lm-eval gsm8k, fixed canvas gen_length = steps = block_length = 1024",
        "LLaDA's EVAL.md [V]",
    ),
    PaperResult(
        "LLaDA-8B-Base",
        "hellaswag_mc",
        70.5,
        "0-shot, Monte Carlo likelihood with 128 samples, no guidance",
        "LLaDA's EVAL.md [V]",
    ),
    PaperResult(
        "LLaDA-8B-Instruct",
        "gsm8k",
        69.4,
        "0-shot chat (OpenCompass), fixed canvas gen_length = block_length = steps = 512",
        "LLaDA's EVAL.md [V]",
    ),
)


def paper_result(model: str, task: str) -> PaperResult | None:
    """The published number for ``model`` on ``task``, or None when none is published."""
    for result in PAPER_RESULTS:
        if result.model == model and result.task == task:
            return result
    return None
