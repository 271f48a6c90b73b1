"""Retrieval: recall@k against hand-worked numbers and a brute force, and the folder index end to end."""

import dataclasses
import io
import os
import struct
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import reference
from helpers import assert_close
from minialign import AlignModel, AlignProcessor, CheckpointError
from minialign import retrieval
from minialign.retrieval import (
    INDEX_FORMAT, Index, embed_folder, embed_images, embed_texts, evaluate_retrieval, load_index,
    model_fingerprint, retrieval_metrics, retrieval_metrics_from_scores, save_index, search, search_image,
    search_text,
)

# The same image embedded in batches of other sizes: BLAS may sum the float32 products in another
# order, so embeddings (entries ~0.2) differ by a few ulps; measured up to 1.3e-6.
EMBED_TOL = dict(atol=1e-5, rtol=0.0)


# -- recall@k, CLIP_benchmark's definitions -------------------------------------------------------


def test_recall_hand_case_with_two_captions_and_ties():
    # Images A=0, B=1, C=2; captions t0, t1 describe A (two captions), t2 describes B, t3 describes C.
    scores = np.array([
        #  A    B    C
        [0.2, 0.6, 0.1],  # t0 -> A
        [0.5, 0.4, 0.5],  # t1 -> A   (A ties C)
        [0.6, 0.6, 0.3],  # t2 -> B   (B ties A)
        [0.1, 0.2, 0.8],  # t3 -> C
    ], dtype=np.float32)
    text_to_image = [0, 0, 1, 2]
    # Captions query images (rows); rank = position of the caption's image, ties to the lower index:
    #   t0: B .6 > A .2                    -> A at rank 1
    #   t1: A .5 = C .5, A has lower index -> A at rank 0
    #   t2: A .6 = B .6, A has lower index -> B at rank 1
    #   t3: C .8 is the largest            -> C at rank 0
    #   image_retrieval_recall@1 = 2/4, @2 = 4/4, @10 = 1 (k beyond 3 images retrieves all of them)
    # Images query captions (columns); a hit needs ANY of the image's captions in the top k:
    #   A: t2 .6, t1 .5, t0 .2, t3 .1       -> captions t0 (rank 2), t1 (rank 1): best rank 1
    #   B: t0 .6 = t2 .6, t0 has lower index -> t2 at rank 1
    #   C: t3 .8 is the largest             -> t3 at rank 0
    #   text_retrieval_recall@1 = 1/3, @2 = 3/3 (t0 alone would have missed A at k = 2), @10 = 1
    # (Breaking ties the other way would give image@1 = 1/4 and text@1 = 2/3.)
    metrics = retrieval_metrics_from_scores(scores, text_to_image, ks=(1, 2, 10))
    assert metrics == {
        "image_retrieval_recall@1": 0.5, "text_retrieval_recall@1": 1 / 3,
        "image_retrieval_recall@2": 1.0, "text_retrieval_recall@2": 1.0,
        "image_retrieval_recall@10": 1.0, "text_retrieval_recall@10": 1.0,
    }


def test_recall_from_embeddings_hand_case():
    # Unit images e0, e1. Caption 0 (of image 0) points at e1, caption 1 (of image 1) too: both
    # captions retrieve image 1 first, and image 1 ranks caption 1 (score 1) above caption 0
    # (0.8 after normalising [0.6, 0.8]). image_retrieval@1 = 1/2; image 0 sees caption 0 at 0.6
    # above caption 1 at 0, so text_retrieval@1 = 2/2. Scaling a row changes nothing.
    images = np.array([[1.0, 0.0], [0.0, 3.0]], np.float32)
    texts = np.array([[3.0, 4.0], [0.0, 0.5]], np.float32)
    metrics = retrieval_metrics(images, texts, [0, 1], ks=(1, 2))
    assert metrics == {"image_retrieval_recall@1": 0.5, "text_retrieval_recall@1": 1.0,
                       "image_retrieval_recall@2": 1.0, "text_retrieval_recall@2": 1.0}


