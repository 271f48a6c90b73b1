"""CUDA graphs (minialign/cuda_graphs.py): which call runs eagerly, which captures, which replays.

CI has no GPU, so the capture step is replaced by ``fake_capture``: a stand-in with CUDA graphs'
semantics that matter here -- replay re-runs the captured work reading the *captured* input
tensors and writing the *captured* output tensors. A GraphedForward that forgot to copy a call's
inputs in would then return the previous call's answer, and one that returned the graph's own
outputs would see them overwritten by the next replay: both fail below. On a GPU the last test
captures for real. What the stand-in cannot show is speed, or that capture itself succeeds on a
GPU: benchmarks/run_gpu.sh checks both.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("triton", reason="the triton backend needs the triton package (the dev extra installs it)")

import torch  # noqa: E402

from helpers import TOLERANCES, assert_close  # noqa: E402
from minialign import AlignModel, AlignProcessor, pipeline  # noqa: E402
from minialign.backends import get_ops  # noqa: E402
from minialign.cuda_graphs import CudaCapture, GraphedForward  # noqa: E402
from reference import align_checkpoint  # noqa: E402

TOL = TOLERANCES["float32_model"]


class FakeGraph:
    """A captured forward on the CPU: replay runs it again on the captured inputs and copies the
    results into the captured outputs, as a CUDA graph's kernels would write them."""

    def __init__(self, fn, inputs, outputs):
        self.fn, self.inputs, self.outputs = fn, inputs, outputs
        self.replays = 0

    def replay(self):
        self.replays += 1
        for static, new in zip(self.outputs, self.fn(*self.inputs)):
            static.copy_(new)


class FakeCapture:
    """``capture(fn, inputs) -> (graph, outputs)`` like CudaCapture, keeping every graph it made."""

    def __init__(self):
        self.graphs: list[FakeGraph] = []

    def __call__(self, fn, inputs):
        outputs = tuple(fn(*inputs))  # a capture records this run (on a GPU it is not executed)
        self.graphs.append(FakeGraph(fn, inputs, outputs))
        return self.graphs[-1], outputs


def _double_and_sum(x, y):  # [B, n], [n] -> ([B, n], [n])
    return x * 2 + y, x.sum(0)


def test_first_call_eager_second_captures_then_replays():
    capture = FakeCapture()
    forward = GraphedForward(_double_and_sum, capture=capture)
    y = torch.ones(3)
    for call in range(4):
        x = torch.full((2, 3), float(call))
        out, total = forward(x, y)
        expected = _double_and_sum(x, y)
        torch.testing.assert_close(out, expected[0], rtol=0, atol=0)  # this call's inputs, not the captured ones
        torch.testing.assert_close(total, expected[1], rtol=0, atol=0)
        assert len(capture.graphs) == (0 if call == 0 else 1), f"call {call}"
    assert capture.graphs[0].replays == 3  # calls 1 (just captured), 2 and 3


def test_outputs_survive_the_next_replay():
    forward = GraphedForward(_double_and_sum, capture=FakeCapture())
    y = torch.zeros(3)
    forward(torch.zeros(2, 3), y)
    forward(torch.zeros(2, 3), y)  # captured
    kept, _ = forward(torch.ones(2, 3), y)
    forward(torch.full((2, 3), 5.0), y)
    torch.testing.assert_close(kept, torch.full((2, 3), 2.0), rtol=0, atol=0)


def test_graphs_are_keyed_on_shape_and_dtype():
    capture = FakeCapture()
    forward = GraphedForward(_double_and_sum, capture=capture, max_graphs=2)
    inputs = {"2x3": (torch.ones(2, 3), torch.ones(3)), "4x3": (torch.ones(4, 3), torch.ones(3)),
              "2x3 float64": (torch.ones(2, 3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))}
    for name in ("2x3", "4x3", "2x3", "4x3"):  # each new shape: eager, then captured on its next call
        forward(*inputs[name])
    assert [g.inputs[0].shape for g in capture.graphs] == [(2, 3), (4, 3)]
    for _ in range(3):  # a third key, past max_graphs=2: stays eager, still right
        out, _ = forward(*inputs["2x3 float64"])
        assert out.dtype == torch.float64
    assert len(capture.graphs) == 2 and len(forward.captured) == 2
    forward.clear()
    forward(*inputs["2x3"])
    assert forward.captured == {}  # eager again after clear()


