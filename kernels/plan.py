"""Which kernels one forward pass launches, with exactly which specialisations, found without a GPU.

The kernel lab (``report.py``) compiles what the model really launches, not a guess of it. This
module finds that out by running the model itself -- ``AlignModel`` on the Triton backend, the
same code as on a GPU -- on *meta* tensors (torch tensors with a shape, a dtype and strides but
no memory), with Triton's JIT told to stop just before compiling:

1. ``PlanningOps`` is ``TritonOps`` whose arrays are meta tensors: weights and inputs cost nothing,
   and the torch work between kernels (permutes, the stem's conv, the embedding lookup) only
   computes shapes.
2. Triton's active driver is replaced, for the duration, by one that names the target GPU
   (capability 90 or 80) and has no device: the JIT's binder then specialises each launch for
   that target exactly as on a real machine -- argument types, 16-byte alignment and
   divisibility of pointers and integers (from the meta tensors' offsets), ``== 1`` integers.
3. ``knobs.runtime.jit_cache_hook`` receives each launch's signature, constexprs, attributes and
   options (warps, stages) and answers "handled": Triton compiles nothing and launches nothing.
   A wrapper around each kernel's ``run`` keeps the grid and the arguments by name.

Every launch is kept (``Launch``); ``specialisations`` groups them by what they compile to. Integer
inputs keep their values beside their meta tensors (``plan_values``), so a launch can carry the few
the prediction needs (the packed attention's ``cu_seqlens``). The assumption a
meta tensor makes: every allocation starts 16-byte aligned (CUDA's allocator aligns to 256 B),
and a view's offset is its real offset.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ARCH_CAPABILITY = {"sm_90a": 90, "sm_80": 80}  # Triton compiles capability 90 for sm_90a


@dataclass
class Launch:
    """One kernel launch as the JIT saw it.

    ``signature`` / ``constexprs`` / ``attrs`` / ``options`` are what Triton hands ``ASTSource``
    and ``compile``; ``grid`` has three entries; ``scalars`` the runtime integer and float
    arguments by name; ``tensors`` each pointer argument's (shape, dtype, strides); ``tower``
    is "vision" or "text"."""

    kernel: str
    fn: Any = field(repr=False)
    signature: dict[str, str]
    constexprs: dict
    attrs: dict
    options: dict
    grid: tuple[int, int, int]
    scalars: dict[str, Any]
    tensors: dict[str, tuple[tuple[int, ...], str, tuple[int, ...]]]
    tower: str
    constants: dict[str, Any]  # the constexpr arguments by name (``constexprs`` is keyed by position)
    values: dict[str, list] = field(default_factory=dict)  # the few integer tensors whose values the
    #   prediction needs (the packed attention's cu_seqlens), as lists: meta tensors hold none

    @property
    def key(self) -> tuple:
        """What makes two launches one compiled kernel: everything but the grid and the values."""
        return (self.kernel, tuple(self.signature.items()), repr(sorted(self.constexprs.items(), key=str)),
                repr(sorted(self.attrs.items(), key=str)), tuple(sorted(self.options.items())))

    @property
    def programs(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]


class _PlanningDriver:
    """What Triton's JIT asks of its driver before compiling: a target, a device and a stream."""

    def __init__(self, capability: int):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", capability, 32)
        self.device = f"plan-{capability}"  # a cache key of its own: never a real device's binder

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return self.device

    def get_current_stream(self, device=None):
        return 0



def _kernels() -> list:
    from . import attention, batchnorm_silu, depthwise_conv, gemm, layer_norm, se_gate

    return [attention._attention_kernel, batchnorm_silu._batchnorm_act_kernel,
            depthwise_conv._depthwise_conv_bn_silu_kernel, gemm._gemm_epilogue_kernel,
            layer_norm._layer_norm_kernel, se_gate._se_gate_kernel]


