"""The docs site builds strictly, its generated figures and tables are up to date, and every tutorial is linked from its page."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _require_mkdocs() -> None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs-material is a dev dependency")


def test_mkdocs_build_strict(tmp_path):
    _require_mkdocs()
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert (site / "index.html").is_file()


def test_block_table_is_up_to_date():
    spec = importlib.util.spec_from_file_location("gen_block_table", ROOT / "docs" / "gen_block_table.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    committed = (ROOT / "docs" / "block_table.md").read_text(encoding="utf-8")
    assert gen.render() == committed, "docs/block_table.md is stale: run `python docs/gen_block_table.py`"


def test_attention_map_figure_is_up_to_date(tmp_path):
    """docs/figures/attention_map.svg is what docs/figures/attention_map.py writes (from the
    embedded align-nano model); the script shows whole percentages, so float32 rounding noise
    in the attention does not change the file."""
    script = ROOT / "docs" / "figures" / "attention_map.py"
    result = subprocess.run(
        [sys.executable, str(script), "--out-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, f"{script.name} failed:\n{result.stdout}\n{result.stderr}"
    committed = (ROOT / "docs" / "figures" / "attention_map.svg").read_text(encoding="utf-8")
    assert (tmp_path / "attention_map.svg").read_text(encoding="utf-8") == committed, (
        "docs/figures/attention_map.svg is stale: run `python docs/figures/attention_map.py`"
    )


def _run_training_curves(*args: str) -> subprocess.CompletedProcess:
    script = ROOT / "docs" / "figures" / "training_curves.py"
    return subprocess.run([sys.executable, str(script), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)


def test_training_curves_figure_is_up_to_date(tmp_path):
    """docs/figures/training_curves.svg is what docs/figures/training_curves.py writes from the
    committed align-nano training log (a new run's log needs the figure regenerated with it)."""
    result = _run_training_curves("--out-dir", str(tmp_path))
    assert result.returncode == 0, f"training_curves.py failed:\n{result.stdout}\n{result.stderr}"
    committed = (ROOT / "docs" / "figures" / "training_curves.svg").read_text(encoding="utf-8")
    assert (tmp_path / "training_curves.svg").read_text(encoding="utf-8") == committed, (
        "docs/figures/training_curves.svg is stale: run `python docs/figures/training_curves.py`"
    )


def test_training_curves_on_a_synthetic_log(tmp_path):
    """The script takes any log: 30 steps (fewer than the loss's 50-step mean), evals at 10, 20, 30.
    The result is well-formed XML with one accuracy point per eval."""
    log = tmp_path / "train_log.jsonl"
    with open(log, "w", encoding="utf-8") as f:
        for step in range(1, 31):
            record = {"step": step, "loss": 4.0 - 0.05 * step + 0.1 * (step % 3), "lr": 1e-3, "grad_norm": 1.0,
                      "temperature": 0.07 + 0.001 * step, "examples_per_s": 100.0, "elapsed_s": 0.5 * step}
            if step % 10 == 0:
                record["eval"] = {"zero_shot_top1": step / 100, "chance": 1 / 36}
            f.write(json.dumps(record) + "\n")
    result = _run_training_curves("--out-dir", str(tmp_path / "out"), "--log", str(log))
    assert result.returncode == 0, f"training_curves.py failed:\n{result.stdout}\n{result.stderr}"
    root = ET.parse(tmp_path / "out" / "training_curves.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert len(root.findall("{http://www.w3.org/2000/svg}circle")) == 3
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "Training log: 30 steps (1 to 30), evaluated at 3 steps" in texts
    assert {"10.0", "20.0", "30.0", "chance 2.8%"} <= set(texts)


def test_every_tutorial_is_linked_from_a_walkthrough_page():
    """Each tutorial is named on the walkthrough page it goes with (the index's table does not count)."""
    pages = [p.read_text(encoding="utf-8") for p in (ROOT / "docs").rglob("*.md") if p.name != "index.md"]
    for tutorial in sorted((ROOT / "tutorials").glob("*.py")):
        assert any(f"tutorials/{tutorial.name}" in text for text in pages), f"no page links {tutorial.name}"


def test_the_backend_numbers_are_those_of_the_committed_benchmark_results():
    """numpy.py's table of tricks is what benchmarks/numpy_backend.py --table prints for the
    committed result, and the times on the backends page are those of the committed vision-tower
    runs (with OPENBLAS_THREAD_TIMEOUT=16, and at OpenBLAS's default of 28)."""
    import minialign.backends.numpy as fast

    results = ROOT / "benchmarks" / "results"
    table = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "numpy_backend.py"), "--table",
                            str(results / "numpy_backend.json")], capture_output=True, text=True, check=True).stdout
    assert table.strip() in fast.__doc__, "rerun numpy_backend.py --table and paste it into numpy.py's docstring"

    tuned = json.loads((results / "vision_tower_cpu.json").read_text())
    default = json.loads((results / "vision_tower_cpu_openblas_timeout_28.json").read_text())
    assert tuned["openblas_thread_timeout"]["value"] == "16" and default["openblas_thread_timeout"]["value"] == "28"
    page = " ".join((ROOT / "docs" / "backends.md").read_text().split())
    seconds = {name: f"{run[key]['median_s']:.2f} s" for name, run, key in (
        ("reference", tuned, "minialign_reference"), ("numpy", tuned, "minialign_numpy"),
        ("torch", tuned, "transformers_torch_channels_last"), ("numpy, OpenBLAS default", default, "minialign_numpy"))}
    assert (f"in {seconds['reference']}, the NumPy backend in {seconds['numpy']}, and transformers on torch in "
            f"{seconds['torch']}") in page
    assert f"takes {seconds['numpy']} instead of {seconds['numpy, OpenBLAS default']}" in page


