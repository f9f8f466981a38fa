# The two-node tests' model: mmdet's RetinaNet R18-FPN at a sixteenth of its width (about 0.3 M
# parameters: fast steps, small checkpoints through the GCS emulator), every detection kept (a few
# steps leave scores below mmdet's 0.05), and the probe hook that records what each rank saw.
_base_ = "mmdet::retinanet/retinanet_r18_fpn_1x_coco.py"
custom_imports = dict(imports=["multinode_probe"], allow_failed_imports=False)
custom_hooks = [dict(type="NodeRankProbe", directory="/tmp/probe")]
model = dict(
    backbone=dict(base_channels=16),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=32),
    bbox_head=dict(in_channels=32, feat_channels=32, stacked_convs=1),
    test_cfg=dict(score_thr=0.0),
)
