"""Retrieval: recall@k against hand-worked numbers and a brute force, and the folder index end to end."""

import dataclasses
import io
import json
import os
import re
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
    assert str(folder / "fake.png") in report.failed[0][1]  # the reason is image_processing's; it names the file
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


def test_empty_folder_is_an_error_before_any_work(tiny, tmp_path):
    # A folder without image files: nothing to do, most likely a wrong path. The error names the
    # folder and the extensions; it comes before the model is touched (model=None would fail).
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "notes.txt").write_text("not an image\n")
    index_path = tmp_path / "i.safetensors"
    with pytest.raises(ValueError, match=r"no image files in .*empty \(searched recursively.*\.jpg .*\.png"):
        embed_folder(None, None, tmp_path / "empty", index_path, model_id="m", progress=False)
    assert not index_path.exists()
    # The same with an index that already exists: an error, and the index is left as it was.
    model, processor = tiny
    _write(tmp_path / "images", "a.png", 0)
    embed_folder(model, processor, tmp_path / "images", index_path, model_id="m", progress=False)
    before = index_path.read_bytes()
    with pytest.raises(ValueError, match="no image files"):
        embed_folder(model, processor, tmp_path / "empty", index_path, model_id="m", progress=False)
    assert index_path.read_bytes() == before
    with pytest.raises(FileNotFoundError, match="image folder not found: .*nowhere"):
        embed_folder(None, None, tmp_path / "nowhere", index_path, model_id="m")
    with pytest.raises(ValueError, match=r"a\.png is a file, not a folder"):
        embed_folder(None, None, tmp_path / "images" / "a.png", index_path, model_id="m")


def test_output_path_is_checked_before_any_work(folder, tmp_path):
    # model=None: any work (hashing, embedding) would fail with an AttributeError instead.
    missing = tmp_path / "no" / "such" / "dir" / "x.safetensors"
    with pytest.raises(FileNotFoundError, match=f"cannot write the index {missing}: the folder .*dir does not exist"):
        embed_folder(None, None, folder, missing, progress=False)
    with pytest.raises(IsADirectoryError, match=f"the index path {tmp_path} is a folder; give a file name"):
        embed_folder(None, None, folder, tmp_path, progress=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="cannot write the index .*file is a file, not a folder"):
        embed_folder(None, None, folder, tmp_path / "file" / "x.safetensors", progress=False)
    retrieval.check_embed_paths(folder, tmp_path / "ok.safetensors")  # fine, and leaves nothing behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "images"]


def test_output_folder_without_write_permission(folder, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):  # root: chmod does not stop root writing
            pytest.skip("running as root: a read-only folder is still writable")
        with pytest.raises(PermissionError, match=f"cannot write the index {locked}.*cannot create a file in"):
            embed_folder(None, None, folder, locked / "x.safetensors", progress=False)
    finally:
        locked.chmod(0o755)


def _awkward_folder(root):
    """a.png, plus everything a walk can trip on: symlink loops, a looping and a broken file
    symlink, a FIFO named like an image (opening it would block), a symlinked folder named .png."""
    _write(root, "a.png", 0)
    _write(root, "sub/b.png", 1)
    os.symlink(".", root / "loop")  # loop -> the folder itself
    os.symlink("..", root / "sub" / "up")  # sub/up -> back up: a cycle through two folders
    os.symlink("self.png", root / "self.png")  # opening it: ELOOP
    os.symlink("nowhere.png", root / "dangling.png")
    os.symlink("a.png", root / "linked.png")  # a symlinked file: read
    os.symlink("sub", root / "folder.png")  # a symlinked folder: not entered, like loop and sub/up
    os.mkfifo(root / "pipe.png")


def test_symlink_loops_and_odd_entries_are_reported_not_followed(tiny, tmp_path):
    model, processor = tiny
    root = tmp_path / "images"
    _awkward_folder(root)
    problems = []
    assert retrieval.list_images(root, problems=problems) == ["a.png", "linked.png", "sub/b.png"]
    assert retrieval.list_images(root) == ["a.png", "linked.png", "sub/b.png"]  # problems left out
    reasons = dict(problems)
    assert sorted(reasons) == ["dangling.png", "pipe.png", "self.png"]
    assert "broken symbolic link" in reasons["dangling.png"]
    assert "not a regular file" in reasons["pipe.png"]
    assert "too many levels of symbolic links" in reasons["self.png"].lower()

    report = embed_folder(model, processor, root, tmp_path / "i.safetensors", model_id="m", progress=False)
    assert (report.embedded, report.total) == (3, 3)
    assert report.failed == sorted(problems)  # reported with their reason, in path order
    assert "failed: pipe.png: not a regular file" in report.summary()