def test_the_drawn_shapes_tables_are_those_of_the_committed_result():
    """The training page's tables of the shipped model on drawn shapes are what
    benchmarks/drawn_shapes_eval.py --table prints for the committed result."""
    results = ROOT / "benchmarks" / "results" / "drawn_shapes_align-nano.json"
    text = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "drawn_shapes_eval.py"), "--table", str(results)],
                          capture_output=True, text=True, check=True).stdout
    page = (ROOT / "docs" / "training.md").read_text()
    shown = [block for block in text.strip().split("\n\n")
             if block.startswith(("Overall", "| background", "| canvas", "| object size", "| jpeg", "| pair"))]
    assert len(shown) == 6
    for block in shown:
        assert block in page, f"docs/training.md lacks, or has an old copy of:\n{block}"


def test_the_variety_runs_table_is_that_of_the_committed_runs():
    """Each row of the training appendix's "Drawn shapes in training" table, from the run's log and
    its drawn-shapes result (variety 0: the model shipped before, its log and result kept there)."""
    results = ROOT / "benchmarks" / "results"
    runs = {}
    for folder in sorted((results / "variety_runs").iterdir()):
        args = json.loads((folder / "run_args.json").read_text())
        name = f"{args['variety']:g}" + ("" if args["steps"] == 1000 else f", {args['steps']} steps")
        assert folder.name == "variety-" + name.replace(", ", "-").replace(" ", "-")
        runs[name] = (folder / "train_log.jsonl", folder / "drawn_shapes.json")
    assert len(runs) == 4
    page = (ROOT / "docs" / "training-runs.md").read_text()
    for name, (log, drawn) in runs.items():
        last = [json.loads(line) for line in log.read_text().splitlines() if '"eval"' in line][-1]
        result = json.loads(drawn.read_text())
        per = result["per"]
        cells = [last["eval"]["zero_shot_top1"], result["overall"]["top1"], per["background"]["white"]["top1"],
                 per["background"]["black"]["top1"], per["background"]["saturated"]["top1"],
                 per["object_size"]["small"]["top1"], per["object_size"]["large"]["top1"]]
        row = f"| {name} | " + " | ".join(f"{100 * c:.1f}%" for c in cells) + " |"
        assert row in page, row


