"""Each kind of disagreement between the old offline table and a Determined 0.38.1 master, as a
one-line edit of experiments/retinanet.yaml that the master takes and one it refuses (the verdicts
come from reading Determined's schemas and parseCreateExperiment at v0.38.1, not from its test
vectors, which test_trial_expconf_vectors.py runs separately)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
from test_trial_experiments import _set

from errors import ConfigError
from trial.expconf import validate_experiment
from trial.expconf.master import deprecations
from trial.settings.hparams import EXPERIMENTS_DIR, load_experiment

BASE = load_experiment(EXPERIMENTS_DIR / "retinanet.yaml")
ASHA = {"name": "adaptive_asha", "metric": "m", "max_trials": 4, "time_metric": "batches"}
GRID_INT = {"type": "int", "minval": 1, "maxval": 4}
AZURE = {"type": "azure", "container": "c"}


def edit(**fields) -> Callable[[dict], None]:
    """Set fields, ``__`` between levels (``resources__slots=1``)."""
    setters = [_set(name.replace("__", "."), value) for name, value in fields.items()]

    def apply(experiment: dict) -> None:
        for setter in setters:
            setter(experiment)

    return apply


# class -> edits a 0.38.1 master takes
ACCEPTED = {
    "storage-policy-only": [edit(checkpoint_storage={"save_trial_best": 3})],
    "device-string": [edit(resources__devices=["/dev/infiniband:/dev/infiniband:rwm", "/a:/b"])],
    "env-var-without-equals": [edit(environment__environment_variables=["NCCL_DEBUG", "A=1"])],
    "storage-required-fields": [
        edit(checkpoint_storage={"type": "s3", "bucket": "b", "prefix": "runs"}),
        edit(checkpoint_storage={"type": "gcs", "bucket": "b"}),
        edit(checkpoint_storage={"type": "directory", "container_path": "/ckpt"}),
        edit(checkpoint_storage={**AZURE, "connection_string": "cs"}),
        edit(checkpoint_storage={**AZURE, "account_url": "u", "credential": "k"}),
        edit(checkpoint_storage={"type": "shared_fs", "host_path": "/m", "storage_path": "/m/c"}),
        # the cluster's own shared_fs storage fills host_path in
        edit(checkpoint_storage={"type": "shared_fs", "storage_path": "ckpt"}),
    ],
    "slots": [edit(resources__slots_per_trial=2), edit(resources__slots=None)],  # null: not set
    "workspace-project": [edit(workspace="vision", project="coco")],
    "searcher-max-length": [
        edit(searcher__max_length={"batches": 1}),
        edit(searcher__max_length=0),  # a plain count may be 0
        edit(
            searcher={
                **ASHA,
                "name": "async_halving",
                "num_rungs": 3,
                "max_time": 9,
                "max_length": {"epochs": 2},
            }
        ),
    ],
    "profiling": [edit(profiling={"enabled": True, "begin_on_batch": 5, "end_after_batch": 5})],
    "reproducibility": [edit(reproducibility={"experiment_seed": 2**32 - 1})],
    "optimizations": [edit(optimizations={"aggregation_frequency": 2, "mixed_precision": "O1"})],
    "retention-policy": [edit(retention_policy={"log_retention_days": -1})],
    "log-policies": [
        edit(
            log_policies=[
                {"name": "oom", "pattern": ".*CUDA out of memory.*", "action": "cancel_retries"},
                {"name": "ECC Error"},
            ]
        ),
        edit(log_policies=[{"pattern": "x", "action": {"type": "exclude_node"}}]),
    ],
    "proxy-ports": [edit(environment__proxy_ports=[{"proxy_port": 6006, "proxy_tcp": True}])],
    "registry-auth": [edit(environment__registry_auth={"username": "u", "password": "p"})],
    "pod-spec": [
        edit(
            environment__pod_spec={
                "spec": {
                    "containers": [
                        {"name": "sidecar", "image": "busybox"},
                        {
                            "name": "determined-container",
                            "resources": {"limits": {"memory": "8Gi"}},
                        },
                    ]
                }
            }
        )
    ],
    "shm-size-bytes": [edit(resources__shm_size=8589934592)],
    "asha-time-budget": [edit(searcher={**ASHA, "max_time": 100})],
    "grid-counts": [
        edit(
            searcher={"name": "grid", "metric": "m"},
            hyperparameters__depth={**GRID_INT, "count": 4},
        )
    ],
    "tensorboard-storage": [edit(tensorboard_storage={"type": "shared_fs", "host_path": "/t"})],
    "categorical": [edit(hyperparameters__wd={"type": "categorical", "vals": [0.1]})],
}
# class -> edits it refuses: (edit, field named first, words in the message)
REFUSED = {
    "storage-policy-only": [
        (edit(checkpoint_storage={"bucket": "b"}), "checkpoint_storage.bucket", "without a type"),
        (
            edit(checkpoint_storage={"save_trial_best": -1}),
            "checkpoint_storage.save_trial_best",
            "minimum",
        ),
    ],
    "device-string": [
        (edit(resources__devices=["dev:/x"]), "resources.devices[0]", "device string"),
        (edit(resources__devices=["/a:/b:rw:x"]), "resources.devices[0]", "invalid device string"),
    ],
    "env-var-without-equals": [
        (
            edit(environment__environment_variables=[1]),
            "environment.environment_variables",
            "list of strings",
        ),
    ],
    "storage-required-fields": [
        (
            edit(checkpoint_storage={"type": "s3"}),
            "checkpoint_storage.bucket",
            "is required once the master has filled its defaults",
        ),
        (
            edit(checkpoint_storage={"type": "gcs", "prefix": "p"}),
            "checkpoint_storage.bucket",
            "set the bucket",
        ),
        (
            edit(checkpoint_storage={"type": "directory"}),
            "checkpoint_storage.container_path",
            "is required",
        ),
        (
            edit(checkpoint_storage=AZURE),
            "checkpoint_storage",
            "exactly one of connection_string or account_url",
        ),
        (
            edit(checkpoint_storage={**AZURE, "connection_string": "c", "account_url": "u"}),
            "checkpoint_storage",
            "exactly one of",
        ),
        (
            edit(checkpoint_storage={**AZURE, "connection_string": "c", "credential": "k"}),
            "checkpoint_storage",
            "credential and connection_string must not both be set",
        ),
        (
            edit(checkpoint_storage={"type": "shared_fs", "host_path": "/m", "storage_path": "/x"}),
            "checkpoint_storage",
            "subdirectory of host_path",
        ),
        (
            edit(checkpoint_storage={"type": "s3", "bucket": "b", "prefix": "a/../b"}),
            "checkpoint_storage.prefix",
            "/../",
        ),
    ],
    "slots": [(edit(resources__slots=8), "resources.slots", "resources.slots_per_trial")],
    "workspace-project": [
        (edit(workspace="vision"), "project", "both be set"),
        (edit(project="coco"), "workspace", "both be set"),
    ],
    "searcher-max-length": [
        (edit(searcher__max_length={"batches": 0}), "searcher.max_length.batches", "minimum"),
        (edit(searcher__max_length=-1), "searcher.max_length", "minimum"),
        (
            edit(
                searcher={
                    **ASHA,
                    "name": "async_halving",
                    "num_rungs": 3,
                    "max_time": 9,
                    "max_length": 100,
                }
            ),
            "searcher.max_length",
            "not of type",
        ),
        (
            edit(searcher__max_length={"batches": 5, "epochs": 1}),
            "searcher.max_length",
            "one attribute",
        ),
    ],
    "profiling": [
        (
            edit(profiling={"begin_on_batch": 9, "end_after_batch": 1}),
            "profiling",
            "begin_on_batch must be less than end_after_batch",
        ),
        (edit(profiling={"enable": True}), "profiling.enable", "did you mean 'enabled'"),
    ],
    "reproducibility": [
        (
            edit(reproducibility={"experiment_seed": -1}),
            "reproducibility.experiment_seed",
            "minimum",
        ),
        (
            edit(reproducibility={"experiment_seed": 2**32}),
            "reproducibility.experiment_seed",
            "32 bits",
        ),
    ],
    "optimizations": [
        (edit(optimizations={"mixed_precision": "O4"}), "optimizations.mixed_precision", "O3"),
        (
            edit(optimizations={"aggregation_frequency": 0}),
            "optimizations.aggregation_frequency",
            "minimum",
        ),
    ],
    "retention-policy": [
        (edit(retention_policy={}), "retention_policy.log_retention_days", "is required"),
        (
            edit(retention_policy={"log_retention_days": 40000}),
            "retention_policy.log_retention_days",
            "maximum",
        ),
    ],
    "log-policies": [
        (edit(log_policies=[{"pattern": "x"}]), "log_policies[0]", '"name" must be set'),
        (
            edit(log_policies=[{"name": "n", "action": "reboot"}]),
            "log_policies[0].action",
            "cancel_retries",
        ),
        (
            edit(log_policies=[{"name": "n", "pattern": "a"}, {"name": "n", "pattern": "b"}]),
            "log_policies",
            "two policies are named 'n'",
        ),
    ],
    "proxy-ports": [
        (
            edit(environment__proxy_ports=[{"proxy_tcp": True}]),
            "environment.proxy_ports[0].proxy_port",
            "is required",
        ),
        (
            edit(environment__proxy_ports=[{"proxy_port": 80.5}]),
            "environment.proxy_ports[0].proxy_port",
            "whole number",
        ),
    ],
    "registry-auth": [
        (
            edit(environment__registry_auth={"user": "u"}),
            "environment.registry_auth.user",
            "did you mean 'username'",
        ),
    ],
    "pod-spec": [
        (
            edit(
                environment__pod_spec={
                    "spec": {
                        "containers": [{"name": "determined-container", "image": "mine:latest"}]
                    }
                }
            ),
            "environment.pod_spec.spec.containers[0].image",
            "set it in the experiment config",
        ),
    ],
    "shm-size-bytes": [
        (edit(resources__shm_size="4G"), "resources.shm_size", "refuses a string"),
    ],
    "asha-time-budget": [
        (
            edit(searcher={**ASHA, "time_metric": None, "max_length": {"batches": 9}}),
            "searcher.max_time",
            "max_time and time_metric",
        ),
        (edit(searcher={**ASHA, "max_time": 0}), "searcher.max_time", "this project's rule"),
    ],
    "grid-counts": [
        (
            edit(searcher={"name": "grid", "metric": "m"}, hyperparameters__depth=GRID_INT),
            "hyperparameters.depth",
            "count was not provided",
        ),
    ],
    "tensorboard-storage": [
        (
            edit(
                tensorboard_storage={"type": "shared_fs", "host_path": "/t", "save_trial_best": 1}
            ),
            "tensorboard_storage.save_trial_best",
            "ignored",
        ),
    ],
    "categorical": [
        (
            edit(hyperparameters__wd={"type": "categorical", "vals": []}),
            "hyperparameters.wd.vals",
            "this project's rule",
        ),
    ],
}


def _edited(change: Callable[[dict], None]) -> dict:
    experiment = copy.deepcopy(BASE)
    change(experiment)
    return experiment


def _cases(table: dict) -> list:
    return [
        pytest.param(kind, case, id=f"{kind}-{i}")
        for kind, cases in table.items()
        for i, case in enumerate(cases)
    ]


def test_every_class_has_an_accepted_and_a_refused_edit():
    assert set(ACCEPTED) == set(REFUSED)


@pytest.mark.parametrize(("kind", "change"), _cases(ACCEPTED))
def test_the_master_takes_it(kind, change):
    validate_experiment(_edited(change), source="edit.yaml")


@pytest.mark.parametrize(("kind", "case"), _cases(REFUSED))
def test_the_master_refuses_it_on_one_line_naming_the_field(kind, case):
    change, field, words = case
    with pytest.raises(ConfigError) as err:
        validate_experiment(_edited(change), source="edit.yaml")
    message = str(err.value)
    assert message.startswith(f"edit.yaml: {field}: "), message
    assert words in message and "\n" not in message, message


def test_deprecated_sections_stay_notices():
    experiment = _edited(edit(optimizations={"aggregation_frequency": 2}, searcher__max_length=9))
    notices = validate_experiment(experiment, source="old.yaml")
    assert [n.split(" is deprecated")[0] for n in notices] == [
        "old.yaml: searcher.max_length",
        "old.yaml: optimizations",
    ]


# Excerpt of DET_EXPERIMENT_CONFIG in a trial on a real 0.38.1 master (tests/cluster), for an
# experiment that set none of these fields: the master fills them in.
MASTER_EXPANDED = {
    "min_checkpoint_period": {"batches": 0},
    "min_validation_period": {"batches": 0},
    "scheduling_unit": 100,
    "optimizations": {"aggregation_frequency": 1, "average_aggregated_gradients": True,
                      "average_training_metrics": True, "gradient_compression": False,
                      "grad_updates_size_file": None, "mixed_precision": "O0",
                      "tensor_fusion_threshold": 64, "tensor_fusion_cycle_time": 1,
                      "auto_tune_tensor_fusion": False},
    "searcher": {"metric": "bbox_mAP", "name": "single", "smaller_is_better": False,
                 "source_checkpoint_uuid": None, "source_trial_id": None},
}  # fmt: skip


def test_what_the_master_fills_in_is_not_a_deprecated_setting():
    """A trial reads the master's expanded config: its defaults must not read as the user's."""
    assert deprecations(MASTER_EXPANDED, source="experiment") == []
    changed = {**MASTER_EXPANDED, "min_checkpoint_period": {"batches": 50}, "scheduling_unit": 10}
    assert [n.split(" is deprecated")[0] for n in deprecations(changed, source="e")] == [
        "e: min_checkpoint_period",
        "e: scheduling_unit",
    ]


def test_storage_the_cluster_merges_in_decides_what_is_still_missing():
    s3_prefix_only = _edited(edit(checkpoint_storage={"type": "s3", "prefix": "runs"}))
    with pytest.raises(ConfigError, match=r"checkpoint_storage\.bucket: is required"):
        validate_experiment(s3_prefix_only, source="x.yaml")  # the default cluster has shared_fs
    cluster = {"type": "s3", "bucket": "team-ckpt", "save_trial_best": 1}
    assert validate_experiment(s3_prefix_only, source="x.yaml", cluster_storage=cluster) == []


def test_a_project_rule_says_it_is_the_projects_and_not_determineds():
    experiment = _edited(edit(entrypoint=""))
    with pytest.raises(
        ConfigError, match=r"this project's rule, stricter than Determined 0\.38\.1"
    ):
        validate_experiment(experiment, source="x.yaml")
