# %% [markdown]
# # 5. Comparing with transformers, layer by layer
#
# minialign claims the same outputs as transformers' ALIGN, layer for layer. `minialign parity`
# (minialign/parity.py) checks that claim on any checkpoint directory: it runs the same texts
# and images through both and prints the error of every intermediate. This tutorial runs it on
# the embedded model, then breaks one weight on purpose and watches the report point at it.
# It needs torch and transformers (`pip install -e ".[dev]"`).

# %%
import shutil
import tempfile

from safetensors.numpy import load_file, save_file

from minialign.parity import format_report, parity_report
from minialign.pipelines import default_model_dir

report = parity_report(default_model_dir())
print(format_report(report))
assert report.ok

# %% [markdown]
# Now scale one projection batchnorm's variance in block 2 of a copy of the checkpoint. The
# stem and blocks 0-1 still agree; the report marks block 2 as the first divergence.

# %%
broken = tempfile.mkdtemp()
shutil.copytree(default_model_dir(), broken, dirs_exist_ok=True)
state = load_file(f"{broken}/model.safetensors")
state["vision_model.encoder.blocks.2.projection.project_bn.running_var"] *= 4
save_file(state, f"{broken}/model.safetensors", metadata={"format": "pt"})
report = parity_report(broken, reference_dir=default_model_dir())
print(format_report(report))
assert not report.ok and report.first_failure.name == "vision.block.2"