def test_the_kernel_lab_tables_are_those_of_the_committed_report():
    """docs/kernels/lab.md's tables are what benchmarks/kernel_report.py --table prints for the
    committed report (tests/test_kernel_lab.py checks that report against a fresh compile)."""
    results = ROOT / "benchmarks" / "results" / "kernel_report.json"
    text = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernel_report.py"), "--table", str(results)],
                          capture_output=True, text=True, check=True).stdout
    page = (ROOT / "docs" / "kernels" / "lab.md").read_text()
    blocks = text.strip().split("\n\n")
    assert len(blocks) == 2
    for block in blocks:
        assert block in page, f"docs/kernels/lab.md lacks, or has an old copy of:\n{block}"


def _recipe_run_row(folder: Path) -> str:
    """A row of the training page's table of torch recipe runs, from the run's files."""
    args = json.loads((folder / "run_args.json").read_text())
    drawn = json.loads((folder / "drawn.json").read_text())["summary"]
    last = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines() if '"held0"' in line][-1]
    generator = args["generator"]
    varied = ("drawn at 48 px" if generator["varied_resolution"] is None else "drawn at 16-96 px") + \
        (", held-out backgrounds out" if generator["held_out_colour_backgrounds_excluded"] else "")
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    cells = [folder.name, f"{args['variety']:g}", f"{args['train_examples']:,}", f"{args['steps']} of {args['batch']}", varied,
             pct(last["held0"]), pct(last["seen0"]) if "seen0" in last else "", pct(drawn["overall"]),
             pct(drawn["background:saturated"]), pct(drawn["object_size:small"]), pct(drawn["canvas:16"]),
             pct(drawn["pair:held out"])]
    return "| " + " | ".join(cells) + " |"


def test_the_recipe_runs_on_the_training_page_are_those_committed():
    """The torch runs' table, and the NumPy run of the best recipe: its time, its held-out score and
    its drawn-shapes tables, all from benchmarks/results/recipe_runs/."""
    runs = ROOT / "benchmarks" / "results" / "recipe_runs"
    page = (ROOT / "docs" / "training-runs.md").read_text()  # the appendix of the training page
    torch_runs = sorted(p for p in runs.iterdir() if p.name.startswith("torch-") and (p / "drawn.json").exists())
    assert len(torch_runs) == 7  # and one stopped before its end, which has no drawn-shapes result
    for folder in torch_runs:
        row = _recipe_run_row(folder)
        assert row.replace("|  |", "| |") in page.replace("|  |", "| |"), row

    best = runs / "numpy-30k-variety-1"
    args = json.loads((best / "run_args.json").read_text())
    assert (args["variety"], args["train_examples"], args["steps"], args["batch_size"]) == (1.0, 30000, 1400, 128)
    last = json.loads((best / "train_log.jsonl").read_text().splitlines()[-1])
    flat = " ".join(page.split())
    assert f"(the loop {last['elapsed_s'] / 60:.1f} of them)" in flat
    assert f"It reached {100 * last['eval']['zero_shot_top1']:.1f}% on its own held-out test split" in flat
    text = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "drawn_shapes_eval.py"), "--table",
                           str(best / "drawn_shapes.json")], capture_output=True, text=True, check=True).stdout
    shown = [block for block in text.strip().split("\n\n")
             if block.startswith(("Overall", "| background", "| canvas", "| object size", "| pair"))]
    assert len(shown) == 5
    for block in shown:
        assert block in page, f"docs/training-runs.md lacks, or has an old copy of:\n{block}"


def _batch_run_row(name: str, contrast: float, log_file: Path, drawn_file: Path) -> str:
    """A row of the training appendix's table of NumPy runs with batches of 64."""
    evals = [json.loads(line) for line in log_file.read_text().splitlines() if '"eval"' in line]
    left = next((r["step"] for r in evals if r["eval"]["zero_shot_top1"] >= 0.5), None)
    per = json.loads(drawn_file.read_text())
    cells = [name, f"{contrast:g}", "not within the run" if left is None else f"step {left}",
             f"{100 * evals[-1]['eval']['zero_shot_top1']:.1f}%", f"{100 * per['overall']['top1']:.1f}%",
             f"{100 * per['per']['background']['saturated']['top1']:.1f}%",
             f"{100 * per['per']['object_size']['small']['top1']:.1f}%"]
    return "| " + " | ".join(cells) + " |"


