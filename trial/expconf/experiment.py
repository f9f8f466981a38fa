"""The rule set for the whole experiment config and its small sections: optimizations, profiling,
reproducibility, retention_policy, log_policies, security, integrations, slurm and pbs.

Mirrors Determined 0.38.1's experiment.json (its fields, each section by reference, and the grid
searcher's count check on every hyperparameter), optimizations.json, profiling.json,
reproducibility.json, retention-policy.json, log-policies/-policy/-action.json (with the legacy
``{type: ...}`` actions), security.json, kerberos.json, integrations.json, pachyderm*.json,
webhooks.json and hpc-cluster-slurm/-pbs.json.
"""

from __future__ import annotations

from trial.expconf.engine import nullable, obj, optional, union

STRING, BOOLEAN, INTEGER = nullable("string"), nullable("boolean"), nullable("integer")
STRINGS = nullable("array", items={"type": "string"})
LOG_ACTIONS = ("cancel_retries", "exclude_node")


def _required_strings(title: str, *fields: str, port: bool = False) -> dict:
    props = {f: {"type": "string"} for f in fields}
    if port:
        props["port"] = {"type": "integer"}
    return obj(title, props, required=tuple(props))


RULES = {
    "experiment": {
        **obj(
            "an experiment config",
            {
                "bind_mounts": optional("bind-mounts", "array"),
                "checkpoint_policy": {"enum": [None, "best", "all", "none"]},
                "checkpoint_storage": optional("checkpoint-storage", "object"),
                "data": nullable("object"),
                "data_layer": nullable("object"),  # removed in 0.19.10; ignored
                "debug": BOOLEAN,
                "description": STRING,
                "entrypoint": nullable("string", "array", items={"type": "string"}),
                "environment": optional("environment", "object"),
                "hyperparameters": optional("hyperparameters", "object"),
                "integrations": optional("integrations", "object"),
                "internal": {"type": "null"},  # pre-0.15.6 configs carried `internal: null`
                "labels": STRINGS,
                "log_policies": optional("log-policies", "array"),
                "max_restarts": nullable("integer", minimum=0),
                "min_checkpoint_period": optional("length", "object"),
                "min_validation_period": optional("length", "object"),
                "name": STRING,
                "optimizations": optional("optimizations", "object"),
                "pbs": optional("hpc-cluster-pbs", "object"),
                "perform_initial_validation": BOOLEAN,
                "preemption_timeout": INTEGER,
                "profiling": optional("profiling", "object"),
                "project": STRING,
                "records_per_epoch": INTEGER,
                "reproducibility": optional("reproducibility", "object"),
                "resources": optional("resources", "object"),
                "retention_policy": optional("retention-policy", "object"),
                "scheduling_unit": nullable("integer", minimum=1),
                "searcher": optional("searcher", "object"),
                "security": optional("security", "object"),
                "slurm": optional("hpc-cluster-slurm", "object"),
                "tensorboard_storage": optional("tensorboard-storage", "object"),
                "workspace": STRING,
            },
            later=("checkpoint_storage", "name", "hyperparameters", "reproducibility", "searcher"),
        ),
        "if": {"properties": {"searcher": {"properties": {"name": {"const": "grid"}}}}},
        "then": {
            "properties": {
                "hyperparameters": {"additionalProperties": {"rule": "check-grid-hyperparameter"}}
            }
        },
    },
    "optimizations": obj(
        "optimizations (deprecated)",
        {
            "aggregation_frequency": nullable("integer", minimum=1),
            "auto_tune_tensor_fusion": BOOLEAN,
            "average_aggregated_gradients": BOOLEAN,
            "average_training_metrics": BOOLEAN,
            "gradient_compression": BOOLEAN,
            "grad_updates_size_file": STRING,
            "mixed_precision": {"enum": [None, "O0", "O1", "O2", "O3"]},
            "tensor_fusion_cycle_time": nullable("integer", minimum=0),
            "tensor_fusion_threshold": nullable("integer", minimum=0),
        },
    ),
    "profiling": obj(
        "profiling",
        {
            "enabled": BOOLEAN,
            "begin_on_batch": nullable("integer", minimum=0),
            "end_after_batch": nullable("integer", minimum=0),
            "sync_timings": BOOLEAN,
        },
        compareProperties={"type": "a<=b", "a": "begin_on_batch", "b": "end_after_batch"},
    ),
    "reproducibility": obj(
        "reproducibility",
        {"experiment_seed": nullable("integer", minimum=0)},
        later=("experiment_seed",),
    ),
    "retention-policy": obj(
        "retention_policy",
        {"log_retention_days": nullable("integer", minimum=-1, maximum=32767)},
        later=("log_retention_days",),
    ),
    "log-policies": {"type": "array", "items": {"rule": "log-policy"}},
    "log-policy": obj(
        "a log policy",
        {
            "name": STRING,
            "pattern": STRING,
            "action": optional("log-action", "string", "object"),
        },
        checks={
            '"name" must be set, and "pattern" is also required unless you intend to disable '
            "an existing policy": {
                "anyOf": [{"required": ["name"]}, {"required": ["pattern", "action"]}]
            }
        },
    ),
    "log-action": union(
        *(("never", {"const": action}) for action in LOG_ACTIONS),
        *((f"const:type={a}", {"rule": f"log-legacy-action-{a}"}) for a in LOG_ACTIONS),
        message='must be one of "cancel_retries" or "exclude_node"',
    ),
    **{
        f"log-legacy-action-{a}": obj(
            f"a legacy {a} action", {"type": {"const": a}}, required=("type",)
        )
        for a in LOG_ACTIONS
    },
    "security": obj("security", {"kerberos": optional("kerberos", "object")}),
    "kerberos": obj(
        "security.kerberos", {"config_file": {"type": "string"}}, required=("config_file",)
    ),
    "integrations": obj(
        "integrations",
        {
            "pachyderm": optional("pachyderm", "object"),
            "webhooks": optional("webhooks", "object"),
        },
    ),
    "pachyderm": obj(
        "integrations.pachyderm",
        {
            "pachd": _required_strings("pachyderm.pachd", "host", port=True),
            "proxy": _required_strings("pachyderm.proxy", "scheme", "host", port=True),
            "dataset": _required_strings(
                "pachyderm.dataset", "project", "repo", "commit", "branch", "token"
            ),
        },
        required=("pachd", "proxy", "dataset"),
    ),
    "webhooks": obj(
        "integrations.webhooks",
        {
            "webhook_id": nullable("array", items={"type": "integer"}),
            "webhook_name": STRINGS,
            "exclude": BOOLEAN,
        },
    ),
    "hpc-cluster-slurm": obj(
        "slurm",
        {
            "slots_per_node": nullable("integer", minimum=1),
            "gpu_type": STRING,
            "sbatch_args": STRINGS,
        },
    ),
    "hpc-cluster-pbs": obj(
        "pbs", {"slots_per_node": nullable("integer", minimum=1), "pbsbatch_args": STRINGS}
    ),
}
