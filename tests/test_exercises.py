"""The course exercises (tutorials/exercises/, judged by minialign/exercises/).

Every checker passes its solution, reports its untouched stub as "not implemented yet" (never a
traceback), and fails each known mistake with that mistake's hint. A known mistake here is the
solution with one edit a student might make (the table below), not the checker's own variant:
the checker has to recognise it from the outputs alone. Then the command: exit codes, one-line
setup errors, the report's contents.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minialign.cli import main
from minialign.exercises import EXERCISES, check_exercise

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "tutorials" / "exercises"
SOLUTIONS = FOLDER / "solutions"

# (exercise, [(text in the solution, what the mistake writes instead), ...], a phrase of the hint it must get)
MUTATIONS = [
    # 01 WordPiece
    ("01", [('else "##" + word[start:end]', "else word[start:end]")], 'with the "##" prefix'),
    ("01", [("range(len(word), start, -1)", "range(start + 1, len(word) + 1)")], "the LONGEST piece"),
    ("01", [("            return [unk_token]\n        pieces",
             "            return pieces + [unk_token]\n        pieces")],
     "the WHOLE word is one unk_token"),
    ("01", [("len(word) > max_chars", "len(word) >= max_chars")], "a word of exactly max_chars"),
    ("01", [("    if len(word) > max_chars:\n        return [unk_token]\n", "")], "unk_token at once"),
    ("01", [("        else:  # no piece starts here: the word cannot be covered\n            return [unk_token]",
             '        else:  # no piece starts here: the word cannot be covered\n            return ["[UNK]"]')],
     "not a hard-coded '[UNK]'"),
    # 02 basic tokenisation
    ("02", [('    text = "".join(f" {c} " if is_cjk(c) else c for c in text)\n', "")], "every CJK ideograph"),
    ("02", [('word = unicodedata.normalize("NFD", word)', 'word = unicodedata.normalize("NFKD", word)')], "not NFKD"),
    ("02", [("return ascii_symbol or unicodedata", "return unicodedata")], "symbols included"),
    ("02", [(" for c in text if not dropped(c))", " for c in text)")], "control/format characters"),
    ("02", [('if unicodedata.category(c) != "Mn"', "")], "drop the non-spacing marks"),
    ("02", [('return ascii_symbol or unicodedata.category(c).startswith("P")', "return ascii_symbol")],
     "every Unicode category P* character"),
    ("02", [('" " if c.isspace() else c for c in text if not dropped(c)', "c for c in text if not dropped(c)")],
     "every whitespace character"),
    # 03 GELU
    ("03", [("np.vectorize(math.erf, otypes=[np.float64])(x / math.sqrt(2))",
             "np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))")], "tanh approximation"),
    ("03", [("(x / math.sqrt(2))", "(x)")], "the argument of erf is x / sqrt(2)"),
    ("03", [("phi = 0.5 * (1 + ", "phi = (1 + ")], "the factor 1/2 is missing"),
    ("03", [("np.vectorize(math.erf, otypes=[np.float64])(x / math.sqrt(2))", "np.tanh(0.851 * x)")],
     "sigmoid approximation"),  # (1 + tanh(u / 2)) / 2 = sigmoid(u): x sigmoid(1.702 x)
    # 04 LayerNorm
    ("04", [("np.sqrt(var + eps)", "(np.sqrt(var) + eps)")], "eps goes INSIDE the square root"),
    ("04", [("var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)", "var = x.var(axis=-1, keepdims=True, ddof=1)")],
     "biased (population) variance"),
    ("04", [("x.mean(axis=-1, keepdims=True)\n    var = ((x - mean) ** 2).mean(axis=-1",
             "x.mean(axis=0, keepdims=True)\n    var = ((x - mean) ** 2).mean(axis=0")], "over its LAST axis"),
    ("04", [("var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)",
             "var = (x * x).mean(axis=-1, keepdims=True) - mean * mean")], "mean of squared deviations"),
    ("04", [("np.sqrt(var + eps) * weight + bias", "np.sqrt(var + eps)")], "scale by weight and shift by bias"),
    # 05 LayerNorm backward
    ("05", [(" - g.mean(axis=-1, keepdims=True)", "")], "x also moves the mean"),
    ("05", [(" - x_hat * (g * x_hat).mean(axis=-1, keepdims=True)", "")], "x also moves the variance"),
    ("05", [("g = dy * weight", "g = dy")], "through the weight"),
    ("05", [("dweight = (dy * x_hat).reshape(-1, H).sum(axis=0)", "dweight = dy * x_hat")],
     "sum their gradients over every leading axis"),
    ("05", [("(dy * x_hat).reshape(-1, H)", "(dy * x).reshape(-1, H)")], "not dy * x"),
    # 06 attention
    ("06", [(" / np.sqrt(d)", "")], "divide the scores q k^T by sqrt(d)"),
    ("06", [("np.sqrt(d)", "d")], "1 / sqrt(d), not 1 / d"),
    ("06", [("    scores = scores + bias[:, None, None, :]\n", "")], "the mask is forgotten"),
    ("06", [("scores.max(axis=-1, keepdims=True))\n    probs = e / e.sum(axis=-1,",
             "scores.max(axis=-2, keepdims=True))\n    probs = e / e.sum(axis=-2,")], "over the KEYS"),
    ("06", [("bias[:, None, None, :]", "bias[:, None, :, None]")], "not the queries"),
    ("06", [("attention_mask == 1, 0.0", "attention_mask == 0, 0.0")], "1 for a real token and 0 for padding"),
    # 07 one BERT layer
    ("07", [('dense("attention.output.dense", context) + x)', 'dense("attention.output.dense", context))')],
     "added to its input before the LayerNorm"),
    ("07", [("y.reshape(B, T, num_heads, d).transpose(0, 2, 1, 3)", "y.reshape(B, num_heads, T, d)"),
            ("(probs @ v).transpose(0, 2, 1, 3).reshape(B, T, H)", "(probs @ v).reshape(B, T, H)")],
     "a plain reshape to [B, heads, T, d] mixes tokens"),
    ("07", [('h = gelu(dense("intermediate.dense", a))',
             'h = dense("intermediate.dense", a)\n'
             '    h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))')],
     "exact GELU (erf)"),
    ("07", [(" + bias[:, None, None, :])", ")")], "the attention mask is forgotten"),
    # 08 batchnorm folding
    ("08", [("conv_weight * scale[:, None, None, None]", "conv_weight * scale")], "scale each OUTPUT channel"),
    ("08", [("np.sqrt(running_var + eps)  # [Cout]", "(np.sqrt(running_var) + eps)  # [Cout]")], "eps goes INSIDE"),
    ("08", [("bias - running_mean * scale\n", "bias - running_mean\n")], "subtracted BEFORE the scale"),
    ("08", [("np.sqrt(running_var + eps)  # [Cout]", "(running_var + eps)  # [Cout]")], "divide by its square root"),
    # 09 depthwise conv
    ("09", [("x_ * stride + j, c] * weight[c, 0, i, j]", "x_ * stride + j, c] * weight[c, 0, k - 1 - i, k - 1 - j]")],
     "no kernel flip"),
    ("09", [("x_ * stride + j, c] * weight[c, 0, i, j]", "x_ * stride + j, c] * weight[c, 0, j, i]")],
     "i runs down the rows"),
    ("09", [("x_pad[:, top:top + H, left:left + W] = x", "x_pad[:, bottom:bottom + H, right:right + W] = x")],
     "padding is (top, bottom, left, right)"),
    ("09", [("x_pad[b, y * stride + i, x_ * stride + j, c]", "x_pad[b, y + i, x_ + j, c]"),
            ("Ho = (H + top + bottom - k) // stride + 1\n    Wo = (W + left + right - k) // stride + 1",
             "Ho = H + top + bottom - k + 1\n    Wo = W + left + right - k + 1")], "the output has Ho"),
    ("09", [("\n    Ho = (H + top + bottom - k) // stride + 1\n    Wo = (W + left + right - k) // stride + 1\n",
             "\n    Ho = (H + top + bottom - k) // stride\n    Wo = (W + left + right - k) // stride\n")],
     "the + 1 counts the first window"),
    # 10 squeeze-excitation
    ("10", [("s = x.mean(axis=(1, 2))", "s = x.sum(axis=(1, 2))")], "the MEAN over the pixels"),
    ("10", [("(z * sigmoid(z))", "np.maximum(z, 0)")], "SiLU, x * sigmoid(x), not ReLU"),
    ("10", [("gate = sigmoid((z * sigmoid(z)) @ w_expand[:, :, 0, 0].T + b_expand)",
             "gate = (z * sigmoid(z)) @ w_expand[:, :, 0, 0].T + b_expand")], "the sigmoid is missing"),
    # 11 contrastive loss
    ("11", [("z = t @ v.T / temperature", "z = text_embeds @ image_embeds.T / temperature")], "L2-normalise both"),
    ("11", [("z = t @ v.T / temperature", "z = t @ v.T * temperature")], "DIVIDE the similarities"),
    ("11", [("    eps = 0.1\n", "    eps = 0.0\n")], "label smoothing 0.1 is missing"),
    ("11", [("float(cross_entropy(z.T))", "float(cross_entropy(z))")], "cross-entropy of the COLUMNS"),
    ("11", [("return (caption_loss + image_loss) / 2,", "return caption_loss + image_loss,")],
     "AVERAGES the two directions"),
    ("11", [("smooth = -logp.mean(axis=-1)",
             "smooth = -(logits - logits.max(axis=0)"
             " - np.log(np.exp(logits - logits.max(axis=0)).sum(axis=0))).mean(axis=-1)")],
     "applied to the wrong axis"),
    # 12 its gradient
    ("12", [("ce_backward(z.T).T) / 2", "ce_backward(z.T)) / 2")], "transpose it back"),
    ("12", [("ce_backward(z.T).T) / 2", "ce_backward(z.T).T)")], "each direction's gradient gets a factor 1/2"),
    ("12", [("- q) / n", "- q)")], "(softmax - target) / N"),
    ("12", [("q = 0.9 * np.eye(n) + 0.1 / n", "q = np.eye(n)")], "the SMOOTHED one"),
    # 13 zero-shot
    ("13", [("normalise(normalise(template_embeds).mean(axis=1))", "normalise(template_embeds.mean(axis=1))")],
     "normalise EACH template"),
    ("13", [("normalise(normalise(template_embeds).mean(axis=1))", "normalise(template_embeds).mean(axis=1)")],
     "normalise the mean again"),
    ("13", [("logits = normalise(image_embeds) @", "logits = image_embeds @")], "normalise the image embeddings"),
    ("13", [("logits.max(axis=-1, keepdims=True))\n    return e / e.sum(axis=-1,",
             "logits.max(axis=0, keepdims=True))\n    return e / e.sum(axis=0,")], "over the LABELS"),
    ("13", [("classes.T / temperature", "classes.T * temperature")], "DIVIDE the cosine similarities"),
    # 14 recall@K
    ("14", [("captions = {t for t in range(n_texts) if text_to_image[t] == i}",
             "captions = {min(t for t in range(n_texts) if text_to_image[t] == i)}")], "ANY of its captions"),
    ("14", [('kind="stable")[:k]', 'kind="stable")[:k + 1]')], "a hit is rank < k"),
    ("14", [('np.argsort(-candidate_scores, kind="stable")', 'np.argsort(candidate_scores, kind="stable")')],
     "DESCENDING"),
    ("14", [("return float(np.mean(image_hits)), float(np.mean(text_hits))",
             "return float(np.mean(text_hits)), float(np.mean(image_hits))")], "swapped"),
    ("14", [('np.argsort(-candidate_scores, kind="stable")',
             'len(candidate_scores) - 1 - np.argsort(-candidate_scores[::-1], kind="stable")')],
     "lower first"),
    # 15 Triton: masked row softmax
    ("15", [('    x = tl.where(real, x, float("-inf"))  # padded keys: weight exp(-inf) = 0\n', "")],
     "the mask is forgotten"),
    ("15", [('tl.where(real, x, float("-inf"))', "tl.where(real, x, 0.0)")], "must be -inf, not 0"),
    ("15", [('mask=inside, other=float("-inf"))', "mask=inside, other=0.0)"),
            ("mask=inside, other=0) != 0", "mask=inside, other=1) != 0")], "lanes past the end of the row"),
    ("15", [("e = tl.exp(x - tl.max(x, axis=0))", "e = tl.exp(x)")], "subtract the row's max"),
    # 16 Triton: 3x3 depthwise conv
    ("16", [("yy = y + i - 1", "yy = y + i"), ("xx = x + j - 1", "xx = x + j")], "the taps are centred"),
    ("16", [("(i * 3 + j) * C + c, mask=channel_in", "((2 - i) * 3 + (2 - j)) * C + c, mask=channel_in")],
     "no kernel flip"),
    ("16", [("y = p // W\n    x = p % W", "y = p // H\n    x = p % H")], "y = p // W and x = p % W"),
]


def _mutated(number: str, edits, folder: Path) -> Path:
    """The solution of ``number`` with ``edits`` made, written into ``folder`` under the exercise's file name."""
    exercise = EXERCISES[number]
    source = (SOLUTIONS / exercise.file).read_text(encoding="utf-8")
    for old, new in edits:
        assert source.count(old) == 1, f"exercise {number}'s solution has {source.count(old)} copies of {old!r}"
        source = source.replace(old, new)
    (folder / exercise.file).write_text(source, encoding="utf-8")
    return folder


