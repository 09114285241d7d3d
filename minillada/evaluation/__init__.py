"""Measuring models: the autoregressive twin and its exact likelihood (``autoregressive``),
multiple choice by likelihood (``multiple_choice``), the reversal experiment (``reversal``), and
cheap quality measures for character samples (``char_quality``)."""