def test_the_numpy_runs_with_batches_of_64_are_those_committed():
    """The two NumPy runs of 2800 steps of 64: the one whose contrast floor was 50 (its log and
    drawn-shapes result in recipe_runs/) and the shipped model, at the generator's floor now."""
    from minialign import synthetic

    runs = ROOT / "benchmarks" / "results" / "recipe_runs"
    folder = runs / "numpy-30k-variety-0.7-batch-64-contrast-50"
    args = json.loads((folder / "run_args.json").read_text())
    shipped, _ = _shipped_run()
    for a in (args, shipped):
        assert (a["variety"], a["train_examples"], a["steps"], a["batch_size"]) == (0.7, 30000, 2800, 64)
    page = (ROOT / "docs" / "training-runs.md").read_text()
    for row in (_batch_run_row(folder.name, 50, folder / "train_log.jsonl", folder / "drawn_shapes.json"),
                _batch_run_row("align-nano (shipped)", synthetic._MIN_CONTRAST,
                               ROOT / "minialign" / "models" / "align-nano" / "train_log.jsonl",
                               ROOT / "benchmarks" / "results" / "drawn_shapes_align-nano.json")):
        assert row in page, row


def test_the_tutorial_and_the_training_page_agree_on_what_its_size_reaches():
    """Tutorial 07 runs the shipped recipe at its own size: the page and the tutorial state what the
    committed run of that size reached, and the tutorial checks a floor below it."""
    import re

    folder = ROOT / "benchmarks" / "results" / "tutorial_07"
    args = json.loads((folder / "run_args.json").read_text())
    last = json.loads((folder / "train_log.jsonl").read_text().splitlines()[-1])
    top1 = last["eval"]["zero_shot_top1"]
    tutorial = (ROOT / "tutorials" / "07_training_a_tiny_align.py").read_text()
    assert f"STEPS, BATCH, EXAMPLES = {args['steps']}, {args['batch_size']}, recipe.TRAIN_EXAMPLES" in tutorial
    from minialign.training import recipe

    assert args["train_examples"] == recipe.TRAIN_EXAMPLES and args["variety"] == recipe.VARIETY
    expected = float(re.search(r"^EXPECTED = ([0-9.]+)", tutorial, re.M).group(1))
    floor = float(re.search(r"^FLOOR = ([0-9.]+)", tutorial, re.M).group(1))
    assert expected == round(top1, 3) and floor < expected
    page = " ".join((ROOT / "docs" / "training.md").read_text().split())
    shipped = json.loads((ROOT / "minialign" / "models" / "align-nano" / "run_args.json").read_text())
    assert (f"{args['steps']} steps of {args['batch_size']} pairs instead of the shipped run's {shipped['steps']}. "
            f"On the 2-core machine its training loop took {last['elapsed_s'] / 60:.1f} minutes and reached "
            f"{100 * top1:.1f}% held-out top-1") in page
    assert f"checks at least {floor:.0%}" in page
    small = folder / "1600-steps-of-64"  # the same minutes in batches of 64, the shipped run's batch
    small_args = json.loads((small / "run_args.json").read_text())
    assert (small_args["steps"], small_args["batch_size"]) == (1600, shipped["batch_size"])
    small_last = json.loads((small / "train_log.jsonl").read_text().splitlines()[-1])
    assert f"at its last step, at {100 * small_last['eval']['zero_shot_top1']:.1f}%" in page


