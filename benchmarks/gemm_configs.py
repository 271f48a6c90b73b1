"""The GEMM's tile table, chosen on paper: every GEMM align-base launches, at every candidate tile.

``_config`` in kernels/gemm.py is a small fixed table keyed on the model's shapes; its comments
quote this sweep. For each GEMM specialisation of one align-base forward (``plan.model_launches``,
the kernel lab's), each candidate configuration (BLOCK_M x BLOCK_N x BLOCK_K, warps, stages) is
made by the launcher itself (``plan.gemm_variant``: the same A, W and epilogue, that tile),
compiled for the device (``aot``) and predicted (``report``): registers, spills, shared memory,
blocks per SM and the roofline time of all its launches in one forward. The bare GEMM (A and W
alone, the launcher's own tile) is swept too, so a choice can be read against the time it must
match. No GPU is needed (about 25 minutes for both devices and both dtypes on 2 cores); on a GPU,
``benchmarks/gemm.py --sweep`` times tiles for real.

    python benchmarks/gemm_configs.py --out benchmarks/results/gemm_configs.json
    python benchmarks/gemm_configs.py --table benchmarks/results/gemm_configs.json   # print only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

DEFAULT_OUT = os.path.join(os.path.dirname(__file__), "results", "gemm_configs.json")

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages); GROUP_M stays 8. 16-bit: tensor-core tiles,
# from tutorial 03's Hopper list down to the narrow tiles EfficientNet's projections (N = 32..80)
# might want; float32 ("ieee" FFMA, no tensor cores): smaller tiles, registers being the limit.
CANDIDATES = {
    "bfloat16": [(128, 256, 64, 8, 3), (128, 128, 64, 8, 3), (128, 128, 64, 4, 4), (128, 128, 64, 4, 3),
                 (128, 128, 32, 4, 4), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4), (128, 32, 64, 4, 4),
                 (256, 64, 64, 8, 3), (64, 64, 64, 4, 4)],
    "float32": [(64, 64, 32, 4, 3), (64, 64, 32, 4, 2), (64, 64, 16, 4, 3), (32, 64, 32, 4, 3),
                (64, 32, 32, 4, 3), (128, 64, 32, 8, 3), (64, 128, 32, 8, 3), (32, 32, 32, 4, 3)],
}


def key(cfg: dict) -> str:
    return f"{cfg['BLOCK_M']}x{cfg['BLOCK_N']}x{cfg['BLOCK_K']} w{cfg['num_warps']} s{cfg['num_stages']}"


def launch_config(launch) -> dict:
    """The configuration a recorded launch was compiled with."""
    c = launch.constants
    return dict(BLOCK_M=c["BLOCK_M"], BLOCK_N=c["BLOCK_N"], BLOCK_K=c["BLOCK_K"],
                num_warps=launch.options["num_warps"], num_stages=launch.options["num_stages"])


def price(own: list, device) -> dict:
    """Compile one specialisation and predict all its launches: what the table below shows."""
    from minialign.kernels import aot, report

    try:
        compiled, _, loops_matched, times = report.compile_and_predict(own, device)
    except aot.AotError as error:  # e.g. more shared memory than the SM has
        return {"error": str(error).splitlines()[0][:200]}
    return {"registers": compiled.registers_per_thread, "spill_store_bytes": compiled.spill_store_bytes,
            "shared_bytes": compiled.shared_bytes_per_block, "blocks_per_sm": compiled.occupancy().blocks_per_sm,
            "loops_matched": loops_matched, "seconds": sum(t["seconds"] for t in times),
            "issue_seconds": sum(t["issue_seconds"] for t in times),
            "limited_by": max(times, key=lambda t: t["seconds"])["limited_by"]}


def sweep(device_name: str, dtype: str, progress=print) -> list[dict]:
    """One row per GEMM specialisation of one align-base forward: each candidate's price."""
    from minialign.kernels import plan, report

    device = report.DEVICES[device_name]
    groups = [own for own in plan.specialisations(plan.model_launches(arch=device.arch, dtype=dtype))
              if own[0].kernel == "_gemm_epilogue_kernel"]
    rows = []
    for own in groups:
        first = own[0]
        what = report.describe(first)
        row = {"what": what[:what.index(" tile ")], "launches": len(own), "candidates": {}}
        for bm, bn, bk, warps, stages in CANDIDATES[dtype]:
            cfg = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages)
            variants = plan.specialisations([plan.gemm_variant(launch, device.arch, config=cfg) for launch in own])
            row["candidates"][key(cfg)] = price(variants[0], device)
        bare = plan.specialisations([plan.gemm_variant(launch, device.arch, bare=True) for launch in own])
        row["bare"] = {"config": key(launch_config(bare[0][0])), **price(bare[0], device)}
        rows.append(row)
        progress(f"{device_name} {dtype}: {format_row(row)}")
    return rows


def format_row(row: dict) -> str:
    """``what (xlaunches): candidate=us(...) ...  | bare tile=us``; the fastest that spills nothing and
    fits on an SM starred, ties (memory-bound tiles) broken by the fewest issue slots."""
    ok = {k: v for k, v in row["candidates"].items()
          if "seconds" in v and not v["spill_store_bytes"] and v["blocks_per_sm"] > 0}
    best = min(ok, key=lambda k: (round(ok[k]["seconds"], 8), ok[k]["issue_seconds"])) if ok else None

    def cell(k, v):
        if "error" in v:
            return f"{k}=error"
        return (f"{k}={v['seconds'] * 1e6:.1f}{'!' if v['spill_store_bytes'] else ''}"
                f"{'' if v['loops_matched'] else '?'}(i{v['issue_seconds'] * 1e6:.0f},r{v['registers']},"
                f"o{v['blocks_per_sm']}){'*' if k == best else ''}")

    cells = "  ".join(cell(k, v) for k, v in row["candidates"].items())
    bare = row["bare"]
    return (f"{row['what']} (x{row['launches']}): {cells}  | bare {bare['config']}="
            f"{bare['seconds'] * 1e6:.1f}" if "seconds" in bare else f"{row['what']}: {cells} | bare error")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--devices", default="h100,a100")
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--table", metavar="JSON", default=None, help="compile nothing: print a result file")
    args = parser.parse_args()
    if args.table:
        with open(args.table, encoding="utf-8") as fh:
            for name, rows in json.load(fh)["sweeps"].items():
                print(f"\n{name} (us for all launches of one forward; i the issue limit alone, r registers, o blocks "
                      "per SM (o0: does not fit); ! spills; ? loop trips unknown; * fastest that spills nothing and "
                      "fits, then fewest issue slots)")
                for row in rows:
                    print("  " + format_row(row))
        return
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("unset TRITON_INTERPRET: the sweep compiles for a GPU")
    import torch
    import triton

    sweeps = {f"{device}-{dtype}": sweep(device, dtype, progress=lambda line: print(line, flush=True))
              for device in args.devices.split(",") for dtype in args.dtypes.split(",")}
    result = {"benchmark": "the GEMM's tile table on paper: each align-base GEMM at each candidate tile, "
                           "compiled and predicted by the kernel lab",
              "triton": triton.__version__, "torch": torch.__version__, "python": platform.python_version(),
              "candidates": CANDIDATES, "sweeps": sweeps}
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
