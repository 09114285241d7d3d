"""Measuring models: the autoregressive twin and its exact likelihood (``autoregressive``),
multiple choice by likelihood (``multiple_choice``), the reversal experiment (``reversal``), cheap
quality measures for character samples (``char_quality``), lesson 6's instructions
(``instructions``), and lesson 7's benchmarks: GSM8K (``gsm8k``), HellaSwag (``hellaswag``), both
run on a loaded model (``benchmarks``) beside the papers' numbers (``paper``), spread over the
processes of torchrun (``parallel``), and fingerprints of a model's logits (``reproduction``)."""