def test_every_kernel_page_shows_its_predicted_table():
    """Each kernel's page carries its table of specialisations from the committed kernel report."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import kernel_report

    result = json.loads((ROOT / "benchmarks" / "results" / "kernel_report.json").read_text())
    for kernel, page in kernel_report.KERNEL_PAGES.items():
        table = kernel_report.kernel_table(result, kernel)
        assert table.count("\n") >= 2, kernel  # a header, its rule and at least one specialisation
        assert table in (ROOT / "docs" / "kernels" / page).read_text(), f"docs/kernels/{page} lacks its table"


def test_architecture_figures_are_up_to_date(tmp_path):
    """docs/figures/{dual_encoder,logit_matrix,bert_layer,mbconv_block,efficientnet_stages}.svg are
    what docs/figures/architecture.py draws from the configs and block_specs now, and each is
    shown on a page."""
    script = ROOT / "docs" / "figures" / "architecture.py"
    result = subprocess.run([sys.executable, str(script), "--out-dir", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"architecture.py failed:\n{result.stdout}\n{result.stderr}"
    written = sorted(p.name for p in tmp_path.glob("*.svg"))
    assert len(written) == 5, written
    pages = [p.read_text(encoding="utf-8") for p in (ROOT / "docs").rglob("*.md")]
    for name in written:
        fresh = (tmp_path / name).read_text(encoding="utf-8")
        ET.fromstring(fresh.split("\n", 1)[1])  # well-formed SVG after the generated-by comment
        assert fresh == (ROOT / "docs" / "figures" / name).read_text(encoding="utf-8"), (
            f"docs/figures/{name} is stale: run `python docs/figures/architecture.py`")
        assert any(f"figures/{name}" in text for text in pages), f"no page shows docs/figures/{name}"


def test_why_align_states_the_default_config():
    """The align-base column of docs/why-align.md is minialign's default AlignConfig (which
    tests/test_config.py checks against transformers' defaults)."""
    from minialign import loss
    from minialign.config import AlignConfig
    from minialign.vision_model import block_specs

    config = AlignConfig()
    text, vision = config.text_config, config.vision_config
    page = " ".join((ROOT / "docs" / "why-align.md").read_text(encoding="utf-8").split())
    assert (f"EfficientNet-B7 scaling: width x{vision.width_coefficient:.1f}, depth x{vision.depth_coefficient:.1f}, "
            f"{len(block_specs(vision))} MBConv blocks") in page
    assert (f"BERT-base: {text.num_hidden_layers} layers, hidden {text.hidden_size}, "
            f"{text.num_attention_heads} heads") in page
    assert (f"| {config.projection_dim}: the image tower's pooled output, and the text's [CLS] state projected "
            f"{text.hidden_size} -> {config.projection_dim} |") in page
    assert block_specs(vision)[-1].out_dim == config.projection_dim  # the pooled output needs no projection
    assert f"label smoothing of {loss.LABEL_SMOOTHING:g})" in page


def _shipped_run() -> tuple[dict, list[dict]]:
    """The shipped model's run_args.json and its training log (one record per step, the last wins)."""
    folder = ROOT / "minialign" / "models" / "align-nano"
    args = json.loads((folder / "run_args.json").read_text())
    by_step = {}
    for line in (folder / "train_log.jsonl").read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            by_step[record["step"]] = record
    return args, [by_step[s] for s in sorted(by_step)]


