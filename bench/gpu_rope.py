"""Lesson 1's fast RoPE path on CUDA.

Results: bench/gpu_check.md, section "Rerun after the fast RoPE path and fused AdamW".

    OUT=/some/folder PYTHONPATH=. python bench/gpu_rope.py   # writes $OUT/gpu_rope.json

Same weights in both paths: logits and gradients of fast_rope=True against fast_rope=False in fp32
and under bf16 autocast; then training tokens/s of lesson 1's model (batch 32 x 128, the library's
optimizer) with each path, 200 steps after 20 warm-up steps.
"""

import json
import os
import time

import torch

from minillada.diffusion.objectives import diffusion_loss
from minillada.models.tiny_transformer import TinyTransformer, TinyTransformerConfig
from minillada.training.loop import TrainConfig, make_optimizer

dev = torch.device("cuda")
res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
for dtype in [torch.float32, torch.bfloat16]:
    torch.manual_seed(0)
    fast = TinyTransformer(TinyTransformerConfig()).to(dev)
    slow = TinyTransformer(TinyTransformerConfig(fast_rope=False)).to(dev)
    slow.load_state_dict(fast.state_dict())
    x = torch.randint(0, 66, (8, 128), device=dev)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        a, b = fast(x), slow(x)
    a.float().square().mean().backward()
    b.float().square().mean().backward()
    gd = max(
        (p.grad - q.grad).abs().max().item()
        for p, q in zip(fast.parameters(), slow.parameters(), strict=True)
    )
    res[str(dtype)] = {
        "max_logit_diff": (a.float() - b.float()).abs().max().item(),
        "max_grad_diff": gd,
        "logit_std": a.float().std().item(),
    }
ids = torch.randint(0, 65, (32, 128), device=dev)
for fr in [True, False]:
    torch.manual_seed(0)
    m = TinyTransformer(TinyTransformerConfig(fast_rope=fr)).to(dev)
    opt = make_optimizer(m, TrainConfig())
    res.setdefault("optimizer_fused", opt.defaults.get("fused"))

    def step(m=m, opt=opt):
        loss = diffusion_loss(m, ids, 65)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()

    for _ in range(20):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(200):
        step()
    torch.cuda.synchronize()
    res[f"train_tok_per_s_fast_rope_{fr}"] = 200 * 32 * 128 / (time.perf_counter() - t0)
print(json.dumps(res, indent=1))
with open(os.path.join(os.environ["OUT"], "gpu_rope.json"), "w") as f:
    json.dump(res, f, indent=1)
