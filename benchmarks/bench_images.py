"""Images on this CPU: tunelab's linear probe against the hand-written equivalent, in the same run.

    python benchmarks/bench_images.py [--model resnet20-cifar10] [--per-class 100] [--json out.json]

Both start from the same zip of the shared cifar10-mini (real JPEGs) and end with test-set
predictions, with the same model (the catalog's weights, loaded by tunelab's loader: the network
is not what is compared):

- tunelab: `prepare_data` (guarded extraction, every image checked and decoded, stratified split)
  and `run_strategy(..., "linear-probe")` (features through the feature cache, the logistic head
  with C chosen by cross-validation, the test evaluation with intervals and a latency sample);
  then the same run again, features from the cache.
- hand-written: zipfile extraction, PIL decoding, numpy resize/crop/normalise, a plain
  `torch.no_grad()` loop over batches of 64, scikit-learn's LogisticRegression (default C, on all
  the training images), predictions on the test images.

Also images/s for encoding (both) and for training (tunelab's image-full loop against a plain
torch loop: same model, batch, size and optimiser, a flip as the only augmentation).
Target: tunelab's probe no slower and at least as accurate.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CIFAR = Path(os.environ.get("TUNELAB_SHARED", ROOT.parent / "shared")) / "datasets" / "vision" / "cifar10-mini"


def make_zip(dest: Path, per_class: int, test_per_class: int) -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for split, n in (("train", per_class), ("test", test_per_class)):
            for c in sorted(p.name for p in (CIFAR / split).iterdir()):
                for f in sorted((CIFAR / split / c).iterdir())[:n]:
                    zf.writestr(f"{split}/{c}/{f.name}", f.read_bytes())
    return dest


def tunelab_probe(model, archive: Path) -> dict:
    from tunelab.engine import DataSpec, prepare_data, run_strategy

    t0 = time.perf_counter()
    data = prepare_data(DataSpec(archive), model)
    t1 = time.perf_counter()
    result = run_strategy(model, data, "linear-probe")
    t2 = time.perf_counter()
    again = run_strategy(model, data, "linear-probe")
    t3 = time.perf_counter()
    eff = result.metrics.get("efficiency") or {}
    return {"seconds": t2 - t0, "read_seconds": t1 - t0, "warm_seconds": t3 - t2,
            "macro_f1": result.metrics["macro_f1"], "accuracy": result.metrics["accuracy"],
            "encode_images_per_s": eff.get("samples_per_s"), "cache": again.notes.get("feature_cache"),
            "data": data}


def _pixels(path: Path, pre):
    """Resize the shorter side to size / crop_pct, crop the centre, normalise: the usual pipeline."""
    import numpy as np
    from PIL import Image

    img = Image.open(path).convert("RGB")
    short = int(pre.size / pre.crop_pct) if pre.crop_pct < 1 else pre.size
    scale = short / min(img.size)
    w, h = max(pre.size, round(img.width * scale)), max(pre.size, round(img.height * scale))
    if (w, h) != img.size:
        img = img.resize((w, h), Image.BICUBIC)
    left, top = (w - pre.size) // 2, (h - pre.size) // 2
    img = img.crop((left, top, left + pre.size, top + pre.size))
    x = np.asarray(img, dtype=np.float32) / 255.0
    return ((x - np.asarray(pre.mean, dtype=np.float32)) / np.asarray(pre.std, dtype=np.float32)).transpose(2, 0, 1)


def hand_written_probe(model, archive: Path) -> dict:
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    from tunelab.models.vision import load_image_model

    t0 = time.perf_counter()
    backbone = load_image_model(model).eval()
    pre = backbone.preprocess
    with tempfile.TemporaryDirectory() as work:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(work)      # safe: the zip this benchmark just built from the shared cifar10-mini folder
        rows = {split: sorted((p, p.parent.name) for p in (Path(work) / split).rglob("*.jpg")) for split in ("train", "test")}
        feats, encode_s = {}, 0.0
        for split, items in rows.items():
            out = []
            for start in range(0, len(items), 64):
                e0 = time.perf_counter()         # decoding counts, as in tunelab's encoding rate
                batch = np.stack([_pixels(p, pre) for p, _ in items[start:start + 64]])
                with torch.no_grad():
                    out.append(backbone.features(torch.from_numpy(batch)).numpy())
                encode_s += time.perf_counter() - e0
            feats[split] = np.concatenate(out)
    y = {split: [label for _, label in items] for split, items in rows.items()}
    clf = LogisticRegression(max_iter=2000).fit(feats["train"], y["train"])
    predicted = clf.predict(feats["test"])
    seconds = time.perf_counter() - t0
    n = len(feats["train"]) + len(feats["test"])
    return {"seconds": seconds, "macro_f1": float(f1_score(y["test"], predicted, average="macro")),
            "accuracy": float(accuracy_score(y["test"], predicted)), "encode_images_per_s": n / encode_s}


def tunelab_training(model, data, epochs: int) -> dict:
    from tunelab.engine import run_strategy

    result = run_strategy(model, data, "full", [f"epochs={epochs}", "min_steps=0", "batch_size=32"])
    eff = result.metrics.get("efficiency") or {}
    return {"images_per_s": eff.get("samples_per_s"), "macro_f1": result.metrics["macro_f1"],
            "image_size": result.notes.get("image_size")}


def hand_written_training(model, data, epochs: int, size: int) -> dict:
    """A plain loop: the same network and head reset, AdamW, batch 32, centre crops with a flip."""
    import dataclasses

    import numpy as np
    import torch

    from tunelab.models.vision import load_image_model

    backbone = load_image_model(model)
    backbone.reset_head(len(data.splits.label_names))
    pre = dataclasses.replace(backbone.preprocess, size=size)
    train = data.splits.train
    index = {n: i for i, n in enumerate(data.splits.label_names)}
    images = [train.open(i) for i in range(len(train))]
    labels = torch.tensor([index[x] for x in train.labels])
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=3e-4)
    backbone.train()
    rng = np.random.default_rng(0)
    seen, seconds = 0, 0.0
    for _ in range(epochs):
        order = rng.permutation(len(images))
        for start in range(0, len(order), 32):
            idx = order[start:start + 32]
            t0 = time.perf_counter()
            x = torch.from_numpy(np.stack([_pil_pixels(images[i], pre) for i in idx]))
            if rng.random() < 0.5:
                x = x.flip(3)
            loss = torch.nn.functional.cross_entropy(backbone(x), labels[idx])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            seconds += time.perf_counter() - t0
            seen += len(idx)
    return {"images_per_s": seen / seconds}


def _pil_pixels(img, pre):
    import numpy as np
    from PIL import Image

    img = img.resize((pre.size, pre.size), Image.BICUBIC) if img.size != (pre.size, pre.size) else img
    x = np.asarray(img, dtype=np.float32) / 255.0
    return ((x - np.asarray(pre.mean, dtype=np.float32)) / np.asarray(pre.std, dtype=np.float32)).transpose(2, 0, 1)


def table(t: dict, h: dict, tt: dict, ht: dict) -> str:
    rows = [("probe, zip to test predictions (s)", t["seconds"], h["seconds"], h["seconds"] / t["seconds"]),
            ("probe again, features cached (s)", t["warm_seconds"], h["seconds"], h["seconds"] / t["warm_seconds"]),
            ("encoding (images/s)", t["encode_images_per_s"], h["encode_images_per_s"],
             (t["encode_images_per_s"] or 0) / h["encode_images_per_s"]),
            ("training (images/s)", tt["images_per_s"], ht["images_per_s"], (tt["images_per_s"] or 0) / ht["images_per_s"])]
    lines = [f"{'':<38}{'tunelab':>10}{'hand-written':>14}{'speed ratio':>13}"]
    lines += [f"{name:<38}{a:>10.1f}{b:>14.1f}{r:>12.2f}x" for name, a, b, r in rows]
    lines.append(f"{'probe macro-F1 (test)':<38}{t['macro_f1']:>10.3f}{h['macro_f1']:>14.3f}"
                 f"{t['macro_f1'] - h['macro_f1']:>+13.3f}")
    lines.append(f"{'probe accuracy (test)':<38}{t['accuracy']:>10.3f}{h['accuracy']:>14.3f}"
                 f"{t['accuracy'] - h['accuracy']:>+13.3f}")
    lines.append("(speed ratio: how many times faster tunelab is; > 1 is faster. The last column of the "
                 "F1/accuracy rows: tunelab minus hand-written.)")
    return "\n".join(lines)


def _warm_imports() -> None:
    """Both sides' libraries imported before any timing: a first import (transformers under the
    strategy registry, scikit-learn) is a process's one-time cost, not the probe's."""
    import sklearn.linear_model  # noqa: F401
    import sklearn.metrics  # noqa: F401

    from tunelab.engine import prepare_data  # noqa: F401
    from tunelab.strategies import load_builtin

    load_builtin()


def _median(rows: list[dict]) -> dict:
    """Per key, the median over the rounds of the numbers (other values: the first round's)."""
    import statistics

    out = dict(rows[0])
    for key, value in rows[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = statistics.median(r[key] for r in rows if r.get(key) is not None)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="resnet20-cifar10")
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--test-per-class", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=1, help="training-speed epochs")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds; medians are reported (a shared "
                    "machine's load moves single timings)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    os.environ["TUNELAB_HOME"] = tempfile.mkdtemp(prefix="bench-images-")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tunelab.models import resolve_model

    model = resolve_model(args.model)
    _warm_imports()
    runs: dict[str, list[dict]] = {"hand": [], "ours": [], "ours_train": [], "hand_train": []}
    with tempfile.TemporaryDirectory() as tmp:
        archive = make_zip(Path(tmp) / "cifar10-mini.zip", args.per_class, args.test_per_class)
        for _ in range(args.rounds):         # alternating, each tunelab round with a cold feature cache
            os.environ["TUNELAB_HOME"] = tempfile.mkdtemp(prefix="bench-images-")
            runs["hand"].append(hand_written_probe(model, archive))
            runs["ours"].append(tunelab_probe(model, archive))
            data = runs["ours"][-1].pop("data")
            runs["ours_train"].append(tunelab_training(model, data, args.epochs))
            runs["hand_train"].append(hand_written_training(model, data, args.epochs,
                                                            runs["ours_train"][-1]["image_size"]))
    hand, ours, ours_train, hand_train = (_median(runs[k]) for k in ("hand", "ours", "ours_train", "hand_train"))
    print(f"{args.model} on cifar10-mini ({args.per_class} train / {args.test_per_class} test images a class), "
          f"{os.cpu_count()} CPUs, median of {args.rounds} alternating rounds\n")
    print(table(ours, hand, ours_train, hand_train))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": args.model, "rounds": runs, "tunelab": ours, "hand_written": hand,
                                         "tunelab_training": ours_train, "hand_written_training": hand_train},
                                        indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