def test_the_loss_page_numbers_are_those_of_the_shipped_run():
    """N (the shipped run's batch), the floors computed from it, and the temperature at the first
    and the last step, which is the temperature the shipped checkpoint stores."""
    import math

    from safetensors.numpy import load_file

    args, log = _shipped_run()
    n, lr = args["batch_size"], args["lr"]
    page = " ".join((ROOT / "docs" / "loss.md").read_text(encoding="utf-8").split())
    on, off = 0.9 + 0.1 / n, 0.1 / n
    floor = -on * math.log(on) - (n - 1) * off * math.log(off)
    assert f"For a batch of N = {n} (C = {n} classes per row, the batch size align-nano was trained with)" in page
    assert (f"\\min \\ell_n = -\\Big(0.9 + \\frac{{0.1}}{{{n}}}\\Big) \\ln\\Big(0.9 + \\frac{{0.1}}{{{n}}}\\Big) - "
            f"{n - 1} \\cdot \\frac{{0.1}}{{{n}}} \\ln \\frac{{0.1}}{{{n}}} \\approx {floor:.2f}") in page
    p_true = math.e / (math.e + (n - 1) / math.e)
    assert (f"With τ = 1 and N = {n} that is {p_true:.3f}, so the loss cannot fall below "
            f"$-\\ln {p_true:.3f} \\approx {-math.log(round(p_true, 3)):.2f}$") in page
    first, last = log[0], log[-1]
    assert last["step"] == args["steps"]
    stored = float(load_file(str(ROOT / "minialign" / "models" / "align-nano" / "model.safetensors"))["temperature"])
    assert math.isclose(stored, last["temperature"], rel_tol=1e-6)
    assert (f"records τ at every step: {first['temperature']:.2f} at step {first['step']}, {last['temperature']:.3f} "
            f"at step {last['step']}, the last, which is the value the shipped checkpoint stores") in page
    assert f"for τ = 0.07 a step of {lr:g} is {lr / 0.07:.0%}" in page


def test_the_zero_shot_page_quotes_the_last_evaluation_of_the_shipped_log():
    args, log = _shipped_run()
    last = [r for r in log if "eval" in r][-1]
    page = " ".join((ROOT / "docs" / "zero-shot.md").read_text(encoding="utf-8").split())
    assert (f"the last evaluation in `minialign/models/align-nano/train_log.jsonl` (step {last['step']}, the run's "
            f"last) has `zero_shot_top1` {last['eval']['zero_shot_top1']:.3f}, against `chance` "
            f"{last['eval']['chance']:.3f}") in page


def test_the_checkpoints_page_states_the_shipped_config():
    config = json.loads((ROOT / "minialign" / "models" / "align-nano" / "config.json").read_text())
    from minialign.config import AlignConfig

    base = AlignConfig()
    page = (ROOT / "docs" / "checkpoints.md").read_text(encoding="utf-8")
    row = (f"| `text_config.vocab_size` | {base.text_config.vocab_size} | "
           f"{config['text_config']['vocab_size']} |")
    assert row in page, row
    assert f"| `projection_dim` | {base.projection_dim} | {config['projection_dim']} |" in page


def test_the_kernel_pages_name_real_align_base_widths_and_map_sizes():
    """The depthwise page's example widths (multiples of 32 but not of 64, where BLOCK_C drops to
    32) are every such depthwise width align-base has; the batchnorm page's map sizes and the
    benchmark's shapes are transformers' (144 after the stem, 72 in stage 2), not TensorFlow's."""
    import importlib.util as util

    from minialign.config import AlignVisionConfig
    from minialign.vision_model import block_specs

    widths = sorted({b.expand_dim if b.expand else b.in_dim for b in block_specs(AlignVisionConfig())})
    odd = [w for w in widths if w % 32 == 0 and w % 64]
    depthwise = " ".join((ROOT / "docs" / "kernels" / "depthwise-conv.md").read_text().split())
    assert f"as align-base's {', '.join(map(str, odd[:-1]))} and {odd[-1]})" in depthwise

    spec = util.spec_from_file_location("gen_block_table", ROOT / "docs" / "gen_block_table.py")
    table = util.module_from_spec(spec)
    spec.loader.exec_module(table)
    rows = table.block_rows()
    stem = table.stem_size(AlignVisionConfig())
    stage2 = rows[[r["stage"] for r in rows].index(2)]["h_out"]
    batchnorm = " ".join((ROOT / "docs" / "kernels" / "batchnorm-silu.md").read_text().split())
    assert f"on `[64, {stage2}, {stage2}, 384]`" in batchnorm
    assert f"(map sizes {stem} and {stage2} as transformers pads, not TensorFlow's {stem + 1} and {stage2 + 1})" \
        in batchnorm
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import batchnorm_silu

    maps = {r["h_out"] for r in rows} | {stem}
    for shape in batchnorm_silu.BN_SILU_SHAPES + batchnorm_silu.BN_RESIDUAL_SHAPES:
        assert shape[1] in maps, f"benchmarks/batchnorm_silu.py: {shape} is not an align-base map size {sorted(maps)}"
    assert batchnorm_silu.BN_SILU_SHAPES[0] == (64, stage2, stage2, 384)