def test_unreadable_file_and_folder_are_reported(tiny, tmp_path):
    model, processor = tiny
    root = tmp_path / "images"
    _write(root, "a.png", 0)
    _write(root, "locked.png", 1)
    _write(root, "secret/b.png", 2)
    (root / "locked.png").chmod(0o000)
    (root / "secret").chmod(0o000)
    try:
        if os.access(root / "locked.png", os.R_OK):
            pytest.skip("running as root: chmod 000 does not stop root reading (see the simulated test below)")
        report = embed_folder(model, processor, root, tmp_path / "i.safetensors", model_id="m", progress=False)
    finally:
        (root / "secret").chmod(0o755)
        (root / "locked.png").chmod(0o644)
    assert (report.embedded, [path for path, _ in report.failed]) == (1, ["locked.png", "secret/"])
    assert "Permission denied" in report.failed[0][1] and "cannot list the folder" in report.failed[1][1]


def test_unreadable_file_and_folder_are_reported_simulated(tiny, tmp_path, monkeypatch):
    # The same as above, with the permission errors raised by hand, so that it also runs as root.
    model, processor = tiny
    root = tmp_path / "images"
    _write(root, "a.png", 0)
    _write(root, "locked.png", 1)
    _write(root, "secret/b.png", 2)
    real_scandir, real_open = os.scandir, Image.open

    def scandir(path):
        if os.path.basename(os.fspath(path)) == "secret":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    def image_open(path, *args, **kwargs):
        if os.fspath(path).endswith("locked.png"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(Image, "open", image_open)
    report = embed_folder(model, processor, root, tmp_path / "i.safetensors", model_id="m", progress=False)
    assert (report.embedded, [path for path, _ in report.failed]) == (1, ["locked.png", "secret/"])
    assert "Permission denied" in report.failed[0][1]
    assert report.failed[1][1] == "cannot list the folder (Permission denied); images in it are not indexed"
    # A folder whose only images are unreadable: the "no image files" error says what was not read.
    (root / "a.png").unlink()
    os.remove(root / "locked.png")
    with pytest.raises(ValueError, match=r"no image files in .*; not read: secret/ \(cannot list the folder"):
        embed_folder(model, processor, root, tmp_path / "j.safetensors", model_id="m", progress=False)


# -- resuming ------------------------------------------------------------------------------------


class _Watched:
    """Wraps the model: ``on_call(n)`` runs before the n-th ``get_image_features`` (n from 1)."""

    def __init__(self, model, on_call):
        self.model, self.on_call, self.calls, self.config = model, on_call, 0, model.config
        self.params = model.params  # what model_fingerprint hashes

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
    with pytest.raises(KeyboardInterrupt) as interrupted:
        embed_folder(_Watched(model, interrupt), processor, root, index_path, batch_size=2, model_id="m",
                     progress=False, checkpoint_every=100)
    assert load_index(index_path).paths == ["b.png", "d.png"]
    report = interrupted.value.embed_report  # what the command line prints its one line from
    assert (report.interrupted, report.embedded, report.total) == (True, 2, 2)
    saved = f"2 images saved to {index_path}; run the same command again to resume"
    assert str(interrupted.value) == saved and report.summary() == f"interrupted: {saved}"  # the CLI's line
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


def test_interrupt_report_counts_what_the_file_holds(tiny, tmp_path):
    model, processor = tiny
    root = tmp_path / "images"
    for seed in range(3):
        _write(root, f"{seed}.png", seed)
    index_path = tmp_path / "index.safetensors"

    def interrupt(call):
        raise KeyboardInterrupt

    def crash(call):
        raise RuntimeError("boom")

    with pytest.raises(KeyboardInterrupt) as interrupted:  # in the first batch, no index yet
        embed_folder(_Watched(model, interrupt), processor, root, index_path, batch_size=2, model_id="m",
                     progress=False)
    assert not index_path.exists()
    assert str(interrupted.value) == f"no image saved to {index_path} yet; run the same command again"
    embed_folder(model, processor, root, index_path, model_id="m", progress=False)
    _write(root, "new.png", 7)
    with pytest.raises(KeyboardInterrupt) as interrupted:  # nothing new finished: the file keeps its 3 rows
        embed_folder(_Watched(model, interrupt), processor, root, index_path, model_id="m", progress=False)
    report = interrupted.value.embed_report
    assert (report.total, report.embedded, report.already_indexed) == (3, 0, 3) and len(load_index(index_path)) == 3
    with pytest.raises(RuntimeError) as crashed:  # any exception carries the report; only Ctrl-C is "interrupted"
        embed_folder(_Watched(model, crash), processor, root, index_path, model_id="m", progress=False)
    assert crashed.value.embed_report.interrupted is False and str(crashed.value) == "boom"  # message kept


def _changed(model):
    """The same architecture with other weights (the temperature moved): another fingerprint."""
    params = dict(model.params)
    params["temperature"] = params["temperature"] + 1.0
    return AlignModel(model.config, params)


def test_index_records_model_name_and_weights_hash(tiny, folder, tmp_path):
    model, processor = tiny
    fingerprint = model_fingerprint(model)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", fingerprint)
    index_path = tmp_path / "index.safetensors"
    embed_folder(model, processor, folder, index_path, model_id="tiny", progress=False)
    index = load_index(index_path)
    assert (index.model_id, index.model_sha256, index.file) == ("tiny", fingerprint, str(index_path))

    # The same weights under another name (a hub id, then its directory): resumed, the name kept.
    report = embed_folder(model, processor, folder, index_path, model_id="/cache/tiny", progress=False)
    assert (report.embedded, report.already_indexed) == (0, 5)
    assert load_index(index_path).model_id == "tiny"

    # Other weights under the same name (a model retrained in place): refused, the file untouched.
    before = index_path.read_bytes()
    changed = _changed(model)
    short, other_short = fingerprint[:19], model_fingerprint(changed)[:19]
    with pytest.raises(ValueError, match=re.escape(
            f"holds embeddings from model 'tiny' ({short}), not from model 'tiny' ({other_short}); embeddings of "
            "different models cannot share an index")):
        embed_folder(changed, processor, folder, index_path, model_id="tiny", progress=False)
    with pytest.raises(ValueError, match=re.escape(f"not from model {other_short};")):  # model_id=None: the hash
        embed_folder(changed, processor, folder, index_path, progress=False)
    assert index_path.read_bytes() == before  # never overwritten

    embed_folder(model, processor, folder, tmp_path / "unnamed.safetensors", progress=False)
    unnamed = load_index(tmp_path / "unnamed.safetensors")
    assert unnamed.model_id == unnamed.model_sha256 == fingerprint


def _as_version_1(path, model_id):
    """Rewrite an index as minialign wrote it before model_sha256 (version "1")."""
    index = load_index(path)
    embeddings, paths = np.array(index.embeddings), index.paths
    _save(path, embeddings, {"format": INDEX_FORMAT, "version": "1", "model_id": model_id,
                             "dim": str(embeddings.shape[1]), "count": str(len(paths)), "paths": json.dumps(paths)})


def test_version_1_index_is_read_resumed_and_upgraded(tiny, folder, tmp_path):
    model, processor = tiny
    index_path = tmp_path / "index.safetensors"
    embed_folder(model, processor, folder, index_path, model_id="m", progress=False)
    _as_version_1(index_path, "m")
    old = load_index(index_path)
    assert (old.model_id, old.model_sha256, len(old)) == ("m", None, 5)  # the hash is unknown
    # Without a hash the name decides, as before: another name is refused...
    with pytest.raises(ValueError, match=re.escape("from model 'm' (weights hash not recorded), not from model 'x'")):
        embed_folder(model, processor, folder, index_path, model_id="x", progress=False)
    # ... the same name resumes, and the file gets the hash although nothing new was embedded.
    report = embed_folder(model, processor, folder, index_path, model_id="m", progress=False)
    assert (report.embedded, report.total) == (0, 5)
    upgraded = load_index(index_path)
    assert (upgraded.model_id, upgraded.model_sha256) == ("m", model_fingerprint(model))
    assert retrieval._read_metadata(str(index_path))["version"] == retrieval.INDEX_VERSION == "2"
    # A version 1 index made with model_id=None stored the fingerprint as its name: the hash is known.
    _as_version_1(index_path, model_fingerprint(model))
    assert load_index(index_path).model_sha256 == model_fingerprint(model)


def test_search_refuses_an_index_of_another_model(tiny, folder, tmp_path):
    model, processor = tiny
    changed = _changed(model)
    index_path = tmp_path / "index.safetensors"
    embed_folder(model, processor, folder, index_path, model_id="tiny", progress=False)
    index = load_index(index_path)
    assert retrieval.check_index_model(index, model) is None
    assert retrieval.check_index_model(index, model, model_id="another name, same weights") is None

    theirs, ours = f"model 'tiny' ({model_fingerprint(model)[:19]})", f"model 'new' ({model_fingerprint(changed)[:19]})"
    message = f"{index_path} was made by {theirs}, not by {ours}: similarities between embeddings of different models"
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        retrieval.check_index_model(index, changed, model_id="new")
    assert "--force" in str(err.value)
    with pytest.raises(ValueError, match="was made by model 'tiny'"):
        search_text(changed, processor, index, "a red car")
    with pytest.raises(ValueError, match="was made by model 'tiny'"):
        search_image(changed, processor, index, str(folder / "a.png"))
    note = retrieval.check_index_model(index, changed, model_id="new", force=True)
    assert note.startswith(f"{index_path} was made by {theirs}, searching it with {ours} anyway")
    assert len(search_text(changed, processor, index, "a red car", k=2, force=True)) == 2
    assert retrieval.check_index_model(index, model_fingerprint(changed), model_id="new", force=True) == note

    # A version 1 index (hash unknown): compared by name when one is given, else searched with a note.
    _as_version_1(index_path, "tiny")
    old = load_index(index_path)
    assert "which matches" in retrieval.check_index_model(old, changed, model_id="tiny")
    with pytest.raises(ValueError, match=re.escape("was made by model 'tiny' (weights hash not recorded), not by "
                                                   f"{ours}")):
        retrieval.check_index_model(old, changed, model_id="new")
    assert "cannot check" in retrieval.check_index_model(old, changed)
    assert search_text(model, processor, old, "a red car", k=1)[0]["path"] in GOOD


@pytest.mark.parametrize("query, problem", [("", "empty"), ("   \n\t", "only whitespace")])
def test_search_refuses_an_empty_text_query(query, problem):
    index = Index(np.eye(2, dtype=np.float32), ["a.png", "b.png"], "m")
    with pytest.raises(ValueError, match=f"the text query is {problem}"):  # before the model is touched
        search_text(None, None, index, query)
    with pytest.raises(ValueError, match=problem):
        retrieval.check_text_query(query)
    assert retrieval.check_text_query(" a cat ") == " a cat "


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
    ("newer version", lambda p, good: _save(p, EYE, _metadata(version="3")), "version '3'"),
    ("version 2 without hash key", lambda p, good: _save(p, EYE, _metadata(version="2")), r"lacks \['model_sha256'\]"),
    ("bad hash", lambda p, good: _save(p, EYE, _metadata(version="2", model_sha256="md5:00")),
     "model_sha256 is 'md5:00'"),
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


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_goes_to_stderr_only_on_a_terminal(tiny, tmp_path, capsys, monkeypatch, terminal):
    model, processor = tiny

    class Stderr(io.StringIO):
        def isatty(self) -> bool:
            return terminal

    monkeypatch.setattr(sys, "stderr", Stderr())
    root = tmp_path / "images"
    for seed in range(3):
        _write(root, f"{seed}.png", seed)
    embed_folder(model, processor, root, tmp_path / "i.safetensors", batch_size=2, model_id="m", progress=True)
    assert capsys.readouterr().out == ""
    assert ("embedding" in sys.stderr.getvalue() and "3/3" in sys.stderr.getvalue()) == terminal
    sys.stderr.truncate(0)
    embed_folder(model, processor, root, tmp_path / "j.safetensors", batch_size=2, model_id="m", progress=False)
    assert sys.stderr.getvalue().strip("\x00") == ""  # --json: no bar even on a terminal


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
