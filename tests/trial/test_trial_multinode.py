"""Two nodes on one machine, each running what a Determined 0.38.1 trial container runs.

Each node has its own network address, ``/tmp`` (node cache, work directory, HOME) and cluster
info; on each, ``hooks/startup-hook.sh`` stages the ``data:`` section from the GCS emulator, then
``python3 -m determined.launch.torch_distributed python3 -m trial`` starts its ranks, which meet
over the network (torch's rendezvous at the chief node's address; gloo). Checkpoints go through
Determined's ``gcs`` storage into the emulator: no filesystem is shared. The master is a
stand-in (``master_standin.py``, NOT Determined; each test's name says so): the single-node path
runs on a real 0.38.1 master in tests/cluster/; two nodes of the real cluster is the next step.
See ``nodes_helpers.py``.

Three trainings prove it, each as small as the point it makes (a 0.3 M-parameter RetinaNet on
the real COCO sample): 2 nodes x 1 slot with a late second node (rendezvous, sharding,
reporting, staging per node, validation across nodes = a 1-rank evaluation); 2 nodes x 2 slots
preempted by the master then resumed; and node faults (kill -9 of node 1, then node 1's link cut)
each followed by an allocation that resumes.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from nodes_helpers import (
    CHECKPOINT_BUCKET,
    DATA_PREFIX,
    HERE,
    Allocation,
    Cluster,
    experiment,
    two_nodes,
)

from trial.testing.nodes import leftovers, unavailable_reason

pytestmark = [
    pytest.mark.slow,
    pytest.mark.training,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]
MODEL = str(HERE / "multinode_model.py")
HPARAMS = {
    "model": MODEL,
    "pretrained": False,
    "global_batch_size": 4,
    "image_scale": [96, 96],
    "num_workers": 0,
    "log_interval": 2,
}
TIMEOUT_S = 600
LATE_S = 10  # node 1 starts this long after node 0
DIST_TIMEOUT_S = 20  # hyperparameters.dist_timeout: how long a collective may wait for a peer


@pytest.fixture
def cluster(tmp_path, coco_sample):
    with two_nodes(tmp_path, coco_sample) as c:
        yield c
    assert not leftovers(c.net), "namespaces or links outlived the test"
    assert not any(node.pids() for node in c.net.nodes)


def allocation_id() -> str:
    return f"alloc-{uuid.uuid4().hex[:8]}"


def checkpoints(cluster: Cluster) -> list[tuple[int, str]]:
    return [
        (c.body["metadata"]["steps_completed"], c.body["uuid"])
        for c in cluster.standin.find("POST", "/api/v1/checkpoints")
    ]


def probe(cluster: Cluster, node: int, rank: int, kind: str) -> list[dict]:
    path = cluster.node_tmp(node) / "probe" / f"{kind}-rank{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def finish(alloc: Allocation, timeout: float = TIMEOUT_S) -> list[int]:
    codes = alloc.wait(timeout)
    for node in range(len(alloc.procs)):
        print(f"--- node {node} ({alloc.id}), exit {codes[node]}:\n{alloc.log(node)[-3000:]}")
    return codes


def wait_until(predicate, alloc: Allocation, what: str, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if any(p.poll() is not None for p in alloc.procs):
            finish(alloc, 1)
            pytest.fail(f"a node exited before {what}")
        if time.monotonic() > deadline:
            finish(alloc, 1)
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_two_nodes_rendezvous_shard_report_stage_per_node_and_validate_like_one_rank_master_standin(
    cluster, tmp_path, coco_sample
):
    hparams = {**HPARAMS, "max_iters": 4, "val_interval": 4, "checkpoint_interval": 4}
    config = experiment(hparams, slots_per_trial=2, prefix=f"run-{uuid.uuid4().hex[:6]}")
    node0, node1 = (n.address for n in cluster.nodes)
    alloc = cluster.start(config, slots=1, allocation=allocation_id(), delays=(0, LATE_S))
    assert finish(alloc) == [0, 0]

    # The late node joined: both ranks called core.init, each from its own address.
    starts = cluster.standin.find("POST", "/api/v1/runs/start")
    assert sorted(c.client for c in starts) == sorted([node0, node1])

    # Every step, the two ranks (one per node) trained on disjoint images making the global batch.
    ids = [probe(cluster, 0, 0, "image-ids"), probe(cluster, 1, 1, "image-ids")]
    assert [s["step"] for s in ids[0]] == [s["step"] for s in ids[1]] == [1, 2, 3, 4]
    for a, b in zip(*ids, strict=True):
        assert len(a["ids"]) == len(b["ids"]) == 2 and not set(a["ids"]) & set(b["ids"])
    assert not probe(cluster, 0, 1, "image-ids") and not probe(cluster, 1, 0, "image-ids")

    # Rank 0 alone reports, once per report step, validation with `batches`.
    metric_calls = cluster.standin.find("POST", r"/api/v1/trials/\d+/metrics")
    assert {c.client for c in metric_calls} == {node0}
    assert [s for s, _ in cluster.standin.metrics("training")] == [2, 4]
    val = cluster.standin.metrics("validation")
    assert [(s, m["batches"]) for s, m in val] == [(4, 4)]

    # Staging: every object of the sample downloaded exactly once by each node, by itself.
    downloads = Counter(
        (r.client, r.line.split("/o/", 1)[1].split("?", 1)[0])
        for r in cluster.gcs.media_requests(f"{DATA_PREFIX}%2F")
    )
    objects = {name for _, name in downloads}
    splits = ("annotations", "train2017", "val2017")
    files = [p for p in coco_sample.rglob("*") if p.is_file() and p.parent.name in splits]
    assert len(objects) == len(files)
    assert downloads == Counter({(addr, name): 1 for addr in (node0, node1) for name in objects})

    # Validation gathered across the nodes equals one rank evaluating the stored checkpoint: the
    # same metrics, and every image predicted once, by one rank, with the same boxes.
    ((step, storage_id),) = checkpoints(cluster)
    assert step == 4
    ckpt = download_checkpoint(config, storage_id, tmp_path / "eval")
    one_rank, single = evaluate_one_rank(coco_sample, ckpt, tmp_path / "eval")
    for key, value in one_rank.items():
        assert val[0][1][key] == pytest.approx(value, abs=1e-9), key
    parts = [predictions(cluster, 0, 0), predictions(cluster, 1, 1)]
    assert not set(parts[0]) & set(parts[1])
    assert {**parts[0], **parts[1]}.keys() == single.keys()
    for img_id, (boxes, scores) in {**parts[0], **parts[1]}.items():
        assert len(boxes) == len(single[img_id][0]) > 0, img_id
        np.testing.assert_allclose(
            detections(boxes, scores), detections(*single[img_id]), atol=0.02, err_msg=str(img_id)
        )


def download_checkpoint(config: dict, storage_id: str, target: Path) -> Path:
    """The checkpoint file from the emulator (what a node's rank downloads to resume)."""
    from staging.stores.gcs import get_client

    prefix = config["checkpoint_storage"]["prefix"]
    blob = get_client().bucket(CHECKPOINT_BUCKET).blob(f"{prefix}/{storage_id}/checkpoint.pth")
    target.mkdir(parents=True, exist_ok=True)
    blob.download_to_filename(str(target / "checkpoint.pth"))
    return target / "checkpoint.pth"


def predictions(cluster: Cluster, node: int, rank: int) -> dict[int, tuple[list, list]]:
    return {
        r["img_id"]: (r["bboxes"], r["scores"]) for r in probe(cluster, node, rank, "predictions")
    }


def detections(boxes: list, scores: list) -> np.ndarray:
    """(score, box) rows in a canonical order: tied scores may come out of NMS in either order."""
    rows = np.round(np.column_stack([scores, boxes]), 2)
    return rows[np.lexsort(rows.T[::-1])]


def evaluate_one_rank(data: Path, checkpoint: Path, work: Path) -> tuple[dict, dict]:
    """One process, no launcher: mmengine's Runner.val() on the checkpoint with the trial's
    config; the metrics as the trial reports them and the predictions per image."""
    from mmengine.runner import Runner
    from rank_probe import RankProbe

    from trial.engine.hook import to_det_metrics
    from trial.runtime.data import coco_dir_paths
    from trial.runtime.train import trusted_checkpoint_loading
    from trial.settings.config import build_config, load_base_config
    from trial.settings.hparams import trial_settings

    hparams = {**HPARAMS, "max_iters": 4}
    settings = trial_settings({}, hparams, data=coco_dir_paths(data), work_dir=str(work))
    cfg = build_config(load_base_config(MODEL), settings)
    cfg["custom_hooks"] = []  # the node probe writes to /tmp/probe; this one writes into `work`
    cfg["load_from"] = str(checkpoint)
    runner = Runner.from_cfg(cfg)
    runner.register_hook(RankProbe(work, rank=9))
    with trusted_checkpoint_loading():
        metrics = runner.val()
    records = [
        json.loads(line) for line in (work / "predictions-rank9.jsonl").read_text().splitlines()
    ]
    return to_det_metrics(metrics), {r["img_id"]: (r["bboxes"], r["scores"]) for r in records}


def last_steps(cluster: Cluster, slots: int) -> dict[int, int]:
    """rank -> the last training step its probe recorded."""
    return {
        node * slots + local: probe(cluster, node, node * slots + local, "image-ids")[-1]["step"]
        for node in (0, 1)
        for local in range(slots)
    }


def test_two_nodes_two_slots_preempted_by_the_master_stop_at_one_step_then_resume_master_standin(
    cluster,
):
    hparams = {**HPARAMS, "max_iters": 8, "val_interval": 8, "checkpoint_interval": 8}
    config = experiment(hparams, slots_per_trial=4, prefix=f"run-{uuid.uuid4().hex[:6]}")
    # The master preempts once rank 0 reported its first training metrics (step 2).
    cluster.standin.preempt_when = lambda call: call.path.endswith("/metrics")
    alloc = cluster.start(config, slots=2, allocation=allocation_id())
    assert finish(alloc) == [0, 0]

    ((stopped, latest),) = checkpoints(cluster)  # one checkpoint, at the step all ranks stopped
    assert 2 < stopped < 8
    assert last_steps(cluster, 2) == {rank: stopped for rank in range(4)}
    node0 = cluster.nodes[0].address
    acks = cluster.standin.find("POST", r"/api/v1/allocations/[^/]+/signals/ack_preemption")
    assert [c.client for c in acks] == [node0]  # the chief alone talks to the master about it

    # A second allocation resumes after the checkpoint: each node downloads it for itself.
    cluster.standin.reset()
    cluster.standin.preempt_when = None
    before = len(cluster.gcs.records)
    alloc = cluster.start(
        config,
        slots=2,
        allocation=allocation_id(),
        latest_checkpoint=latest,
        steps_completed=stopped,
    )
    assert finish(alloc) == [0, 0]
    steps = [s for s, _ in cluster.standin.metrics("training")]
    assert steps and min(steps) > stopped and max(steps) == 8
    assert [s for s, _ in checkpoints(cluster)] == [8]
    fetched = {
        r.client for r in cluster.gcs.records[before:] if latest in r.line and "alt=media" in r.line
    }
    assert fetched == {n.address for n in cluster.nodes}


def test_node_faults_fail_the_allocation_in_bounded_time_and_the_next_one_resumes_master_standin(
    cluster,
):
    hparams = {
        **HPARAMS,
        "max_iters": 20,
        "val_interval": 40,
        "checkpoint_interval": 2,
        "dist_timeout": DIST_TIMEOUT_S,
    }
    config = experiment(hparams, slots_per_trial=2, prefix=f"run-{uuid.uuid4().hex[:6]}")

    # kill -9 of every process of node 1: node 0 exits non-zero within 60 s.
    alloc = cluster.start(config, slots=1, allocation=allocation_id())
    wait_until(lambda: checkpoints(cluster), alloc, "the first checkpoint")
    assert cluster.nodes[1].kill() > 0
    killed = time.monotonic()
    code0 = alloc.procs[0].wait(timeout=120)
    elapsed = time.monotonic() - killed
    finish(alloc, 1)
    print(f"node 0 exited with {code0} {elapsed:.1f} s after node 1 was killed")
    assert code0 != 0 and elapsed < 60

    # The next allocation resumes from the last checkpoint; then node 1's link is cut: every
    # rank gives up after dist_timeout (not torch's 30 min), and both nodes exit non-zero.
    step, latest = checkpoints(cluster)[-1]
    cluster.standin.reset()
    alloc = cluster.start(
        config, slots=1, allocation=allocation_id(), latest_checkpoint=latest, steps_completed=step
    )
    wait_until(lambda: any(s > step for s, _ in checkpoints(cluster)), alloc, "a new checkpoint")
    assert min(s for s, _ in cluster.standin.metrics("training")) > step
    cluster.nodes[1].set_link(up=False)
    cut = time.monotonic()
    codes = finish(alloc, DIST_TIMEOUT_S + 90)
    elapsed = time.monotonic() - cut
    print(f"exit codes {codes} {elapsed:.1f} s after node 1's link was cut")
    assert all(code not in (0, -9) for code in codes), "a node hung (killed) or claimed success"
    assert elapsed < DIST_TIMEOUT_S + 60

    # Link back up: the third allocation resumes from the newest checkpoint and finishes.
    cluster.nodes[1].set_link(up=True)
    step, latest = checkpoints(cluster)[-1]
    cluster.standin.reset()
    alloc = cluster.start(
        config, slots=1, allocation=allocation_id(), latest_checkpoint=latest, steps_completed=step
    )
    assert finish(alloc) == [0, 0]
    steps = [s for s, _ in cluster.standin.metrics("training")]
    assert min(steps) > step and max(steps) == 20