def test_there_are_sixteen_exercises_each_with_a_stub_a_solution_and_a_docs_page():
    assert sorted(EXERCISES) == [f"{n:02d}" for n in range(1, 17)]
    for number, exercise in EXERCISES.items():
        assert exercise.file.startswith(f"{number}_"), exercise.file
        assert (FOLDER / exercise.file).is_file() and (SOLUTIONS / exercise.file).is_file(), exercise.file
        assert (ROOT / exercise.docs_path.split("#")[0]).is_file(), exercise.docs_path
    stray = {p.name for p in FOLDER.glob("*.py")} ^ {e.file for e in EXERCISES.values()}
    assert not stray, f"files in tutorials/exercises/ that are not exercises (or exercises without a file): {stray}"
    assert {p.name for p in SOLUTIONS.glob("*.py")} == {e.file for e in EXERCISES.values()}


def _definitions(path: Path) -> tuple[ast.Module, dict[str, ast.AST]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    named = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            named[node.name] = node
        elif isinstance(node, (ast.Assign, ast.Import, ast.ImportFrom)):
            named[ast.unparse(node)] = node
    return tree, named


@pytest.mark.parametrize("number", sorted(EXERCISES))
def test_the_stub_is_the_solution_with_the_body_left_out(number):
    """What the student edits is exactly the solution's file, but for the body of one function: the
    same module docstring, imports, constants and launcher, the same signature and docstring."""
    exercise = EXERCISES[number]
    written = exercise.writes or exercise.function
    stub, stub_defs = _definitions(FOLDER / exercise.file)
    solution, solution_defs = _definitions(SOLUTIONS / exercise.file)
    assert ast.get_docstring(stub) == ast.get_docstring(solution)
    assert f"minialign exercise check {number}" in ast.get_docstring(stub)
    assert "docs/" in ast.get_docstring(stub)
    assert set(stub_defs) == set(solution_defs)
    for name, node in stub_defs.items():
        other = solution_defs[name]
        if name != written:
            assert ast.dump(node) == ast.dump(other), f"{name} differs between the stub and the solution"
            continue
        assert ast.unparse(node.args) == ast.unparse(other.args)
        assert (node.returns and ast.unparse(node.returns)) == (other.returns and ast.unparse(other.returns))
        assert [ast.dump(d) for d in node.decorator_list] == [ast.dump(d) for d in other.decorator_list]
        assert ast.get_docstring(node) == ast.get_docstring(other)
        body = node.body[1:]  # after the docstring: only the raise
        assert len(body) == 1 and isinstance(body[0], ast.Raise) and "NotImplementedError" in ast.unparse(body[0])
    # the shapes in a comment on the signature line, or on the line under it
    lines = (FOLDER / exercise.file).read_text(encoding="utf-8").splitlines()
    signature = stub_defs[exercise.function]
    head = lines[signature.lineno - 1:signature.body[0].lineno - 1]
    assert any("#" in line and "->" in line.split("#", 1)[1] for line in head), head


@pytest.mark.parametrize("number", sorted(EXERCISES))
def test_the_solution_passes(number):
    result = check_exercise(number, SOLUTIONS)
    assert result.passed, result.text()
    text = result.text()
    assert "matches " in text
    for reference in EXERCISES[number].also:  # torch is a dev dependency: every reference ran
        assert f"matches {reference.name}" in text, text


@pytest.mark.parametrize("number", sorted(EXERCISES))
def test_the_untouched_stub_is_not_implemented_yet(number):
    result = check_exercise(number, FOLDER)
    assert result.status == "not implemented", result.text()
    assert "not implemented yet" in result.text() and "Traceback" not in result.text()
    assert f"minialign exercise check {number}" in result.text()


@pytest.mark.parametrize("number, edits, hint", MUTATIONS,
                         ids=[f"{m[0]}-{i}" for i, m in enumerate(MUTATIONS)])
def test_a_known_mistake_fails_with_its_hint(number, edits, hint, tmp_path):
    result = check_exercise(number, _mutated(number, edits, tmp_path))
    text = result.text()
    assert not result.passed, text
    assert "hint: " in text and hint in text, text
    assert f"read: {EXERCISES[number].docs_path}" in text


def test_every_exercise_with_hints_has_a_mistake_tested():
    tested = {number for number, _, _ in MUTATIONS}
    assert tested == {number for number, e in EXERCISES.items() if e.mistakes}
    assert all(e.mistakes for e in EXERCISES.values())


def test_a_wrong_value_is_reported_with_its_index_both_values_and_the_max_error(tmp_path):
    folder = _mutated("06", [(" / np.sqrt(d)", "")], tmp_path)
    text = check_exercise("06", folder).text()
    assert "wrong on case 1 of 4 (B=2, h=3, T=5, S=7, d=4" in text
    assert "elements differ beyond atol=1e-05, rtol=1e-05; max abs error" in text
    assert "first wrong element out[0, 0, 0, " in text and "yours " in text and ", expected " in text


def test_a_wrong_shape_names_both_shapes(tmp_path):
    folder = _mutated("05", [("dweight = (dy * x_hat).reshape(-1, H).sum(axis=0)", "dweight = dy * x_hat")], tmp_path)
    text = check_exercise("05", folder).text()
    assert "dweight: shape (4, 7), expected (7,)" in text, text


def test_a_function_that_raises_gets_the_line_that_raised(tmp_path):
    folder = _mutated("09", [("x_pad[b, y * stride + i, x_ * stride + j, c]",
                              "x_pad[b, y * stride + i + 9, x_ * stride + j, c]")], tmp_path)
    result = check_exercise("09", folder)
    text = result.text()
    assert result.status == "raised" and "Traceback" not in text
    assert "your function raised on case 1 of 5" in text and "IndexError: index" in text
    assert "at 09_depthwise_conv.py, line " in text and "x_pad[b, y * stride + i + 9" in text


def test_the_wrong_broadcast_raises_with_its_hint(tmp_path):
    folder = _mutated("08", [("conv_weight * scale[:, None, None, None]", "conv_weight * scale")], tmp_path)
    text = check_exercise("08", folder).text()
    assert "ValueError: operands could not be broadcast" in text and "scale each OUTPUT channel" in text


@pytest.mark.parametrize("body, message", [
    ("    pass\n", "your function returned None on case 1 of 4"),
    ("    return dy\n", "your function returned one ndarray; expected a tuple of 3: (dx, dweight, dbias)"),
])
def test_odd_return_values(body, message, tmp_path):
    source = (FOLDER / EXERCISES["05"].file).read_text(encoding="utf-8")
    source = source.replace('    raise NotImplementedError("exercise 05: write layer_norm_backward")\n', body)
    (tmp_path / EXERCISES["05"].file).write_text(source, encoding="utf-8")
    text = check_exercise("05", tmp_path).text()
    assert message in text, text


def test_a_file_that_does_not_import(tmp_path):
    (tmp_path / EXERCISES["03"].file).write_text("def gelu(x):\n    return x +\n", encoding="utf-8")
    result = check_exercise("03", tmp_path)
    assert result.status == "raised" and "does not import: SyntaxError" in result.text()
    assert "03_gelu.py, line 2" in result.text()


def test_the_command_from_the_repository_root(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main(["exercise", "check", "03"]) == 1  # the untouched stub
    captured = capsys.readouterr()
    assert "exercise 03 (GELU, exact): not implemented yet." in captured.out and not captured.err
    assert main(["exercise", "check", "3", "--dir", str(SOLUTIONS), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "passed" and report["exercise"] == "03"
    assert main(["exercise", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["number"] for r in rows] == sorted(EXERCISES) and all((ROOT / r["file"]).is_file() for r in rows)
    assert main(["exercise", "list"]) == 0
    assert capsys.readouterr().out.count("tutorials/exercises/") == len(EXERCISES)


@pytest.mark.parametrize("argv, message", [
    (["exercise", "check", "17"], "unknown exercise '17': the exercises are 01 to 16"),
    (["exercise", "check", "five"], "unknown exercise 'five'"),
    (["exercise", "check", "05", "--dir", "MISSING"], "is not a folder"),
    (["exercise", "check", "05", "--dir", "EMPTY"], "holds none of the exercise files"),
    (["exercise", "check", "05", "--dir", "ONLY_03"], "exercise 05: no file"),
    (["exercise", "check", "05"], "no exercises folder here: run from the repository root"),
    (["exercise"], "the following arguments are required: ACTION"),
])
def test_setup_problems_are_one_line_exit_2(argv, message, tmp_path, monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / EXERCISES["03"].file).write_text("", encoding="utf-8")
    places = {"MISSING": str(tmp_path / "missing"), "EMPTY": str(tmp_path / "empty"), "ONLY_03": str(tmp_path / "only")}
    monkeypatch.chdir(tmp_path)  # no tutorials/exercises here
    assert main([places.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("minialign exercise: error:"), err


def test_the_installed_command_finds_the_exercises_from_the_repository_root():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "minialign", "exercise", "check", "01"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "not implemented yet" in done.stdout and "Traceback" not in done.stdout + done.stderr


def test_the_docs_page_lists_every_exercise_and_shows_a_real_report(tmp_path):
    """docs/exercises.md: a row per exercise (its title, what it teaches, its page), the count of
    known mistakes CI checks, and the example report exactly as the checker prints it."""
    page = (ROOT / "docs" / "exercises.md").read_text(encoding="utf-8")
    rows = [line for line in page.splitlines() if line[:2] == "| " and line[2:4].isdigit()]
    assert [row[2:4] for row in rows] == sorted(EXERCISES)
    for row, exercise in zip(rows, EXERCISES.values()):
        assert row.startswith(f"| {exercise.number} | {exercise.title} | {exercise.teaches} | [")
        assert row.endswith(f"]({exercise.docs}) |"), row
    assert page.startswith("# Exercises\n\nSixteen exercises") and len(EXERCISES) == 16
    assert f"and on {len(MUTATIONS)} known mistakes" in " ".join(page.split())
    report = check_exercise("06", _mutated("06", [(" / np.sqrt(d)", "")], tmp_path)).text()
    assert f"```text\n{report}\n```" in page


def test_every_page_an_exercise_goes_with_points_to_it():
    for exercise in EXERCISES.values():
        page = (ROOT / exercise.docs_path.split("#")[0]).read_text(encoding="utf-8")
        line = next((line for line in page.splitlines() if line.startswith("Exercise: ")), None)
        assert line is not None and "exercises.md)" in line, exercise.docs
        assert exercise.number in line or exercise.number.lstrip("0") in line, (exercise.number, line)