def _brute_force_recall(scores, text_to_image, ks):
    """CLIP_benchmark's recall, one query at a time: top k by (score descending, index ascending),
    then nb_true_positive / nb_positive > 0, averaged over queries."""
    n_texts, n_images = scores.shape
    metrics = {}
    for k in ks:
        hits = []
        for t in range(n_texts):
            top = sorted(range(n_images), key=lambda i: (-scores[t, i], i))[:k]
            hits.append(text_to_image[t] in top)
        metrics[f"image_retrieval_recall@{k}"] = sum(hits) / n_texts
        hits = []
        for i in range(n_images):
            top = sorted(range(n_texts), key=lambda t: (-scores[t, i], t))[:k]
            captions = [t for t in range(n_texts) if text_to_image[t] == i]
            hits.append(sum(t in top for t in captions) / len(captions) > 0)
        metrics[f"text_retrieval_recall@{k}"] = sum(hits) / n_images
    return metrics


def _torch_topk_recall(scores, text_to_image, ks):
    """The same with torch.topk on the positive-pair matrix, as CLIP_benchmark does (k clamped)."""
    import torch

    s = torch.from_numpy(scores)
    positives = torch.zeros(s.shape, dtype=torch.bool)
    positives[torch.arange(len(text_to_image)), torch.tensor(text_to_image)] = True
    metrics = {}
    for k in ks:
        for name, sc, pos in [("image", s, positives), ("text", s.T, positives.T)]:
            top = torch.topk(sc, min(k, sc.shape[1]), dim=1).indices
            metrics[f"{name}_retrieval_recall@{k}"] = pos.gather(1, top).any(dim=1).float().mean().item()
    return metrics


@given(n_images=st.integers(1, 7), extra_captions=st.integers(0, 9), tied=st.booleans(), seed=st.integers(0, 2**31))
def test_recall_matches_brute_force(n_images, extra_captions, tied, seed):
    rng = np.random.default_rng(seed)
    # every image gets a caption, some get more; captions in random order
    text_to_image = rng.permutation(np.concatenate([np.arange(n_images), rng.integers(0, n_images, extra_captions)]))
    shape = (len(text_to_image), n_images)
    # tied: scores from {0, 1/4, 1/2} so that most rows and columns hold ties
    scores = (rng.integers(0, 3, shape) / 4 if tied else rng.standard_normal(shape)).astype(np.float32)
    ks = (1, 2, 3, 5, 10)
    ours = retrieval_metrics_from_scores(scores, text_to_image.tolist(), ks)
    assert ours == _brute_force_recall(scores, text_to_image.tolist(), ks)
    if not tied:  # torch.topk orders ties arbitrarily; without ties it must agree exactly
        assert ours == pytest.approx(_torch_topk_recall(scores, text_to_image.tolist(), ks), abs=1e-7)


@given(n_images=st.integers(1, 6), n_texts=st.integers(6, 12), seed=st.integers(0, 2**31))
def test_retrieval_metrics_is_cosine_recall(n_images, n_texts, seed):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n_images, 5)).astype(np.float32)
    texts = rng.standard_normal((n_texts, 5)).astype(np.float32)
    text_to_image = [t % n_images for t in range(n_texts)]
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    expected = retrieval_metrics_from_scores(unit(texts) @ unit(images).T, text_to_image)
    assert retrieval_metrics(images, texts, text_to_image) == expected
    assert set(expected) == {f"{d}_retrieval_recall@{k}" for d in ("image", "text") for k in (1, 5, 10)}


def test_recall_bad_inputs():
    scores = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match=r"images \[1\] have no caption"):
        retrieval_metrics_from_scores(scores, [0, 0, 0])
    with pytest.raises(ValueError, match="outside 0..1"):
        retrieval_metrics_from_scores(scores, [0, 1, 2])
    with pytest.raises(ValueError, match="must be 3 integers"):
        retrieval_metrics_from_scores(scores, [0, 1])
    with pytest.raises(ValueError, match="every k must be >= 1"):
        retrieval_metrics_from_scores(scores, [0, 1, 1], ks=(0,))
    with pytest.raises(ValueError, match="must share D"):
        retrieval_metrics(np.ones((2, 3)), np.ones((3, 4)), [0, 1, 1])


