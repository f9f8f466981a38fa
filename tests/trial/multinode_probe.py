"""``RankProbe`` as a config-built hook, for ranks started by the real cluster entrypoint.

The two-node tests run ``python3 -m determined.launch.torch_distributed python3 -m trial``
unchanged; their model config (``multinode_model.py``) imports this module (``custom_imports``)
and adds ``NodeRankProbe`` to ``custom_hooks``, so each rank records its training image ids and
validation predictions into its own node's ``/tmp/probe`` (what the test reads back per node).
"""

from __future__ import annotations

from pathlib import Path

from mmengine.registry import HOOKS
from rank_probe import RankProbe


@HOOKS.register_module()
class NodeRankProbe(RankProbe):
    """RankProbe whose rank is the Runner's (known once it runs, not at config build time)."""

    def __init__(self, directory: str) -> None:
        self._directory = Path(directory)

    def before_run(self, runner) -> None:
        self._directory.mkdir(parents=True, exist_ok=True)
        RankProbe.__init__(self, self._directory, runner.rank)
