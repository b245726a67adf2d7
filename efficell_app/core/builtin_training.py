"""Recipe that trains the built-in compact encoder together with the generalist adapters.

Run (the shipped weights were made with this command; see docs/models.md for the hardware):

    python -m efficell_app.core.builtin_training --data ../shared/data --work work/builtin --minutes 75

Data: the three datasets of ``../shared/data``, training split of ``resources/models/data_split.json``
(per dataset, source images shuffled with seed 0, 25 % of sources held out; tiles of one source stay
together). Every image is rescaled so its median cell diameter is the target diameter, at three
scales (x0.8, x1, x1.25); crops of 256 px, the 8 dihedral transforms and photometric jitter.
The encoder is trained only here; afterwards it is frozen like any other encoder.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("efficell.builtin_training")

DATASETS = ("dsb2018_fluo", "monuseg", "usiigaci_phase")
TARGET_DIAMETER = 24.0
SCALES = (0.8, 1.0, 1.25)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_split(split_file: Path) -> dict:
    return json.loads(Path(split_file).read_text())["split"]


def load_samples(data: Path, stems: list[str], dataset: str, target_diameter: float = TARGET_DIAMETER, scales=SCALES):  # noqa: ANN001, ANN201
    from .images import read_image, read_mask
    from .training_data import object_diameter, prepare_sample

    out = []
    for stem in stems:
        img = read_image(data / dataset / "images" / f"{stem}.tif")
        mask = read_mask(data / dataset / "masks" / f"{stem}.tif", img.shape)
        base = target_diameter / max(object_diameter(mask), 1.0)
        for s in scales:
            out.append(prepare_sample(img, mask, target_diameter, scale=base * s, name=f"{dataset}/{stem}@{s}"))
    return out


def make_batch(samples: list, rng: np.random.Generator, batch: int, crop: int, uneven: float = 0.0):  # noqa: ANN001, ANN201
    """A training batch; ``uneven``: probability of :func:`uneven_brightness` on a grayscale crop (0.5 in the phase-3 experiment)."""
    import torch

    from .training_data import (
        crop_box,
        dihedral,
        pad_to,
        photometric,
        uneven_brightness,
    )

    ims, sems, geos, valids = [], [], [], []
    for _ in range(batch):
        s = samples[rng.integers(len(samples))]
        y0, x0, y1, x1 = crop_box(s.sem.shape, crop, rng, s.sem > 0)
        im, se, ge, va = dihedral(int(rng.integers(8)), s.image[:, y0:y1, x0:x1], s.sem[y0:y1, x0:x1],
                                  s.geo[:, y0:y1, x0:x1], s.valid[y0:y1, x0:x1])
        if uneven > 0 and rng.random() < uneven:
            im = uneven_brightness(im, rng)
        im, se, ge, va = pad_to((photometric(im, rng), se, ge, va), crop)
        ims.append(im), sems.append(se), geos.append(ge), valids.append(va)
    return (torch.from_numpy(np.stack(ims)), torch.from_numpy(np.stack(sems)).long(),
            torch.from_numpy(np.stack(geos)), torch.from_numpy(np.stack(valids)))


def train(data: Path, work: Path, minutes: float, batch: int = 8, crop: int = 256, seed: int = 0, threads: int = 2,
          split_file: Path | None = None, resume: Path | None = None, peak_lr: float = 2e-3, uneven: float = 0.0) -> Path:
    """Train (or, with ``resume``, continue training from a checkpoint) for ``minutes``; cosine LR from ``peak_lr``.

    ``uneven``: share of grayscale crops given an uneven brightness field (0 for the shipped phases 1-2, 0.5 in the phase-3 experiment).
    """
    import torch
    from safetensors.torch import save_file

    from .encoders.compact import CompactEncoder
    from .losses import total_loss
    from .model.adapters import build_adapters
    from .resources import models_dir

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    split = load_split(split_file or models_dir() / "data_split.json")
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    per_ds = {ds: load_samples(data, split[ds]["train"], ds) for ds in DATASETS}
    log.info("prepared %s samples in %.0f s", {k: len(v) for k, v in per_ds.items()}, time.time() - t0)

    encoder = CompactEncoder()
    adapters = build_adapters(encoder.out_channels, encoder.stride)
    phases = []
    if resume is not None:
        from safetensors.torch import load_file

        state = load_file(str(resume))
        encoder.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("encoder.")})
        adapters.load_state_dict({k[9:]: v for k, v in state.items() if k.startswith("adapters.")})
        old = work / "train_meta.json"
        if old.exists():
            prev = json.loads(old.read_text())
            phases = prev.get("phases", [prev])
        rng = np.random.default_rng(seed + 1000 * (len(phases) + 1))
    mean = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
    std = torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1)
    params = list(encoder.parameters()) + list(adapters.parameters())
    opt = torch.optim.AdamW(params, lr=peak_lr, weight_decay=1e-4)
    budget = minutes * 60.0
    start = time.time()
    step = 0
    history = []
    ds_names = list(per_ds)
    last_ckpt = start
    ckpt = work / "builtin_ckpt.safetensors"

    def save(tag: str) -> None:
        state = {f"encoder.{k}": v.detach().contiguous() for k, v in encoder.state_dict().items()}
        state.update({f"adapters.{k}": v.detach().contiguous() for k, v in adapters.state_dict().items()})
        tmp = ckpt.with_suffix(".part")
        save_file(state, str(tmp), metadata={"step": str(step), "tag": tag})
        tmp.replace(ckpt)
        (work / "history.json").write_text(json.dumps(history))

    encoder.train()
    adapters.train()
    while True:
        elapsed = time.time() - start
        if elapsed > budget:
            break
        frac = elapsed / budget
        lr = peak_lr * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * frac))) if step > 50 else peak_lr * (step + 1) / 51
        for g in opt.param_groups:
            g["lr"] = lr
        ds = ds_names[step % len(ds_names)]
        x, sem_t, geo_t, valid = make_batch(per_ds[ds], rng, batch, crop, uneven)
        feats = encoder((x - mean) / std)
        out = adapters(feats, x)
        loss, terms = total_loss(out, sem_t, geo_t, valid)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        step += 1
        history.append({"step": step, "t": round(time.time() - start, 1), "ds": ds, "loss": float(loss.detach()), **{k: round(v, 4) for k, v in terms.items()}})
        if step % 20 == 0:
            log.info("step %d  %.0f s  lr %.2e  loss %.3f  %s", step, time.time() - start, lr, float(loss.detach()),
                     " ".join(f"{k}={v:.3f}" for k, v in terms.items()))
        if time.time() - last_ckpt > 600:
            save("periodic")
            last_ckpt = time.time()
    save("final")
    phase = {"steps": step, "seconds": round(time.time() - start), "batch": batch, "crop": crop, "seed": seed,
             "peak_lr": peak_lr, "uneven_brightness": uneven, "resumed_from": str(resume) if resume else None, "threads": threads,
             "hardware": f"{_cpu_name()}, {torch.get_num_threads()} threads, no GPU ({platform.platform()})",
             "torch": torch.__version__}
    phases.append(phase)
    meta = {"phases": phases, "total_steps": sum(p["steps"] for p in phases), "total_seconds": sum(p["seconds"] for p in phases),
            "target_diameter": TARGET_DIAMETER, "scales": SCALES}
    (work / "train_meta.json").write_text(json.dumps(meta, indent=1))
    log.info("done: %s", meta)
    return ckpt


def export(ckpt: Path, data: Path, work: Path, out_dir: Path | None = None, split_file: Path | None = None,
           tune_per_dataset: int = 8) -> dict:
    """Turn a training checkpoint into the shipped files: the frozen encoder (fp16) and the generalist
    adapter (fp16, with metadata); tune the instance thresholds on training images; evaluate on the
    held-out test split and store those metrics in the adapter's metadata."""
    from safetensors.torch import load_file, save_file

    from .encoders import build_encoder
    from .encoders.compact import BUNDLED_FILE, NAME
    from .evaluation import evaluate, load_pairs, segmenter_fn
    from .model.adapter_io import AdapterMeta, file_sha256, save_adapter
    from .model.adapters import build_adapters
    from .pipeline import DEFAULT_ADAPTER_FILE, Segmenter
    from .resources import models_dir

    out_dir = out_dir or models_dir()
    split = load_split(split_file or models_dir() / "data_split.json")
    state = load_file(str(ckpt))
    enc_state = {k[len("encoder."):]: v.half() if v.is_floating_point() else v for k, v in state.items() if k.startswith("encoder.")}
    ad_state = {k[len("adapters."):]: v for k, v in state.items() if k.startswith("adapters.")}
    enc_path = out_dir / BUNDLED_FILE
    save_file(enc_state, str(enc_path), metadata={"encoder": NAME, "licence": "CC BY-NC-SA 4.0 (trained in part on MoNuSeg)"})
    encoder = build_encoder(NAME, weights="auto")
    enc_sha = file_sha256(enc_path)
    adapters = build_adapters(encoder.out_channels, encoder.stride)
    adapters.load_state_dict(ad_state)
    train_meta = json.loads((work / "train_meta.json").read_text()) if (work / "train_meta.json").exists() else {}
    meta = AdapterMeta(encoder=NAME, encoder_sha256=enc_sha, in_channels=encoder.out_channels, stride=encoder.stride,
                       config=adapters.config.to_dict(), target_diameter=TARGET_DIAMETER, name="EffiCell generalist",
                       description="Generalist adapter for fluorescence nuclei, H&E nuclei and phase-contrast cells",
                       licence="CC BY-NC-SA 4.0 (trained in part on MoNuSeg): non-commercial use only",
                       training={"recipe": "python -m efficell_app.core.builtin_training", "datasets": list(DATASETS),
                                 "split": "resources/models/data_split.json", **train_meta})
    ad_path = out_dir / DEFAULT_ADAPTER_FILE
    save_adapter(ad_path, adapters, meta, half=True)
    seg = Segmenter.load(ad_path, device="cpu")
    # Tune the two watershed thresholds on training images (never on the test split). Dense maps are
    # computed once per image; only the cheap watershed is repeated per setting.
    tune = [pair for ds in DATASETS for pair in load_pairs(
        [(data / ds / "images" / f"{s}.tif", data / ds / "masks" / f"{s}.tif") for s in split[ds]["train"][:tune_per_dataset]])]
    best, best_score = tune_instance_params(seg, tune)
    seg.params = best
    metrics = {}
    for ds in DATASETS:
        test = load_pairs([(data / ds / "images" / f"{s}.tif", data / ds / "masks" / f"{s}.tif") for s in split[ds]["test"]])
        metrics[ds] = {"auto_diameter": evaluate(segmenter_fn(seg), test, "auto"), "given_diameter": evaluate(segmenter_fn(seg), test, "gt")}
        log.info("%s: %s", ds, metrics[ds])
    meta.instance_params = dict(seg.params.__dict__)
    meta.metrics = {"held_out_test_split": metrics, "tuning_ap50_train": round(best_score, 4)}
    meta.created = ""
    sha = save_adapter(ad_path, adapters, meta, half=True)
    summary = {"encoder_file": str(enc_path), "encoder_sha256": enc_sha, "encoder_mb": round(enc_path.stat().st_size / 1e6, 2),
               "adapter_file": str(ad_path), "adapter_sha256": sha, "adapter_mb": round(ad_path.stat().st_size / 1e6, 2),
               "instance_params": meta.instance_params, "metrics": meta.metrics}
    (work / "export_summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def tune_instance_params(seg, pairs, fg_values=(0.3, 0.4, 0.5, 0.6), marker_values=(0.2, 0.3, 0.4, 0.5, 0.6)):  # noqa: ANN001, ANN201
    """Grid-search the watershed thresholds on annotated pairs (cells at the target size); -> (best params, AP@0.5)."""
    import itertools

    from .evaluation import summarize
    from .images import model_input
    from .instances import InstanceParams, dense_to_labels
    from .training_data import object_diameter, resize_image, resize_labels

    dense = []
    for img, gt in pairs:
        scale = seg.target_diameter / max(object_diameter(gt), 1.0)
        prob, geo = seg.predictor.predict(resize_image(model_input(img), scale))
        dense.append((prob, geo, gt))
    best, best_score = None, -1.0
    for fg, mk in itertools.product(fg_values, marker_values):
        params = InstanceParams(fg_threshold=fg, marker_threshold=mk, min_size=seg.params.min_size)
        preds = [resize_labels(dense_to_labels(p, g[0], params), gt.shape) for p, g, gt in dense]
        score = summarize([gt for _, _, gt in dense], preds)["ap5"]
        log.info("tune fg=%.1f marker=%.1f -> AP@0.5 %.4f", fg, mk, score)
        if score > best_score:
            best, best_score = params, score
    return best, best_score


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--work", type=Path, default=Path("work/builtin"))
    p.add_argument("--minutes", type=float, default=75)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--resume", type=Path, default=None, metavar="CKPT", help="continue training from this checkpoint")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (cosine schedule over --minutes)")
    p.add_argument("--uneven", type=float, default=0.0,
                   help="share of grayscale crops given a smooth uneven brightness field (phase 3 used 0.5)")
    p.add_argument("--export", type=Path, default=None, metavar="CKPT",
                   help="skip training: export this checkpoint into resources/models (tune, evaluate, write metadata)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ckpt = a.export or train(a.data, a.work, a.minutes, a.batch, a.crop, a.seed, a.threads, resume=a.resume, peak_lr=a.lr, uneven=a.uneven)
    summary = export(ckpt, a.data, a.work)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
