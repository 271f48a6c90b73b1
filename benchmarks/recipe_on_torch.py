"""The align-nano recipe on transformers' AlignModel (torch, CPU): recipe comparisons at 3x the speed.

`minialign train` is the NumPy recipe (minialign/training/recipe.py); a step of it takes ~0.5 s on
2 cores, torch's ~0.19 s. Comparing recipes is done here: the same data (``synthetic.generate``),
vocabulary, initial weights (``recipe.init_params``), loss (transformers' ``align_loss``, whose
gradients tests/test_training.py checks against ours), AdamW with decay on matrices only,
warmup + cosine, clipping at 1 and the temperature clamp -- in torch. The trajectories differ from
the NumPy run's in the last bits, and so, after a few hundred steps, in where they land: a
recipe chosen here is then trained with `minialign train`, and that run is what ships.

Every 100 steps it scores held-out and seen pairs on the generator's plain images (300 each,
seed 2026) and, with ``--variety``, held-out pairs on varied ones; at the end it saves the model in
the hub layout and scores it on the drawn shapes of tests/drawn_shapes.py (all backgrounds and
sizes, canvases 16 to 224 and the two stretched ones, JPEG or not: 294 conditions; seed 1).

    python benchmarks/recipe_on_torch.py --out runs/torch-30k --variety 1.0 --train-examples 30000 --steps 1500

Writes ``log.jsonl``, ``run_args.json`` and ``drawn.json`` (the summary and the full result) to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

CANVASES = ((16, 16), (32, 32), (48, 48), (96, 96), (224, 224), (320, 200), (200, 320))  # the grid's, less 512


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--wd", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variety", type=float, default=0.0)
    parser.add_argument("--unnamed", type=float, default=0.6)
    parser.add_argument("--train-examples", type=int, default=10_000)
    args = parser.parse_args()

    import torch
    from transformers import AlignConfig, AlignModel

    import drawn_shapes as ds
    import minialign
    from minialign import synthetic
    from minialign.config import nano_config
    from minialign.loss import l2_normalize
    from minialign.training import recipe
    from minialign.training.optim import lr_at
    from minialign.vocab import learn_wordpiece_vocab, write_vocab

    torch.set_num_threads(2)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "run_args.json"), "w") as fh:
        json.dump(vars(args), fh, indent=1)
    size = recipe.IMAGE_SIZE
    train = synthetic.generate(args.train_examples, split="train", seed=args.seed, image_size=size,
                               unnamed_colour_fraction=args.unnamed, variety=args.variety)
    tests = {"held0": synthetic.generate(300, split="test", seed=2026, image_size=size),
             "seen0": synthetic.generate(300, split="test_seen", seed=2026, image_size=size)}
    if args.variety:
        tests["heldv"] = synthetic.generate(300, split="test", seed=2026, image_size=size, variety=args.variety)
    images, captions = np.stack([e.image for e in train]), [e.caption for e in train]
    tokenizer = write_vocab(learn_wordpiece_vocab(captions, recipe.VOCAB_SIZE), args.out,
                            model_max_length=recipe.MAX_TEXT_LENGTH)
    config = nano_config(tokenizer.vocab_size)
    model = AlignModel(AlignConfig.from_dict(config.to_dict()))
    params = recipe.init_params(config, args.seed)
    state = model.state_dict()
    model.load_state_dict({k: torch.from_numpy(params[k]).reshape(v.shape) if k in params else v for k, v in state.items()})
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and n != "temperature"]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and n != "temperature")]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd}, {"params": rest, "weight_decay": 0.0}],
                                  lr=args.lr)
    warmup = args.steps // 20  # as run_training's default

    def pixels(x: np.ndarray):
        return torch.from_numpy(recipe.pixel_values(x))

    def features(out):  # transformers 5 returns an output object, older versions the tensor
        return (out if torch.is_tensor(out) else out.pooler_output).numpy()

    names = [synthetic.class_name(s, c) for s, c in synthetic.all_classes()]
    prompts = tokenizer([recipe.ZERO_SHOT_PROMPT.format(c) for c in names], padding="longest", return_tensors="np")

    def top1(examples) -> float:
        with torch.no_grad():
            text = features(model.get_text_features(input_ids=torch.from_numpy(prompts["input_ids"]),
                                                    attention_mask=torch.from_numpy(prompts["attention_mask"])))
            image = features(model.get_image_features(pixel_values=pixels(np.stack([e.image for e in examples]))))
        predicted = np.argmax(l2_normalize(image) @ l2_normalize(text).T, axis=1)
        return float(np.mean(predicted == np.array([e.label for e in examples])))

    rng = np.random.default_rng([args.seed, 1])
    order, position = rng.permutation(len(train)), 0
    start = time.time()
    with open(os.path.join(args.out, "log.jsonl"), "w") as log:
        for step in range(1, args.steps + 1):
            if position + args.batch > len(order):
                order, position = rng.permutation(len(train)), 0
            batch = order[position:position + args.batch]
            position += args.batch
            text = tokenizer([captions[i] for i in batch], padding="longest", truncation=True,
                             max_length=recipe.MAX_TEXT_LENGTH, return_tensors="np")
            model.train()
            loss = model(input_ids=torch.from_numpy(text["input_ids"]),
                         attention_mask=torch.from_numpy(text["attention_mask"]),
                         pixel_values=pixels(images[batch]), return_loss=True).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, peak=args.lr, warmup=warmup, total=args.steps)
            optimizer.step()
            with torch.no_grad():
                model.temperature.clamp_(0.01, 1.0)
            record = {"step": step, "loss": loss.item(), "t": time.time() - start}
            if step % 100 == 0 or step == args.steps:
                model.eval()
                record.update({name: top1(examples) for name, examples in tests.items()})
                print(record, flush=True)
            log.write(json.dumps(record) + "\n")

    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    minialign.AlignModel(config, state).save_pretrained(args.out)
    recipe.image_processor().save_pretrained(args.out)
    trained, processor = minialign.AlignModel.from_pretrained(args.out), minialign.AlignProcessor.from_pretrained(args.out)
    cases, predicted = ds.evaluate(trained, processor, ds.condition_grid(canvases=CANVASES), seed=1)
    result = ds.summarize(cases, predicted)
    summary = {"overall": result["overall"]["top1"],
               **{f"{group}:{key}": value["top1"] for group in ("background", "object_size", "canvas", "pair")
                  for key, value in result["per"][group].items()},
               **{name: record.get(name) for name in tests}, "train_s": record["t"]}
    with open(os.path.join(args.out, "drawn.json"), "w") as fh:
        json.dump({"summary": summary, "result": result}, fh, indent=1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
