"""CocoMetric that always reports its keys.

mmdet's CocoMetric returns no metrics at all when a model made no detection above ``score_thr``
(typical in a run's first iterations: RetinaNet starts from a 0.01 class prior, below the 0.05
threshold), and Determined fails a trial whose validation lacks the searcher metric. The COCO mAP
of an empty detection set is 0, so this reports exactly that. It does so without asking
pycocotools, whose ``loadRes([])`` raises IndexError on an empty list, which mmdet logs as
``ERROR - The testing results of the whole dataset is empty`` on a perfectly normal run.
"""

from __future__ import annotations

from mmdet.evaluation import CocoMetric
from mmdet.registry import METRICS
from mmengine.logging import MMLogger

COCO_KEYS = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")


@METRICS.register_module()
class ZeroSafeCocoMetric(CocoMetric):
    """mmdet's CocoMetric, plus 0.0 for every standard key of a metric that had no detections."""

    def compute_metrics(self, results: list) -> dict:
        if not self.format_only and not any(len(pred["labels"]) for _, pred in results):
            metrics = {}  # no detection at all: nothing for COCOeval to match
        else:
            metrics = super().compute_metrics(results)
        if self.format_only:
            return metrics
        for metric in self.metrics:
            if metric in ("bbox", "segm") and f"{metric}_mAP" not in metrics:
                MMLogger.get_current_instance().warning(f"no {metric} detections: reporting 0 mAP")
                metrics.update({f"{metric}_{key}": 0.0 for key in COCO_KEYS})
        return metrics
