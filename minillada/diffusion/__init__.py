"""The maths of masked diffusion as pure functions: the forward (masking) process
(``masking``), the training objective (``objectives``), calling a denoiser with classifier-free
guidance (``guidance``), and the likelihood bounds (``likelihood``)."""
