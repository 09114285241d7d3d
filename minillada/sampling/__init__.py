"""The reverse process: the pieces every sampler is made of (``primitives``), the
confidence scores that pick what to reveal (``remasking``), one denoising loop with LLaDA's
``generate``, ``infill`` and lesson 1's ``sample`` (``generate``), and recorded traces with
their plots (``traces``)."""
