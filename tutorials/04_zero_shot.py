# %% [markdown]
# # 4. Zero-shot classification with the embedded model
#
# ALIGN classifies an image against label names it was never trained to predict: each label
# becomes a sentence ("a photo of a red circle."), both towers embed, and the softmax over the
# cosine similarities divided by the temperature gives the scores. This tutorial does it by hand
# with `AlignModel`, then with the pipeline, on a freshly drawn image of a (shape, colour) pair
# the embedded model never saw in training. See docs/training.md for how that model was made.

# %%
import numpy as np

from minialign import AlignModel, AlignProcessor, pipeline, synthetic
from minialign.loss import l2_normalize
from minialign.training import recipe

model = AlignModel.from_pretrained("align-nano")
processor = AlignProcessor.from_pretrained("align-nano")
example = synthetic.generate(1, split="test", seed=3, image_size=recipe.IMAGE_SIZE)[0]  # align-nano's image size
print("the image shows a", example.class_name, "(a held-out pair)")

# %% [markdown]
# By hand: embed the image and one sentence per label, normalise, compare.

# %%
labels = [synthetic.class_name(s, c) for s, c in synthetic.all_classes()]
inputs = processor(text=[f"a photo of a {label}." for label in labels], images=example.image, padding="longest")
text = l2_normalize(model.get_text_features(inputs["input_ids"], inputs["attention_mask"]))  # [36, 80]
image = l2_normalize(model.get_image_features(inputs["pixel_values"]))  # [1, 80]
logits = (image @ text.T)[0] / model.temperature
scores = np.exp(logits - logits.max())
scores /= scores.sum()
for k in np.argsort(-scores)[:5]:
    print(f"{scores[k]:6.1%}  {labels[k]}")

# %% [markdown]
# The pipeline does the same, and accepts several templates: each label's embedding is then the
# normalised mean of its templates' embeddings (a prompt ensemble).

# %%
classifier = pipeline("zero-shot-image-classification")  # model=None: the embedded model
top = classifier(example.image, candidate_labels=labels, hypothesis_template="a photo of a {}.")[:5]
for r in top:
    print(f"{r['score']:6.1%}  {r['label']}")
assert abs(top[0]["score"] - scores.max()) < 1e-5  # the same computation as by hand
ensemble = classifier(example.image, candidate_labels=labels,
                      hypothesis_template=["a photo of a {}.", "{}", "a {} on a grey background"])
print("with a prompt ensemble:", ensemble[0])