@contextlib.contextmanager
def recording(arch: str, launches: list[Launch], tower: list[str]):
    """Within: every launch of the project's kernels is appended to ``launches`` for ``arch``, not run."""
    import torch
    from triton import knobs
    from triton.runtime.driver import driver

    from ._checks import INTERPRETED

    if INTERPRETED:
        raise ValueError("the kernel lab compiles for a GPU: unset TRITON_INTERPRET (the interpreter "
                         "replaces the compiler, and the launchers choose the interpreter's tile sizes)")
    if arch not in ARCH_CAPABILITY:
        raise ValueError(f"arch must be one of {tuple(ARCH_CAPABILITY)}, got {arch!r}")
    pending: list[dict] = []

    def hook(*, compile, **_):
        # The options a launcher can set (the rest keep their defaults, as in the JIT).
        options = {name: compile[name] for name in ("num_warps", "num_stages", "num_ctas", "enable_fp_fusion")}
        pending.append({"signature": dict(compile["signature"]), "constexprs": dict(compile["constants"]),
                        "attrs": dict(compile["configs"][0]), "options": options})
        return True  # handled: compile nothing, launch nothing

    originals = {}

    def wrap(fn):
        run = fn.run

        def recorded_run(*args, grid, warmup, **kwargs):
            before = len(pending)
            run(*args, grid=grid, warmup=warmup, **kwargs)
            if len(pending) == before:
                raise RuntimeError(f"{fn.__name__}: the JIT did not report the launch (a cached kernel?)")
            spec = pending.pop()
            named = dict(zip(fn.arg_names, args)) | kwargs
            tensors = {n: (tuple(v.shape), str(v.dtype).removeprefix("torch."), tuple(v.stride()))
                       for n, v in named.items() if isinstance(v, torch.Tensor)}
            constexpr_names = {fn.arg_names[i] for i in fn.constexprs}
            scalars = {n: v for n, v in named.items() if n in fn.arg_names and n not in constexpr_names
                       and isinstance(v, (int, float)) and not isinstance(v, bool)}
            g = tuple(grid) + (1,) * (3 - len(grid))
            constants = {fn.arg_names[path[0]]: value for path, value in spec["constexprs"].items() if len(path) == 1}
            values = {n: v.plan_values.tolist() for n, v in named.items() if hasattr(v, "plan_values")}
            launches.append(Launch(fn.__name__, fn, spec["signature"], spec["constexprs"], spec["attrs"],
                                   spec["options"], g, scalars, tensors, tower[0], constants, values))
            return None

        originals[fn] = run
        fn.run = recorded_run

    previous_hook = knobs.runtime.jit_cache_hook
    # Kept as it is, not through driver.default: without a GPU there is no default driver to make.
    previous_driver = driver._active
    driver.set_active(_PlanningDriver(ARCH_CAPABILITY[arch]))
    knobs.runtime.jit_cache_hook = hook
    from ._checks import planning

    try:
        for fn in _kernels():
            wrap(fn)
        with planning():
            yield
    finally:
        for fn, run in originals.items():
            fn.run = run
        knobs.runtime.jit_cache_hook = previous_hook
        driver._active = previous_driver


def _planning_ops(dtype: str):
    import torch

    from minialign.backends.triton import TritonOps

    class PlanningOps(TritonOps):
        """TritonOps on meta tensors: shapes, dtypes and strides, no memory and no arithmetic."""

        def __init__(self):
            self.device = torch.device("meta")
            self.dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]

        def from_numpy(self, array):
            if isinstance(array, torch.Tensor):
                return torch.empty(tuple(array.shape), dtype=self.dtype if array.is_floating_point() else array.dtype,
                                   device="meta")
            array = np.asarray(array)
            if np.issubdtype(array.dtype, np.floating):
                return torch.empty(array.shape, dtype=self.dtype, device="meta")
            tensor = torch.empty(array.shape, dtype=torch.int32 if array.dtype == np.int32 else torch.int64,
                                 device="meta")
            tensor.plan_values = array  # integers (ids, cu_seqlens) keep their values beside the meta tensor
            return tensor

        def to_numpy(self, x):
            return np.zeros(tuple(x.shape), dtype=np.float32)

    return PlanningOps()


def _zeros(shape) -> np.ndarray:
    return np.broadcast_to(np.float32(0), shape)  # a weight of that shape, without the memory


# align-base's processor crops 289 x 289 (its vision config's image_size, 600, is EfficientNet-B7's
# and not what the model is fed).
IMAGE_SIZE = 289


