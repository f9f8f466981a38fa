"""TensorBoard pictures cost one validation-image read per drawn image, not one per batch."""

from __future__ import annotations

from types import SimpleNamespace

import mmdet.engine.hooks.visualization_hook as stock
from mmdet.visualization import DetLocalVisualizer

from trial.engine.drawing import SparseDetVisualizationHook


def test_only_drawn_batches_read_their_image(monkeypatch):
    reads, drawn = [], []
    monkeypatch.setattr(stock, "get", lambda path, backend_args=None: reads.append(path) or b"")
    monkeypatch.setattr(stock.mmcv, "imfrombytes", lambda data, channel_order: "img")
    DetLocalVisualizer.get_instance("test_trial_drawing")
    hook = SparseDetVisualizationHook(draw=True, interval=5)
    monkeypatch.setattr(
        hook,
        "_visualizer",
        SimpleNamespace(add_datasample=lambda *a, **kw: drawn.append(kw["step"])),
    )
    runner = SimpleNamespace(iter=10)
    for batch in range(12):
        outputs = [SimpleNamespace(img_path=f"val/{batch}.jpg")]
        hook.after_val_iter(runner, batch, {}, outputs)
    assert drawn == [10, 15, 20]
    assert reads == ["val/0.jpg", "val/5.jpg", "val/10.jpg"]  # mmdet's own hook reads all 12
