"""Rule sets for ``checkpoint_storage`` (one per storage type) and the legacy ``tensorboard_storage``.

Mirrors Determined 0.38.1's checkpoint-storage.json (a union keyed by ``type``; without a type only
the save policy is checked, because the master merges the workspace's and its own storage in),
shared-fs.json, directory.json, s3.json, gcs.json, azure.json and tensorboard-storage.json.
"""

from __future__ import annotations

from trial.expconf.engine import nullable, obj, union

STRING = nullable("string")
COUNT = nullable("integer", minimum=0)
SAVE_POLICY = {k: COUNT for k in ("save_experiment_best", "save_trial_best", "save_trial_latest")}
STORAGE_TYPES = ("shared_fs", "directory", "s3", "gcs", "azure")
# s3/gcs: a prefix may not climb out of the bucket.
PREFIX = nullable(
    "string",
    checks={
        "prefix cannot contain /../": {
            "not": {
                "anyOf": [
                    {"type": "string", "pattern": pattern}
                    for pattern in (r"/\.\./", r"^\.\./", r"/\.\.$", r"^\.\.$")
                ]
            }
        }
    },
)


def _storage(kind: str, fields: dict, *, later: tuple[str, ...], **rules) -> dict:
    return obj(
        f"{kind} checkpoint storage",
        {"type": {"const": kind}, **fields, **SAVE_POLICY},
        required=("type",),
        later=later,
        **rules,
    )


RULES = {
    "checkpoint-storage": {
        # Every field of every type may appear; with a type, that type's own rule set decides.
        **obj(
            "any checkpoint storage",
            {
                **dict.fromkeys(
                    [
                        "access_key",
                        "account_url",
                        "bucket",
                        "checkpoint_path",
                        "connection_string",
                        "container",
                        "container_path",
                        "credential",
                        "endpoint_url",
                        "prefix",
                        "host_path",
                        "propagation",
                        "secret_key",
                        "storage_path",
                        "tensorboard_path",
                        "type",
                        "user",
                    ],
                    True,
                ),
                **SAVE_POLICY,
            },
            later=("type",),
        ),
        "if": {"required": ["type"]},
        "then": union(
            *((f"const:type={kind}", {"rule": kind}) for kind in STORAGE_TYPES),
            message="is not one of " + ", ".join(STORAGE_TYPES),
            field="type",
        ),
    },
    "shared_fs": _storage(
        "shared_fs",
        {
            "host_path": STRING,
            "storage_path": STRING,
            "propagation": STRING,
            "container_path": STRING,
            "checkpoint_path": STRING,
            "tensorboard_path": STRING,
        },
        later=("host_path",),
        checks={
            "storage_path must either be a relative directory or a subdirectory of host_path": {
                "compareProperties": {
                    "type": "a_is_subdir_of_b",
                    "a": "storage_path",
                    "b": "host_path",
                }
            }
        },
    ),
    "directory": _storage("directory", {"container_path": STRING}, later=("container_path",)),
    "s3": _storage(
        "s3",
        {
            "bucket": STRING,
            "access_key": STRING,
            "secret_key": STRING,
            "endpoint_url": STRING,
            "prefix": PREFIX,
        },
        later=("bucket",),
    ),
    "gcs": _storage("gcs", {"bucket": STRING, "prefix": PREFIX}, later=("bucket",)),
    "azure": _storage(
        "azure",
        {k: STRING for k in ("container", "connection_string", "account_url", "credential")},
        later=("container",),
        checks={
            "credential and connection_string must not both be set": {
                "not": {
                    "required": ["connection_string", "credential"],
                    "properties": {
                        "connection_string": {"type": "string"},
                        "credential": {"type": "string"},
                    },
                }
            }
        },
        eventually={
            "checks": {
                "exactly one of connection_string or account_url must be set": {
                    "oneOf": [
                        {"eventuallyRequired": ["connection_string"]},
                        {"eventuallyRequired": ["account_url"]},
                    ]
                }
            }
        },
    ),
    # Unused for years: it must still be a well-formed shared_fs/s3/gcs config without a policy.
    "tensorboard-storage": {
        **union(
            ("never", {"rule": "shared_fs"}),
            ("never", {"rule": "s3"}),
            ("never", {"rule": "gcs"}),
            message="is not a shared_fs, s3 or gcs storage config (it is ignored: drop it)",
        ),
        "disallowProperties": dict.fromkeys(
            SAVE_POLICY, "tensorboard_storage is ignored by Determined: drop it"
        ),
    },
}