# The packed text workload: captions as a web page's alt text reads, written for this report (no
# dataset is downloaded), 8 to 20 tokens each once [CLS] and [SEP] are added. A caption's length is
# what BERT's basic tokenizer makes of it (``caption_tokens``): lower-case words and punctuation,
# one token each, which is bert-base-uncased's WordPiece count for words in its vocabulary (every
# word here is a common English one).
CAPTIONS = (
    "a brown dog running along the beach at sunset.",
    "two grey cats sleeping next to each other on a red sofa.",
    "a bowl of fresh strawberries on a wooden kitchen table.",
    "aerial view of a large city at night with all the lights on.",
    "a man in a blue jacket riding a bicycle down a busy street.",
    "close up of a yellow flower in a garden after the rain.",
    "a plate of pasta with tomato sauce, basil and cheese.",
    "children playing football in the park on a sunny afternoon.",
    "an old red truck parked in front of a wooden barn.",
    "a snowy mountain peak under a clear blue sky.",
    "a young woman reading a book in a quiet coffee shop.",
    "a cup of black coffee and a croissant on a white plate.",
    "a small sailboat on a calm lake in the early morning.",
    "the interior of a modern kitchen with white cabinets and a large window.",
    "a brown horse standing alone in a green field.",
    "a group of friends having dinner together at a long table outside on a warm summer evening.",
    "a black and white photo of an old stone bridge.",
    "a train crossing a bridge over a river in the mountains.",
    "a small bird sitting on a branch.",
    "a bowl of hot tomato soup.",
    "street food market in the evening, with people buying food and drinks.",
    "a child blowing out the candles on a birthday cake.",
    "a laptop, a phone and a notebook on a desk.",
    "a lighthouse on a rocky coast during a storm.",
    "a close up of a cat's face with bright green eyes.",
    "a red apple on a table.",
    "a view of the ocean from a hotel balcony at sunrise.",
    "a person holding a black umbrella while walking in the rain.",
    "a vintage car driving on a country road.",
    "a pizza with mushrooms, olives and cheese on a wooden board.",
    "a family walking through a forest in the autumn.",
    "an empty road through the desert under a cloudy sky.",
    "a baby smiling at the camera.",
    "tall glass buildings in the center of a big city.",
    "a glass of red wine on a table next to a window.",
    "a boy jumping into a swimming pool on a hot day.",
    "a bunch of colorful balloons floating in the blue sky.",
    "an oil painting of a small house by a river.",
    "a chef cooking in the kitchen of a busy restaurant.",
    "two business people shaking hands in a bright office.",
    "a field of sunflowers at sunrise.",
    "a dog jumping to catch a frisbee in the air.",
    "the full moon over a quiet village at night.",
    "a wooden cabin in the snow surrounded by pine trees.",
    "a pair of running shoes on a white background.",
    "a table set for a wedding dinner with flowers, glasses and candles.",
    "a fisherman on a small boat at dawn.",
    "a busy train station with people waiting on the platform.",
    "a green salad with chicken and avocado in a white bowl.",
    "an orange cat lying in the sun on a windowsill.",
    "a man playing the guitar on a stage in front of a crowd.",
    "a colorful umbrella on the sand at the beach.",
    "big waves on the shore.",
    "a girl with a red hat walking her dog in the park.",
    "a stack of old books on a shelf.",
    "a hot air balloon flying over green hills.",
    "a close up of a hand holding a smartphone with a blank screen.",
    "a herd of cows grazing on a farm.",
    "an airplane taking off from the airport at night.",
    "a basket of bread, fruit and cheese for a picnic in the park.",
    "a police car with its lights on in a city street at night.",
    "a student writing on a blackboard in a classroom.",
    "a tall waterfall in the middle of a tropical forest.",
    "a bride and groom dancing at their wedding.",
)


def caption_tokens(caption: str) -> int:
    """Tokens BERT gives ``caption``: its words and punctuation marks (the basic tokenizer's split
    of lower-case ASCII), plus [CLS] and [SEP]."""
    return len(re.findall(r"\w+|[^\w\s]", caption)) + 2


def caption_lengths(batch: int) -> list[int]:
    """The tokens of ``batch`` captions: CAPTIONS' lengths in order, over and over."""
    lengths = [caption_tokens(c) for c in CAPTIONS]
    return [lengths[i % len(lengths)] for i in range(batch)]


