"""The viewer and its pure-numpy rendering: composites, overlays, colours, hover and click."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from efficell_app.core.images import read_image, read_mask
from efficell_app.core import overlay as ov

pytestmark = pytest.mark.gui


def test_touching_cells_get_different_colours(dsb_pairs) -> None:
    labels = read_mask(dsb_pairs[0][1])
    lut = ov.label_colours(labels)
    pairs = ov.touching_pairs(labels)
    assert len(pairs) > 0
    a, b = lut[pairs[:, 0], :3], lut[pairs[:, 1], :3]
    assert not np.any(np.all(a == b, axis=1))
    assert lut[0, 3] == 0 and (lut[1:, 3] == 255).all()
    assert len({tuple(c) for c in lut[1:, :3]}) >= 5  # varied, not one colour


def test_overlay_fill_and_outline() -> None:
    labels = np.zeros((20, 20), np.int32)
    labels[2:8, 2:8] = 1
    labels[2:8, 8:14] = 2  # touching neighbour
    fill = ov.overlay_rgba(labels, "fill")
    outline = ov.overlay_rgba(labels, "outline")
    assert (fill[labels == 0, 3] == 0).all() and (fill[labels > 0, 3] > 0).all()
    assert outline[5, 5, 3] == 0 and outline[2, 5, 3] == 255  # inside empty, rim drawn
    assert outline[5, 7, 3] == 255 and outline[5, 8, 3] == 255  # shared edge drawn on both cells
    assert not np.array_equal(fill[4, 4, :3], fill[4, 10, :3])



def test_banded_pairs_and_overlays_equal_whole_image_ones() -> None:
    """Large images are drawn in bands of rows: cells across a band's edge, huge label values
    and every gap give what whole-image passes give."""
    rng = np.random.default_rng(3)
    small = rng.permutation(75 * 32).reshape(75, 32) + 1  # a label per 8x8 block: each pair at one place only
    labels = np.kron(small, np.ones((8, 8), np.int64))[:600].astype(np.int32)  # block edges on the 256-row bands' edges
    labels[rng.random(labels.shape) < 0.05] = 0

    def whole_pairs(lab: np.ndarray, gap: int) -> np.ndarray:
        found = set()
        for d in range(1, gap + 1):
            for a, b in ((lab[:, :-d], lab[:, d:]), (lab[:-d, :], lab[d:, :])):
                m = (a != b) & (a > 0) & (b > 0)
                found |= {(min(x, y), max(x, y)) for x, y in zip(a[m].tolist(), b[m].tolist())}
        return np.array(sorted(found)).reshape(-1, 2)

    for gap in (1, 2, 3):
        np.testing.assert_array_equal(ov.touching_pairs(labels, gap), whole_pairs(labels, gap))
    huge = labels.astype(np.uint64) * np.uint64(3_000_000_000)  # pairs beyond the int64 key
    np.testing.assert_array_equal(ov.touching_pairs(huge), whole_pairs(labels, 2).astype(np.uint64) * 3_000_000_000)
    lut = ov.label_colours(labels)
    edge = ov.boundaries(labels)
    fill, outline = ov.overlay_rgba(labels, "fill", lut), ov.overlay_rgba(labels, "outline", lut)
    np.testing.assert_array_equal(outline, np.where(edge[..., None], lut[labels], 0))
    np.testing.assert_array_equal(fill[..., :3], lut[labels][..., :3])
    np.testing.assert_array_equal(fill[..., 3], np.where(edge, 255, np.where(labels > 0, 150, 0)))

def test_composite_colours_and_levels() -> None:
    data = np.zeros((2, 4, 4), np.uint16)
    data[0, 0, 0] = 1000
    data[1, 1, 1] = 500
    disp = [ov.ChannelDisplay("a", "green", 0, 1000), ov.ChannelDisplay("b", "magenta", 0, 500)]
    rgb = ov.composite(data, disp)
    assert tuple(rgb[0, 0]) == (0, 255, 0) and tuple(rgb[1, 1]) == (255, 0, 255) and tuple(rgb[2, 2]) == (0, 0, 0)
    disp[1].visible = False
    assert tuple(ov.composite(data, disp)[1, 1]) == (0, 0, 0)
    assert tuple(ov.composite(data, disp, only=1)[1, 1]) == (255, 0, 255)


def test_highlight_is_cropped_to_the_cell() -> None:
    labels = np.zeros((50, 60), np.int32)
    labels[10:20, 30:45] = 7
    rgba, (r0, c0) = ov.highlight_rgba(labels, 7)
    assert (r0, c0) == (9, 29) and rgba.shape[:2] == (12, 17)
    assert ov.highlight_rgba(labels, 3) is None


def test_viewer_hover_and_click(qtbot, dsb_pairs) -> None:
    from efficell_app.gui.viewer import ImageViewer

    img = read_image(dsb_pairs[0][0])
    labels = read_mask(dsb_pairs[0][1])
    v = ImageViewer()
    qtbot.addWidget(v)
    v.resize(700, 600)
    v.show()
    v.set_image(img.data, img.channel_names, img.rgb)
    v.set_labels(labels)
    v.describe_cell = lambda lab: f"area_px {int((labels == lab).sum())}"
    target = int(np.bincount(labels.ravel())[1:].argmax()) + 1
    rows, cols = np.nonzero(labels == target)
    k = len(rows) // 2
    pos = v.graphics.mapFromScene(v.pixel_to_scene(rows[k], cols[k]))
    qtbot.mouseMove(v.graphics.viewport(), pos)
    qtbot.waitUntil(lambda: f"cell {target}" in v.info.text(), timeout=3000)
    assert f"area_px {int((labels == target).sum())}" in v.info.text()
    with qtbot.waitSignal(v.cell_clicked, timeout=3000) as blocker:
        qtbot.mouseClick(v.graphics.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert blocker.args == [target] and v.selected_cell() == target
    # opacity slider and outline mode act on the overlay item
    v.opacity.setValue(20)
    assert v.overlay_item.opacity() == pytest.approx(0.2)
    v.overlay_box.setCurrentText("Outline")
    assert v.overlay_item.image[rows[k], cols[k], 3] in (0, 255)
    v.overlay_box.setCurrentText("Hidden")
    assert v.overlay_item.image is None
    with pytest.raises(ValueError):
        v.set_labels(np.zeros((3, 3), np.int32))


def test_viewer_per_channel_contrast(qtbot) -> None:
    from efficell_app.gui.viewer import ImageViewer

    rng = np.random.default_rng(0)
    data = rng.integers(0, 4000, size=(3, 64, 80)).astype(np.uint16)
    v = ImageViewer()
    qtbot.addWidget(v)
    v.set_image(data, ("DAPI", "GFP", "RFP"))
    assert [v.channel_box.itemText(i) for i in range(v.channel_box.count())] == ["Composite", "DAPI", "GFP", "RFP"]
    assert [d.colour for d in v.displays()] == ["green", "magenta", "cyan"]
    v.channel_box.setCurrentIndex(v.channel_box.findData(1))  # GFP alone, in magenta
    assert v.contrast_box.currentData() == 1
    before = v.rendered_image().copy()
    assert before[..., 1].max() == 0 and before[..., 0].max() > 0  # magenta = red + blue
    v.set_channel_levels(1, 0, 100)  # stretch GFP: most pixels saturate
    after = v.rendered_image()
    assert after[..., 0].mean() > before[..., 0].mean() + 50
    v.channel_box.setCurrentIndex(0)  # composite: the other channels keep their own levels
    comp = v.rendered_image()
    assert comp[..., 1].max() > 0
    v.colour_box.setCurrentText("red")  # recolour the channel being adjusted
    assert v.displays()[1].colour == "red"


def test_a_large_image_is_not_averaged_at_each_zoom(qtbot) -> None:
    """pyqtgraph's averaging of a zoomed-out image costs seconds per zoom step on a slide: images
    above ``SMOOTH_ZOOM_OUT_MAX_PIXELS`` are sampled as drawn; smaller ones stay averaged."""
    from efficell_app.gui.viewer import SMOOTH_ZOOM_OUT_MAX_PIXELS, ImageViewer

    v = ImageViewer()
    qtbot.addWidget(v)
    v.set_image(np.zeros((1, 512, 512), np.uint16))
    assert v.image_item.autoDownsample
    side = int(np.sqrt(SMOOTH_ZOOM_OUT_MAX_PIXELS)) + 1
    v.set_image(np.zeros((1, side, side), np.uint8))
    assert not v.image_item.autoDownsample
    v.set_image(np.zeros((1, 512, 512), np.uint16))
    assert v.image_item.autoDownsample  # the next small image is averaged again