# -- a tiny ALIGN model and a folder of images ----------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, processor) of a tiny random ALIGN, its processor cropping to 32x32 to keep it fast.

    With reference.py's weight scale the 0.1-width vision tower loses its input: every image gets
    nearly the same embedding (cosine > 0.9999998), useless for search. Conv kernels x3 keep the
    images apart (pairwise cosines <= ~0.95).
    """
    directory = tmp_path_factory.mktemp("tiny-align")
    text = dict(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    vision = dict(width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=16)
    reference.align_checkpoint(directory, seed=3, projection_dim=32, text=text, vision=vision)  # 32 = vision width
    loaded = AlignModel.from_pretrained(directory)
    state = {**loaded.params, **loaded.passthrough}
    model = AlignModel(loaded.config, {k: v * 3 if v.ndim == 4 else v for k, v in state.items()})
    processor = AlignProcessor.from_pretrained(directory)
    processor.image_processor = dataclasses.replace(processor.image_processor, size={"height": 40, "width": 40},
                                                    crop_size={"height": 32, "width": 32})
    return model, processor


def _image(seed: int) -> Image.Image:
    """A distinct small picture per seed: noise over a coloured gradient, of a seed-dependent size."""
    rng = np.random.default_rng(seed)
    h, w = 30 + seed % 7, 40 + seed % 5
    gradient = np.linspace(0, 1, w)[None, :, None] * rng.integers(0, 256, 3)  # [1, w, 3]
    noise = rng.integers(0, 256, (h, w, 3)) * rng.uniform(0.2, 1.0)
    return Image.fromarray(np.clip(0.5 * gradient + 0.5 * noise, 0, 255).astype(np.uint8))


def _write(folder, relative: str, seed: int) -> None:
    path = os.path.join(folder, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _image(seed).save(path, format="JPEG" if relative.lower().endswith((".jpg", ".jpeg")) else "PNG")


GOOD = ["C.PNG", "a.png", "b.jpg", "sub/d.png", "sub/deep/e.jpeg"]  # sorted: upper case first


@pytest.fixture
def folder(tmp_path):
    """Five readable images (one in a sub-sub-folder), a truncated JPEG, a text file named .png
    and a .txt file (not an image name: ignored)."""
    root = tmp_path / "images"
    for seed, relative in enumerate(GOOD):
        _write(root, relative, seed)
    buffer = io.BytesIO()
    _image(9).save(buffer, format="JPEG")
    (root / "sub" / "broken.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (root / "fake.png").write_text("not an image\n")
    (root / "notes.txt").write_text("ignored\n")
    return root


def test_embed_folder_then_search(tiny, folder, tmp_path):
    model, processor = tiny
    index_path = tmp_path / "index.safetensors"
    report = embed_folder(model, processor, folder, index_path, batch_size=2, model_id="tiny", progress=False)
    assert (report.embedded, report.already_indexed, report.total, report.stale) == (5, 0, 5, 0)
    assert [path for path, _ in report.failed] == ["fake.png", "sub/broken.jpg"]
    assert "cannot read the file as an image" in report.failed[0][1]
    assert "truncated" in report.failed[1][1].lower()
    assert "2 failed" in report.summary() and "sub/broken.jpg" in report.summary()

    index = load_index(index_path)
    assert index.paths == GOOD and index.model_id == "tiny" and index.embeddings.shape == (5, 32)
    expected = embed_images(model, processor, [str(folder / p) for p in GOOD])
    assert_close(index.embeddings, expected, **EMBED_TOL, name="indexed embeddings")
    assert_close(np.linalg.norm(index.embeddings, axis=1), np.ones(5), atol=1e-6, rtol=0, name="norms")

    for row, path in enumerate(GOOD):  # an indexed image's own embedding finds it first
        best = search(index, index.embeddings[row] * 7.0, k=2)  # the query is normalised
        assert best[0]["path"] == path and best[0]["score"] == pytest.approx(1.0, abs=1e-6)
        assert best[1]["score"] < 0.999
    best = search_image(model, processor, index, str(folder / "sub/d.png"), k=1)
    assert best[0]["path"] == "sub/d.png" and best[0]["score"] == pytest.approx(1.0, abs=1e-5)

    results = search_text(model, processor, index, "a red car near the beach", k=3)
    scores = [r["score"] for r in results]
    assert len(results) == 3 and scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    text_embedding = embed_texts(model, processor, ["a red car near the beach"])[0]
    assert_close(scores, np.sort(index.embeddings @ text_embedding)[::-1][:3], atol=1e-6, rtol=0, name="scores")


def test_search_k_bounds_ties_and_shapes():
    rows = np.array([[1, 0], [0, 1], [1, 0]], np.float32)
    index = Index(rows, ["x", "y", "z"], "m")
    assert [r["path"] for r in search(index, np.array([2.0, 0.0]), k=10)] == ["x", "z", "y"]  # all; tie: x before z
    assert [r["path"] for r in search(index, np.array([[0.0, 1.0]]), k=1)] == ["y"]
    # 40 rows alternating x, y: 20 tied scores of each kind, which NumPy's default (unstable) sort reorders
    many = Index(rows[np.arange(40) % 2], [f"{i:02d}" for i in range(40)], "m")
    expected = many.paths[0::2] + many.paths[1::2]
    assert [r["path"] for r in search(many, np.array([1.0, 0.0]), k=40)] == expected
    with pytest.raises(ValueError, match="k must be at least 1"):
        search(index, np.array([1.0, 0.0]), k=0)
    with pytest.raises(ValueError, match=r"shape \[2\]"):
        search(index, np.ones(3), k=1)
    with pytest.raises(ValueError, match="zero or non-finite"):
        search(index, np.zeros(2), k=1)
    with pytest.raises(ValueError, match="the index is empty"):
        search(Index(np.zeros((0, 2), np.float32), [], "m"), np.ones(2))


def test_empty_folder_gives_an_empty_index(tiny, tmp_path):
    model, processor = tiny
    (tmp_path / "empty").mkdir()
    index_path = tmp_path / "i.safetensors"
    report = embed_folder(model, processor, tmp_path / "empty", index_path, model_id="m", progress=False)
    assert report.total == 0
    index = load_index(index_path)
    assert index.embeddings.shape == (0, 32) and index.paths == []
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        embed_folder(model, processor, tmp_path / "nowhere", tmp_path / "i.safetensors", model_id="m")


# -- resuming ------------------------------------------------------------------------------------


class _Watched:
    """Wraps the model: ``on_call(n)`` runs before the n-th ``get_image_features`` (n from 1)."""

    def __init__(self, model, on_call):
        self.model, self.on_call, self.calls, self.config = model, on_call, 0, model.config

    def get_image_features(self, pixel_values):
        self.calls += 1
        self.on_call(self.calls)
        return self.model.get_image_features(pixel_values)


def _assert_same_index(a: Index, b: Index) -> None:
    assert a.paths == b.paths and a.model_id == b.model_id
    assert_close(a.embeddings, b.embeddings, **EMBED_TOL, name="embeddings")


def test_resume_after_interrupt_and_after_new_files(tiny, tmp_path):
    model, processor = tiny
    root = tmp_path / "images"
    names = [f"{c}.png" for c in "bdfhj"]
    for seed, name in enumerate(names):
        _write(root, name, seed)
    full_path = tmp_path / "full.safetensors"
    embed_folder(model, processor, root, full_path, batch_size=2, model_id="m", progress=False)

    # Ctrl-C during the second batch: the first batch is saved on the way out.
    def interrupt(call):
        if call == 2:
            raise KeyboardInterrupt

    index_path = tmp_path / "resumed.safetensors"
    with pytest.raises(KeyboardInterrupt):
        embed_folder(_Watched(model, interrupt), processor, root, index_path, batch_size=2, model_id="m",
                     progress=False, checkpoint_every=100)
    assert load_index(index_path).paths == ["b.png", "d.png"]
    report = embed_folder(model, processor, root, index_path, batch_size=2, model_id="m", progress=False)
    assert (report.embedded, report.already_indexed, report.total) == (3, 2, 5)
    _assert_same_index(load_index(index_path), load_index(full_path))

    # New files, one sorting before every old one: only they are embedded; rows stay path-sorted.
    for seed, name in [(10, "a.png"), (11, "sub/g.png")]:
        _write(root, name, seed)
    report = embed_folder(model, processor, root, index_path, batch_size=2, model_id="m", progress=False)
    assert (report.embedded, report.already_indexed, report.total) == (2, 5, 7)
    embed_folder(model, processor, root, tmp_path / "full2.safetensors", batch_size=3, model_id="m", progress=False)
    _assert_same_index(load_index(index_path), load_index(tmp_path / "full2.safetensors"))

    # A file that disappeared keeps its row and is counted.
    os.remove(root / "d.png")
    report = embed_folder(model, processor, root, index_path, model_id="m", progress=False)
    assert (report.embedded, report.stale, report.total) == (0, 1, 7)


def test_index_is_written_every_checkpoint_every_batches(tiny, tmp_path):
    model, processor = tiny
    root = tmp_path / "images"
    for seed in range(5):
        _write(root, f"{seed}.png", seed)
    index_path = tmp_path / "index.safetensors"
    seen = []  # rows on disk when each batch starts
    watched = _Watched(model, lambda call: seen.append(len(load_index(index_path)) if index_path.exists() else 0))
    embed_folder(watched, processor, root, index_path, batch_size=1, checkpoint_every=2, model_id="m", progress=False)
    assert seen == [0, 0, 2, 2, 4]
    assert len(load_index(index_path)) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "index.safetensors"]  # no temporary left


def test_resume_with_another_model_is_an_error(tiny, folder, tmp_path):
    model, processor = tiny
    index_path = tmp_path / "index.safetensors"
    embed_folder(model, processor, folder, index_path, progress=False)  # model_id: the weights' fingerprint
    assert load_index(index_path).model_id == model_fingerprint(model)
    assert model_fingerprint(model).startswith("sha256:")
    before = index_path.read_bytes()
    with pytest.raises(ValueError, match=r"holds embeddings from model 'sha256:[0-9a-f]+', not 'other'"):
        embed_folder(model, processor, folder, index_path, model_id="other", progress=False)
    params = dict(model.params)
    params["temperature"] = params["temperature"] + 1.0
    changed = AlignModel(model.config, params)
    assert model_fingerprint(changed) != model_fingerprint(model)
    with pytest.raises(ValueError, match="holds embeddings from model"):
        embed_folder(changed, processor, folder, index_path, progress=False)
    assert index_path.read_bytes() == before  # never overwritten


# -- corrupt index files ----------------------------------------------------------------------------


EYE = np.eye(2, dtype=np.float32)


def _metadata(**override):
    metadata = {"format": INDEX_FORMAT, "version": "1", "model_id": "m", "dim": "2", "count": "2",
                "paths": '["a.png", "b.png"]'}
    return {k: v for k, v in {**metadata, **override}.items() if v is not None}


@pytest.mark.parametrize("name, write, message", [
    ("truncated", lambda p, good: p.write_bytes(good[: len(good) - 5]), "truncated file"),
    ("header only", lambda p, good: p.write_bytes(good[:6]), "truncated safetensors file"),
    ("garbage", lambda p, good: p.write_bytes(bytes(range(256)) * 4), "corrupt or truncated"),
    ("not JSON", lambda p, good: p.write_bytes(struct.pack("<Q", 7) + b"garbage"), "corrupt safetensors header"),
    ("no metadata", lambda p, good: _save(p, EYE, None), "no __metadata__"),
    ("missing keys", lambda p, good: _save(p, EYE, _metadata(paths=None, count=None)),
     r"lacks \['count', 'paths'\]"),
    ("a model checkpoint", lambda p, good: _save(p, EYE, {"format": "pt"}), "lacks"),
    ("other format", lambda p, good: _save(p, EYE, _metadata(format="faiss")), "format is 'faiss'"),
    ("newer version", lambda p, good: _save(p, EYE, _metadata(version="2")), "version '2'"),
    ("wrong count", lambda p, good: _save(p, EYE, _metadata(paths='["a.png"]')), "disagree"),
    ("paths not JSON", lambda p, good: _save(p, EYE, _metadata(paths="a.png")), "not JSON"),
    ("paths not strings", lambda p, good: _save(p, EYE, _metadata(paths="[1, 2]")), "list of strings"),
    ("duplicate paths", lambda p, good: _save(p, EYE, _metadata(paths='["a", "a"]')), "listed twice"),
    ("float64", lambda p, good: _save(p, np.eye(2, dtype=np.float64), _metadata()), "must be float32"),
])
def test_corrupt_index_is_a_clear_error(tmp_path, name, write, message):
    path = tmp_path / "index.safetensors"
    save_index(Index(np.eye(2, dtype=np.float32), ["a.png", "b.png"], "m"), path)
    good = path.read_bytes()
    assert load_index(path).paths == ["a.png", "b.png"]
    write(path, good)
    with pytest.raises(CheckpointError, match=message) as err:
        load_index(path)
    assert str(path) in str(err.value)


def _save(path, embeddings, metadata):
    from safetensors.numpy import save_file

    save_file({"embeddings": embeddings}, str(path), metadata=metadata)


def test_index_round_trip_keeps_any_file_name(tmp_path):
    # non-ASCII, and a Linux name that is not UTF-8 (os.fsdecode gives a lone surrogate)
    paths = ["caf\u00e9/\u732b.png", os.fsdecode(b"raw\xff.jpg"), "z.png"]
    embeddings = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    save_index(Index(embeddings, paths, "kakaobrain/align-base"), tmp_path / "i.safetensors")
    index = load_index(tmp_path / "i.safetensors")
    assert index.paths == paths and index.model_id == "kakaobrain/align-base"
    assert (index.embeddings == embeddings).all()


def test_missing_or_corrupt_index_stops_embedding(tiny, folder, tmp_path):
    model, processor = tiny
    with pytest.raises(CheckpointError, match="index file not found: .*nowhere.safetensors"):
        load_index(tmp_path / "nowhere.safetensors")
    index_path = tmp_path / "index.safetensors"
    index_path.write_bytes(b"\x00" * 3)
    with pytest.raises(CheckpointError, match="truncated"):
        embed_folder(model, processor, folder, index_path, model_id="m", progress=False)
    assert index_path.read_bytes() == b"\x00" * 3  # left for the user to inspect, not overwritten


# -- progress and evaluation ----------------------------------------------------------------------


@pytest.mark.parametrize("have_tqdm", [True, False])
def test_progress_goes_to_stderr(tiny, tmp_path, capsys, monkeypatch, have_tqdm):
    model, processor = tiny
    if not have_tqdm:
        monkeypatch.setitem(sys.modules, "tqdm", None)  # `from tqdm import tqdm` now raises ImportError
    root = tmp_path / "images"
    for seed in range(3):
        _write(root, f"{seed}.png", seed)
    embed_folder(model, processor, root, tmp_path / "i.safetensors", batch_size=2, model_id="m", progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert ("3/3" in err) and (have_tqdm or "embedding: 3/3" in err)


def test_evaluate_retrieval_groups_captions_by_image(tiny, folder, monkeypatch):
    model, processor = tiny
    array = np.asarray(_image(20))
    pairs = [(str(folder / "a.png"), "a red car"), (folder / "b.jpg", "a dog"),
             (os.path.join(str(folder), "sub", "..", "a.png"), "a photo of a car"),  # the same file as pairs[0]
             (array, "a cat"), (array, "a small cat")]  # one array object: one image
    metrics = evaluate_retrieval(model, processor, pairs, batch_size=2)

    images = embed_images(model, processor, [str(folder / "a.png"), str(folder / "b.jpg"), array])
    texts = embed_texts(model, processor, [caption for _, caption in pairs])
    assert metrics == pytest.approx(retrieval_metrics(images, texts, [0, 1, 0, 2, 2]), abs=0)
    captured = {}
    monkeypatch.setattr(retrieval, "retrieval_metrics",
                        lambda i, t, t2i, ks: captured.update(shapes=(i.shape, t.shape), t2i=t2i) or {})
    evaluate_retrieval(model, processor, pairs)
    assert captured == {"shapes": ((3, 32), (5, 32)), "t2i": [0, 1, 0, 2, 2]}
    with pytest.raises(ValueError, match="at least one"):
        evaluate_retrieval(model, processor, [])