def model_launches(config=None, *, arch: str = "sm_90a", dtype: str = "bfloat16", image_batch: int = 64,
                   image_size: int = IMAGE_SIZE, text_batch: int = 256, text_length: int = 64,
                   packed_batch: int = 0) -> list[Launch]:
    """Every kernel launch of one image forward (``image_batch`` images of ``image_size`` squared),
    one text forward (``text_batch`` texts of ``text_length`` tokens, no padding) and, with
    ``packed_batch``, one packed text forward of that many captions (``caption_lengths``: tower
    "text_packed") of ``AlignModel`` on the Triton backend in ``dtype``, as compiled for ``arch``.
    ``config``: an ``AlignConfig``; None is align-base (the defaults)."""
    from minialign.align_model import AlignModel
    from minialign.config import AlignConfig

    config = AlignConfig() if config is None else config
    params = {name: _zeros(shape) for name, shape in AlignModel.expected_shapes(config).items()}
    params = {n: (np.ones(p.shape, np.float32) if n.endswith("running_var") else p) for n, p in params.items()}
    ops = _planning_ops(dtype)
    launches: list[Launch] = []
    tower = ["vision"]
    with recording(arch, launches, tower):
        model = AlignModel(config, params, ops=ops)
        model.vision_model(_zeros((image_batch, config.vision_config.num_channels, image_size, image_size)))
        tower[0] = "text"
        ids = np.zeros((text_batch, text_length), dtype=np.int64)
        model.text_model(ids, np.ones_like(ids), np.zeros_like(ids))
        if packed_batch:
            tower[0] = "text_packed"
            lengths = np.array(caption_lengths(packed_batch))
            mask = (np.arange(lengths.max())[None, :] < lengths[:, None]).astype(np.int64)  # right padding
            model.text_model(np.zeros_like(mask), mask, np.zeros_like(mask), packed=True)
    return launches


NOT_LAUNCHED = "not launched"  # the tower of a kernel the model does not use, compiled all the same


def unused_kernel_launches(*, arch: str = "sm_90a", dtype: str = "bfloat16", image_batch: int = 64,
                           image_size: int = IMAGE_SIZE) -> list[Launch]:
    """A launch of each kernel the model never makes, at a shape it would have: ``batchnorm_act``
    (the backend folds every batchnorm into its convolution) on the stem's output, with SiLU.
    The kernel lab compiles and reports it beside the others, outside the towers' sums."""
    import torch

    from .batchnorm_silu import batchnorm_act

    side = (image_size - 1) // 2  # the stem: a 3x3 convolution of stride 2, padded as align-base pads it
    meta = dict(device="meta")
    launches: list[Launch] = []
    with recording(arch, launches, [NOT_LAUNCHED]):
        batchnorm_act(torch.empty(image_batch, side, side, 64, dtype=getattr(torch, dtype), **meta),
                      torch.empty(64, dtype=torch.float32, **meta), torch.empty(64, dtype=torch.float32, **meta),
                      activation="silu")
    return launches


def gemm_variant(launch: Launch, arch: str, *, bare: bool = False, config: dict | None = None) -> Launch:
    """``launch``, a GEMM's, made again by the launcher for ``arch``: the same A and W (shapes,
    dtypes, strides) and, unless ``bare``, the same epilogue (scale, shift or bias, activation,
    residual, gate, LayerNorm); with ``config``, that tile (``gemm``'s benchmark override). The kernel lab
    prices a fused epilogue against the bare GEMM, and ``benchmarks/gemm_configs.py`` sweeps tiles."""
    import torch

    from .gemm import gemm

    def meta(name):
        shape, dtype, strides = launch.tensors[name]
        return torch.empty_strided(shape, strides, dtype=getattr(torch, dtype), device="meta")

    epilogue = {}
    if not bare:
        epilogue = {arg: meta(name) for arg, name in (("scale", "col_scale_ptr"), ("shift", "col_shift_ptr"),
                                                      ("residual", "residual_ptr"), ("a_scale", "a_scale_ptr"))
                    if name in launch.tensors}
        epilogue["activation"] = launch.constants["ACTIVATION"]
        if "norm_weight_ptr" in launch.tensors:
            epilogue["layer_norm"] = (meta("norm_weight_ptr"), meta("norm_bias_ptr"), launch.scalars["eps"])
        if "a_scale" in epilogue:
            epilogue["rows_per_image"] = launch.scalars["rows_per_image"]
    launches: list[Launch] = []
    with recording(arch, launches, [launch.tower]):
        gemm(meta("a_ptr"), meta("w_ptr"), config=config, **epilogue)
    return launches[0]


def specialisations(launches: list[Launch]) -> list[list[Launch]]:
    """The launches grouped by tower and specialisation (one compiled kernel each), groups in
    first-seen order. A kernel two towers both launch (the padded and the packed text forwards
    share the pooler's GEMM) is a group in each, so that each tower's sums are its own."""
    groups: dict[tuple, list[Launch]] = {}
    for launch in launches:
        groups.setdefault((launch.tower, launch.key), []).append(launch)
    return list(groups.values())
