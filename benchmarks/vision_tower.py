"""One align-base image (289x289) through the NumPy vision tower vs transformers on torch CPU.

Both run in this process, on the same weights and input, with torch limited to as many threads
as NumPy's BLAS uses (all cores). Reports the ratio (target: minialign <= 1.5x torch) and where
minialign's time goes by layer type.

    python benchmarks/vision_tower.py [--repeats 5] [--out benchmarks/results/vision_tower_cpu.json]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from common import TimedOps, machine, timeit, write_json  # noqa: E402
from reference import randomize_  # noqa: E402  (the tests' non-trivial weights, shared on purpose)

# Which layer type each backend op belongs to, for the split.
LAYER_TYPES = {
    "pointwise_conv": "1x1 convs",
    "depthwise_conv2d": "depthwise conv",
    "squeeze_excite": "squeeze-excitation",
    "batch_norm": "BN/activation",
    "silu": "BN/activation",
    "conv2d": "stem conv",
    "global_pool": "pooling",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=289)
    parser.add_argument("--out", default=None, help="write the JSON result here")
    args = parser.parse_args()

    import torch
    from transformers import AlignVisionConfig as HFConfig
    from transformers import AlignVisionModel as HFModel

    from minialign import layers
    from minialign.config import AlignVisionConfig
    from minialign.vision_model import AlignVisionModel

    torch.set_num_threads(os.cpu_count())
    # align-base architecture with the tests' random non-trivial weights. Not init defaults: those
    # drive activations towards zero, into float32 denormals, which slow every CPU op down.
    reference = randomize_(HFModel(HFConfig()), seed=0)
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    ours = AlignVisionModel(AlignVisionConfig(), {k: v for k, v in state.items() if "num_batches" not in k})

    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, args.image_size, args.image_size)).astype(np.float32)
    x_torch = torch.from_numpy(x)
    x_torch_cl = x_torch.contiguous(memory_format=torch.channels_last)
    reference_cl = HFModel(HFConfig()).eval().to(memory_format=torch.channels_last)
    reference_cl.load_state_dict(reference.state_dict())

    with torch.inference_mode():
        t_torch = timeit(lambda: reference(x_torch), repeats=args.repeats)
        t_torch_cl = timeit(lambda: reference_cl(x_torch_cl), repeats=args.repeats)
        err = float(np.abs(ours(x).pooler_output - reference(x_torch).pooler_output.numpy()).max())
    t_ours = timeit(lambda: ours(x), repeats=args.repeats)

    timed = TimedOps(layers)
    ours.ops = timed
    for _ in range(args.repeats):
        ours(x)
    split: dict[str, float] = {}
    for op, seconds in timed.totals.items():
        kind = LAYER_TYPES.get(op, op)
        split[kind] = split.get(kind, 0.0) + seconds / args.repeats
    accounted = sum(split.values())

    best_torch = min(t_torch["median_s"], t_torch_cl["median_s"])
    write_json(args.out, {
        "benchmark": "vision tower, align-base, one image",
        "image_size": args.image_size,
        "machine": machine(),
        "minialign_numpy": t_ours,
        "transformers_torch_nchw": t_torch,
        "transformers_torch_channels_last": t_torch_cl,
        "ratio_vs_best_torch": t_ours["median_s"] / best_torch,
        "target_ratio": 1.5,
        "pooler_output_max_abs_diff": err,
        "minialign_split_s": dict(sorted(split.items(), key=lambda kv: -kv[1])),
        "minialign_split_fraction": {k: v / accounted for k, v in sorted(split.items(), key=lambda kv: -kv[1])},
    })


if __name__ == "__main__":
    main()
