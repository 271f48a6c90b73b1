# Interpreter (float32) check of the MMA prototype against torch: B given as float32 (the bf16 hi/lo
# values, exact in float32), so the only difference is the taps' split error (~2^-17 relative).
import os, sys, torch, torch.nn.functional as F
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mma_prototype as m
torch.manual_seed(0)
for (B, H, W, C) in [(3, 9, 9, 8), (2, 18, 18, 4), (9, 6, 7, 4)]:
    x = torch.randn(B, H, W, C); w = torch.randn(C, 1, 5, 5) * 0.3
    scale = torch.rand(C) + 0.5; shift = torch.randn(C) * 0.1
    Bm = m.toeplitz(w, 4, 4, 2).float()
    y = torch.empty_like(x); sums = torch.zeros(B, C)
    grid = (C // 4, -(-B // 8), 1)
    m._dw5_mma_kernel[grid](x, Bm, scale, shift, y, sums, H=H, W=W, C=C, K=5, PAD=2, RUN=4, CB=4, SLOTS=32,
                            SPLIT=2, IMG_T=8, FAST_SILU=False, B_TOTAL=B)
    z = F.conv2d(x.permute(0, 3, 1, 2).double(), w.double(), padding=2, groups=C) * scale.double()[:, None, None] + shift.double()[:, None, None]
    ref = F.silu(z).permute(0, 2, 3, 1)
    print((B, H, W, C), "max |y - ref|", (y.double() - ref).abs().max().item(),
          "max |sums - ref|", (sums.double() - ref.sum((1, 2))).abs().max().item())
