"""The reverse process: the pieces every sampler is made of (``primitives``), the
confidence scores that pick what to reveal (``remasking``), one denoising loop with LLaDA's
``generate``, ``infill``, lesson 1's ``sample`` and iLLaDA's ``var_generate`` (``generate``),
recorded traces with their plots (``traces``), one answer with the papers' settings and its costs
(``answer``), and a multi-turn chat (``chat``)."""
