"""The encoder feature cache: signatures, hits, disk entries, and crop/feature alignment under dihedral transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from efficell_app.core.encoders import build_encoder, get_spec
from efficell_app.core.encoders.registry import FrozenEncoder
from efficell_app.core.feature_cache import (
    FeatureCache,
    array_sha256,
    dihedral_box,
    feature_signature,
    pad_image,
    tile_boxes,
)
from efficell_app.core.training_data import dihedral


class CountingBackbone(nn.Module):
    """Average-pools the image by 16 into two 'levels' (exactly dihedral-equivariant) and counts calls."""

    out_channels = (3, 3)
    stride = 16

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.calls += 1
        p = F.avg_pool2d(x, 16)
        return [p * self.scale, -p]


@pytest.fixture()
def pool_encoder() -> FrozenEncoder:
    return FrozenEncoder(CountingBackbone(), get_spec("efficell_compact"), weights_sha256="abc")


@pytest.mark.parametrize("k", range(8))
def test_dihedral_box_maps_crops(k: int) -> None:
    rng = np.random.default_rng(k)
    img = rng.random((3, 48, 80)).astype(np.float32)
    sem = rng.integers(0, 3, (48, 80)).astype(np.uint8)
    geo = rng.random((3, 48, 80)).astype(np.float32)
    valid = rng.random((48, 80)) > 0.5
    box = (16, 32, 48, 64)
    full = dihedral(k, img, sem, geo, valid)
    y0, x0, y1, x1 = box
    part = dihedral(k, img[:, y0:y1, x0:x1], sem[y0:y1, x0:x1], geo[:, y0:y1, x0:x1], valid[y0:y1, x0:x1])
    ty0, tx0, ty1, tx1 = dihedral_box(box, (48, 80), k)
    for a, b in zip(full, part):
        np.testing.assert_array_equal(a[..., ty0:ty1, tx0:tx1], b)


def test_tile_boxes_cover_and_align() -> None:
    (ph, pw), boxes = tile_boxes(700, 300, 512, 16, min_side=128)
    assert (ph, pw) == (700, 304)  # width padded to the stride grid
    cover = np.zeros((ph, pw), bool)
    for y0, x0, y1, x1 in boxes:
        assert (y1 - y0) % 16 == 0 and (x1 - x0) % 16 == 0 and y1 - y0 <= 512
        cover[y0:y1, x0:x1] = True
    assert cover.all()
    # A side a little over one tile is split evenly, not into two heavily overlapping full tiles.
    assert tile_boxes(640, 640, 512, 16)[1] == [(0, 0, 320, 320), (0, 320, 320, 640), (320, 0, 640, 320), (320, 320, 640, 640)]
    (ph, pw), boxes = tile_boxes(40, 50, 512, 16, min_side=128)
    assert (ph, pw) == (128, 128) and boxes == [(0, 0, 128, 128)]
    x = np.ones((3, 40, 50), np.float32)
    assert pad_image(x, (128, 128)).shape == (3, 128, 128)


def test_signature_depends_on_every_part() -> None:
    base = ("img", "enc", "w", (0, 0, 16, 16), 0, 1.0)
    sig = feature_signature(*base)
    assert sig == feature_signature(*base)
    for i, other in enumerate(["img2", "enc2", "w2", (0, 0, 16, 32), 3, 1.25]):
        changed = list(base)
        changed[i] = other
        assert feature_signature(*changed) != sig
    assert array_sha256(np.zeros((2, 2))) != array_sha256(np.zeros((2, 2), np.float32))


def test_cache_hit_does_not_call_encoder(pool_encoder: FrozenEncoder) -> None:
    cache = FeatureCache(pool_encoder)
    img = np.random.default_rng(0).random((3, 64, 64)).astype(np.float32)
    sha = array_sha256(img)
    a = cache.get(img, sha, (0, 0, 64, 64), 0)
    assert pool_encoder.backbone.calls == 1
    b = cache.get(img, sha, (0, 0, 64, 64), 0)
    assert pool_encoder.backbone.calls == 1 and cache.stats.hits == 1
    assert all(x.dtype == np.float16 for x in a) and all(np.array_equal(x, y) for x, y in zip(a, b))
    cache.get(img, sha, (0, 0, 64, 64), 5)  # another transform is another entry
    assert pool_encoder.backbone.calls == 2


@pytest.mark.parametrize("k", [0, 3, 5, 6])
def test_cached_features_slice_like_the_crop(pool_encoder: FrozenEncoder, k: int) -> None:
    """Features of the transformed tile, cut at the mapped box, are the features of the transformed crop."""
    rng = np.random.default_rng(1)
    img = rng.random((3, 64, 96)).astype(np.float32)
    cache = FeatureCache(pool_encoder)
    feats = cache.get(img, array_sha256(img), (0, 0, 64, 96), k)
    box = (16, 32, 48, 64)
    ty0, tx0, ty1, tx1 = (v // 16 for v in dihedral_box(box, (64, 96), k))
    crop = dihedral(k, img[:, 16:48, 32:64], np.zeros((32, 32)), np.zeros((3, 32, 32), np.float32), np.zeros((32, 32)))[0]
    expect = F.avg_pool2d((torch.from_numpy(crop)[None] - 0.5) / 0.25, 16)[0].numpy()
    np.testing.assert_allclose(feats[0][:, ty0:ty1, tx0:tx1].astype(np.float32), expect, atol=2e-3)


def test_disk_cache_is_reused_and_damaged_files_recomputed(pool_encoder: FrozenEncoder, tmp_path) -> None:  # noqa: ANN001
    img = np.random.default_rng(2).random((3, 32, 32)).astype(np.float32)
    sha = array_sha256(img)
    a = FeatureCache(pool_encoder, cache_dir=tmp_path)
    first = a.get(img, sha, (0, 0, 32, 32), 0)
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1 and not list(tmp_path.glob("*.part"))
    b = FeatureCache(pool_encoder, cache_dir=tmp_path)  # a later run: found on disk
    again = b.get(img, sha, (0, 0, 32, 32), 0)
    assert pool_encoder.backbone.calls == 1
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    files[0].write_bytes(b"not a numpy file")
    c = FeatureCache(pool_encoder, cache_dir=tmp_path)
    c.get(img, sha, (0, 0, 32, 32), 0)
    assert pool_encoder.backbone.calls == 2


def test_real_encoder_features_shape_and_identity() -> None:
    torch.manual_seed(0)
    enc = build_encoder("efficell_compact", weights=None, small=True)
    cache = FeatureCache(enc)
    assert cache.weights_sha == "random" and cache.encoder_name == "efficell_compact"
    img = np.random.default_rng(3).random((3, 64, 32)).astype(np.float32)
    feats = cache.get(img, array_sha256(img), (0, 0, 64, 32), 4)  # transposed: 32 x 64
    assert [f.shape for f in feats] == [(c, 2, 4) for c in enc.out_channels]


def test_cached_model_predicts_like_the_real_model() -> None:
    """Validation through cached (float16) features matches the real encoder + adapters through the same tiling."""
    from efficell_app.core.feature_cache import CachedFeatureModel
    from efficell_app.core.inference import DensePredictor
    from efficell_app.core.model import EffiCellModel, build_adapters

    torch.manual_seed(0)
    enc = build_encoder("efficell_compact", weights=None, small=True)
    ad = build_adapters(enc.out_channels, enc.stride)
    x = np.random.default_rng(4).random((3, 80, 150)).astype(np.float32)
    real = DensePredictor(EffiCellModel(enc, ad), tile=64, patch=16).predict(x)
    cache = FeatureCache(enc)
    cached = DensePredictor(CachedFeatureModel(cache, ad), tile=64, patch=16)
    first = cached.predict(x)
    calls = cache.stats.misses
    again = cached.predict(x)
    assert cache.stats.misses == calls > 0  # second pass: features from the cache only
    for a, b, c in zip(real, first, again):
        np.testing.assert_allclose(a, b, atol=2e-2)
        np.testing.assert_array_equal(b, c)


def test_features_are_cached_in_the_inference_precision() -> None:
    """On a GPU inference runs in bf16: the cache computes the training features the same way and keys
    them apart from float32 ones (whose keys stay those of cache version 1, so old caches are found)."""
    import hashlib

    base = ("img", "enc", "w", (0, 0, 16, 16), 0, 1.0)
    v1 = hashlib.sha256("img|enc|w|0,0,16,16|0|1.000000|v1".encode()).hexdigest()
    assert feature_signature(*base) == feature_signature(*base, "fp32") == v1
    assert feature_signature(*base, "bf16") != v1
    torch.manual_seed(0)
    enc = build_encoder("efficell_compact", weights=None, small=True)
    tile = np.random.default_rng(0).random((3, 64, 64)).astype(np.float32)
    fp32, bf16 = FeatureCache(enc), FeatureCache(enc, precision="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    a, b = fp32.get_tile(tile), bf16.get_tile(tile)
    assert fp32.signature("s", (0, 0, 64, 64), 0, 1.0) != bf16.signature("s", (0, 0, 64, 64), 0, 1.0)
    for x, y in zip(a, b):
        scale = float(np.abs(x.astype(np.float32)).max()) + 1e-6
        assert 0 < np.abs(x.astype(np.float32) - y.astype(np.float32)).max() / scale < 0.05