def test_the_training_lesson_states_the_shipped_run():
    """The training page's account of the shipped run: its arguments, its time, the table of its
    evaluations, the held-out table of benchmarks/held_out_eval.py, and the recipe's constants
    in "Why each choice" -- all from the committed files, so a retrained model fails here until
    the page follows it."""
    from minialign.config import nano_config
    from minialign.training import loop, recipe

    args, log = _shipped_run()
    page = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    flat = " ".join(page.split())
    assert (f"holds the arguments: {args['steps']} steps of {args['batch_size']} pairs at "
            f"{recipe.IMAGE_SIZE}x{recipe.IMAGE_SIZE}, peak learning rate {args['lr']:g}, weight decay "
            f"{args['weight_decay']:g}, seed {args['seed']}, {args['train_examples']:,} training pairs, "
            f"{args['variety']:.0%} of them drawn the way people draw shapes and "
            f"{args['unnamed_colour_fraction']:.0%} in unnamed colours") in flat
    last = log[-1]
    assert (f"The training loop took {last['elapsed_s'] / 60:.1f} minutes on the 2-core development machine, "
            f"alone ({last['elapsed_s'] / last['step']:.2f} s per step, evaluations included)") in flat
    for record in log:
        if "eval" in record and record["step"] % 200 == 0:
            row = (f"| {record['step']} | {record['loss']:.2f} | {record['temperature']:.3f} | "
                   f"{100 * record['eval']['zero_shot_top1']:.1f}% |")
            assert row in page, row
    held = json.loads((ROOT / "benchmarks" / "results" / "held_out_align-nano.json").read_text())
    for name, r in held["rows"].items():
        row = (f"| {name} | {100 * r['top1']:.1f}% | {100 * r['shape']:.1f}% | {100 * r['colour']:.1f}% | "
               f"{100 * r['shape_prompts']:.1f}% |")
        assert row in page, row
    why = flat[flat.index("## Why each choice"):flat.index("## The embedded model")]
    for phrase in [f"starts at {nano_config(vocab_size=100).temperature_init_value:g} (`nano_config`)",
                   f"at {loop.LR_SCALE['temperature']:g}x the learning rate, clamped to "
                   f"[{loop.TEMPERATURE_RANGE[0]:g}, {loop.TEMPERATURE_RANGE[1]:g}]",
                   f"| batch {args['batch_size']} | every caption is scored against {args['batch_size'] - 1} wrong",
                   f"| {recipe.UNNAMED_COLOUR_FRACTION:.0%} of training images in colours without a name",
                   f"(`VOCAB_SIZE` {recipe.VOCAB_SIZE})", f"weight decay {recipe.WEIGHT_DECAY:g} on matrices",
                   f"| {recipe.VARIETY:.0%} of images drawn as people draw shapes, from {recipe.TRAIN_EXAMPLES:,} pairs",
                   f"gradient norm clipped at {args['max_grad_norm']:g}"]:
        assert phrase in why, phrase
    assert (args["weight_decay"], args["variety"], args["train_examples"]) == (
        recipe.WEIGHT_DECAY, recipe.VARIETY, recipe.TRAIN_EXAMPLES)  # the shipped run is the recipe


def test_the_training_command_is_the_shipped_runs():
    args, _ = _shipped_run()
    page = " ".join((ROOT / "docs" / "training.md").read_text(encoding="utf-8").replace("\\\n", " ").split())
    command = f"minialign train --config {args['config']} --steps {args['steps']} --batch-size {args['batch_size']} --lr "
    assert command in page
    lr = page.split(command, 1)[1].split()[0]
    assert float(lr) == args["lr"]
