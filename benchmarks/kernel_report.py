"""The kernel lab's report, committed: every kernel align-base launches, compiled for H100 and A100.

``minialign kernels report`` prints it; this script writes it to JSON for the docs
(docs/kernel-lab.md reads its numbers from the file, and tests/test_kernel_lab.py checks that the
file is what the current Triton compiles). No GPU is needed (about 3 minutes on 2 cores):

    python benchmarks/kernel_report.py --out benchmarks/results/kernel_report.json

On a machine with a GPU, ``--measure`` also times every launch (``report.measure``) and writes
the measured time beside the predicted one, per specialisation and per tower, with the device
named: the roofline model's error, calibrated.

    python benchmarks/kernel_report.py --measure --out $OUT/kernel_report_measured.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

DEFAULT_OUT = os.path.join(os.path.dirname(__file__), "results", "kernel_report.json")


KERNEL_NAMES = {"_gemm_epilogue_kernel": "gemm", "_depthwise_conv_bn_silu_kernel": "depthwise conv",
                "_se_gate_kernel": "SE gate", "_attention_kernel": "attention", "_layer_norm_kernel": "layer norm",
                "_batchnorm_act_kernel": "batchnorm + SiLU"}
# The docs page of each kernel, where its table of specialisations goes (tests/test_docs.py checks it).
KERNEL_PAGES = {"_gemm_epilogue_kernel": "gemm.md", "_depthwise_conv_bn_silu_kernel": "depthwise-conv.md",
                "_se_gate_kernel": "se-gate.md", "_attention_kernel": "attention.md",
                "_layer_norm_kernel": "layer-norm.md", "_batchnorm_act_kernel": "batchnorm-silu.md"}


def kernel_table(result: dict, kernel: str) -> str:
    """One kernel's specialisations, predicted for the H100 in bfloat16: its page's table (the
    GEMM's with the bare GEMM's time and the epilogue's price, where the report has them)."""
    r = result["reports"]["h100-bfloat16"]
    mine = [row for row in r["kernels"] if row["kernel"] == kernel]
    priced = all("bare_seconds" in row for row in mine)
    lines = ["| specialisation (H100, bfloat16, predicted) | launches | registers | spilled bytes | shared KiB | blocks per SM "
             "| SASS instructions | tensor-core instructions | bytes per load | warp-instructions per output "
             "| predicted us | limited by |" + (" bare GEMM us | epilogue % (beyond its bytes) |" if priced else ""),
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|" + ("---:|---:|" if priced else "")]
    for row in mine:
        widths = "/".join(row["global_load_widths"]) or "-"
        lines.append(f"| {row['what']} | {row['launches']} | {row['registers']} | {row['spill_store_bytes']} | "
                     f"{row['shared_bytes'] / 1024:.0f} | {row['blocks_per_sm']} | {row['sass_instructions']} | "
                     f"{row['tensor_core_instructions']} | {widths} | {row['warp_instructions_per_output']:.2f} | "
                     f"{row['seconds'] * 1e6:.1f} | {row['limited_by']} |"
                     + (f" {row['bare_seconds'] * 1e6:.1f} | {100 * row['epilogue_overhead']:+.0f} "
                        f"({100 * row['epilogue_overhead_beyond_bytes']:+.0f}) |" if priced else ""))
    return "\n".join(lines)


def markdown_tables(result: dict) -> str:
    """The docs' tables: each tower predicted against the anchors, then per kernel in each tower
    (H100, bfloat16): launches, registers, spills, warp-instructions per output, predicted time."""
    lines = ["| device | tower | launches | predicted | memory roofline alone | measured (transformers, eager / torch.compile) |",
             "|---|---|---:|---:|---:|---|"]
    for name, r in result["reports"].items():
        if r["dtype"] != "bfloat16":
            continue
        for tower, t in r["towers"].items():
            anchors = " / ".join(f"{v:,.0f}" for v in t["measured_anchors_per_s"].values()) or "-"
            lines.append(f"| {r['device']} | {tower} | {t['launches']} | {t['predicted_per_s']:,.0f} {t['unit']} "
                         f"({t['seconds'] * 1e3:.2f} ms) | {t['memory_bound_per_s']:,.0f} {t['unit']} | {anchors} |")
    r = result["reports"]["h100-bfloat16"]
    lines += ["", "| tower | kernel | specialisations | launches | registers | spilled bytes | warp-instructions per output "
              "| predicted ms | share of the tower | limited by |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for tower in ("vision", "text", "text_packed", "not launched"):
        rows = [row for row in r["kernels"] if row["tower"] == tower]
        if not rows:  # a report from before the packed text workload
            continue
        total = sum(row["seconds"] for row in rows)
        for kernel, label in KERNEL_NAMES.items():
            mine = [row for row in rows if row["kernel"] == kernel]
            if not mine:
                continue
            span = lambda key, fmt: (f"{fmt(min(row[key] for row in mine))}-{fmt(max(row[key] for row in mine))}"  # noqa: E731
                                     if len({fmt(row[key]) for row in mine}) > 1 else fmt(mine[0][key]))
            seconds = sum(row["seconds"] for row in mine)
            limits = sorted({row["limited_by"] for row in mine})
            lines.append(f"| {tower} | {label} | {len(mine)} | {sum(row['launches'] for row in mine)} | "
                         f"{span('registers', str)} | {max(row['spill_store_bytes'] for row in mine)} | "
                         f"{span('warp_instructions_per_output', lambda x: f'{x:.2f}')} | {seconds * 1e3:.2f} | "
                         f"{f'{100 * seconds / total:.0f}%' if tower != 'not launched' else '-'} | {', '.join(limits)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--measure", action="store_true", help="also time every launch on this machine's GPU")
    parser.add_argument("--table", metavar="JSON", default=None,
                        help="compile nothing: print the docs' markdown tables of a result file")
    parser.add_argument("--kernel", default=None, choices=sorted(KERNEL_PAGES),
                        help="with --table: print that kernel's table of specialisations (its docs page's)")
    args = parser.parse_args()
    if args.table:
        with open(args.table, encoding="utf-8") as fh:
            result = json.load(fh)
        print(kernel_table(result, args.kernel) if args.kernel else markdown_tables(result))
        return
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("unset TRITON_INTERPRET: the kernel lab compiles for a GPU")
    import torch
    import triton

    from minialign.kernels.report import analyse, format_report

    devices = ("h100", "a100")
    gpu = None
    if args.measure:
        if not torch.cuda.is_available():
            sys.exit("--measure needs a CUDA GPU")
        gpu = torch.cuda.get_device_name()
        devices = ("h100",) if torch.cuda.get_device_capability()[0] >= 9 else ("a100",)
    reports = {}
    for device in devices:
        for dtype in ("bfloat16",) if args.measure else ("bfloat16", "float32"):
            name = f"{device}-{dtype}"
            reports[name] = analyse(device, dtype, measure_on_gpu=gpu is not None)
            print(format_report(reports[name]) + "\n", flush=True)
    result = {"benchmark": "kernel lab: every kernel specialisation of one align-base forward, compiled and predicted",
              "triton": triton.__version__, "torch": torch.__version__, "python": platform.python_version(),
              "measured_on": gpu, "reports": reports}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as fh:
        fh.write(json.dumps(result, indent=1) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