def test_cuda_graphs_need_a_cuda_device():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal is for machines without it")
    with pytest.raises(ValueError, match="cuda_graphs=True needs a CUDA device"):
        get_ops("triton", cuda_graphs=True)
    with pytest.raises(ValueError, match="cuda_graphs=True needs backend='triton'"):
        get_ops("numpy", cuda_graphs=True)


@pytest.fixture(scope="module")
def tiny_align(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-align-graphs")
    align_checkpoint(directory, seed=5, temperature=0.1, projection_dim=80,
                     text=dict(hidden_size=32, num_attention_heads=2, num_hidden_layers=2, intermediate_size=48),
                     vision=dict(width_coefficient=0.25, depth_coefficient=0.2, hidden_dim=64))
    path = directory / "preprocessor_config.json"  # 33x33 images: the interpreter is slow
    config = json.loads(path.read_text())
    config.update(size={"height": 37, "width": 37}, crop_size={"height": 33, "width": 33})
    path.write_text(json.dumps(config))
    return directory


def test_zero_shot_path_replays_graphs(tiny_align):
    """AlignModel.get_image_features / get_text_features and the pipeline on towers whose forward
    is a GraphedForward (as ``cuda_graphs=True`` builds them), the capture step faked: the same
    scores as the eager model, call after call, and the graphs are replayed."""
    eager = AlignModel.from_pretrained(tiny_align, backend="triton")
    ops = get_ops("triton")
    ops.cuda_graphs = True  # what cuda_graphs=True sets on a GPU; the capture is faked below
    graphed = AlignModel(eager.config, {**eager.params, **eager.passthrough}, ops=ops)
    towers = (graphed.vision_model, graphed.text_model)
    assert all(isinstance(t.graphs, GraphedForward) and isinstance(t.graphs.capture, CudaCapture) for t in towers)
    assert eager.vision_model.graphs is None and eager.text_model.graphs is None
    captures = {t: FakeCapture() for t in towers}
    for t in towers:
        t.graphs.capture = captures[t]

    processor = AlignProcessor.from_pretrained(tiny_align)
    classify = {name: pipeline("zero-shot-image-classification", model=m, processor=processor)
                for name, m in (("eager", eager), ("graphed", graphed))}
    rng = np.random.default_rng(3)
    for call in range(3):
        # The pipeline caches each list of labels' embeddings: a new order is a new text forward
        # of the same shape (eager, captured, replayed).
        labels = ["car", "dog", "tree"][call:] + ["car", "dog", "tree"][:call]
        image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        got = {r["label"]: r["score"] for r in classify["graphed"](image, labels)}
        want = {r["label"]: r["score"] for r in classify["eager"](image, labels)}
        assert_close([got[k] for k in labels], [want[k] for k in labels], atol=1e-4, rtol=0,
                     name=f"pipeline scores, call {call}")
    pixels = processor(images=[rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)])["pixel_values"]
    assert_close(graphed.get_image_features(pixels), eager.get_image_features(pixels), **TOL,
                 name="get_image_features")  # replayed: the pipeline's calls captured this shape
    for call, texts in enumerate((["a red car", "a dog"], ["a dog", "a red car"], ["a red tree", "a car"])):
        tokens = processor(text=texts, padding="longest")
        assert_close(graphed.get_text_features(tokens["input_ids"], tokens["attention_mask"]),
                     eager.get_text_features(tokens["input_ids"], tokens["attention_mask"]), **TOL,
                     name=f"get_text_features, call {call}")
    vision_graphs = captures[graphed.vision_model].graphs
    assert len(vision_graphs) == 1 and vision_graphs[0].replays == 3  # one image shape: calls 2, 3 and the last
    text_graphs = captures[graphed.text_model].graphs
    assert len(text_graphs) == 2 and all(g.replays for g in text_graphs)  # the labels' shape and the texts'
    # Hidden states come from an eager forward: a graph keeps only the tower's final outputs.
    out = graphed.vision_model(pixels, output_hidden_states=True)
    assert len(out.hidden_states) == len(graphed.vision_model.blocks) + 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="capturing a real CUDA graph needs a CUDA GPU")
def test_real_cuda_graph_matches_eager(tiny_align):
    eager = AlignModel.from_pretrained(tiny_align, backend="triton")
    graphed = AlignModel.from_pretrained(tiny_align, backend="triton", cuda_graphs=True)
    rng = np.random.default_rng(4)
    for call in range(3):
        pixels = rng.uniform(-1, 1, (2, 3, 33, 33)).astype(np.float32)
        assert_close(graphed.get_image_features(pixels), eager.get_image_features(pixels), **TOL,
                     name=f"image features, call {call}")
    assert len(graphed.vision_model.graphs.captured) == 1
