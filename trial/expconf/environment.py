"""Rule sets for ``environment`` (image, variables, proxy ports, registry auth, pod spec),
``resources`` (devices) and ``bind_mounts``.

Mirrors Determined 0.38.1's environment.json (with its pod_spec rules: the task container
``determined-container`` is the master's to configure), environment-image(-map).json,
environment-variables(-map).json, proxy-port(s).json, registry-auth.json, resources.json,
device(s).json and bind-mount(s).json.
"""

from __future__ import annotations

from trial.expconf.engine import nullable, obj, optional, union

STRING, BOOLEAN = nullable("string"), nullable("boolean")
STRINGS = nullable("array", items={"type": "string"})
DEVICE_TYPES = ("cpu", "cuda", "rocm", "gpu")  # gpu: the old name of cuda, still parsed
TASK_CONTAINER = "determined-container"
_MASTER_OWNS = {
    "image": "container Image is not configurable, set it in the experiment config",
    "command": "container Command is not configurable",
    "args": "container Args are not configurable",
    "working_dir": "container WorkingDir is not configurable",
    "ports": "container Ports are not configurable",
    "liveness_probe": "container LivenessProbe is not configurable",
    "readiness_probe": "container ReadinessProbe is not configurable",
    "startup_probe": "container StartupProbe is not configurable",
    "lifecycle": "container Lifecycle is not configurable",
    "termination_message_path": "container TerminationMessagePath is not configurable",
    "termination_message_policy": "container TerminationMessagePolicy is not configurable",
    "image_pull_policy": "container ImagePullPolicy is not configurable, set it in the "
    "experiment config",
    "security_context": "container SecurityContext is not configurable, set it in the "
    "experiment config",
}
POD_SPEC = {
    "type": ["object", "null"],
    "disallowProperties": {
        "name": "pod Name is not a configurable option",
        "name_space": "pod NameSpace is not a configurable option",
    },
    "properties": {
        "spec": {
            "type": ["object", "null"],
            "properties": {
                "containers": {
                    "type": ["array", "null"],
                    "items": {
                        "if": {"properties": {"name": {"const": TASK_CONTAINER}}},
                        "then": {
                            "type": "object",
                            "disallowProperties": {
                                key: f"{message} ({TASK_CONTAINER} is the master's)"
                                for key, message in _MASTER_OWNS.items()
                            },
                        },
                    },
                }
            },
        }
    },
}
MEMORY_SIZE = r"^([0-9]*[.])?[0-9]+ ?(([kmgtpKMGTP]([iI]?[bB])?)|[bB])?$"

RULES = {
    "environment": obj(
        "environment",
        {
            "image": optional("environment-image", "object", "string"),
            "environment_variables": optional("environment-variables", "object", "array"),
            "proxy_ports": optional("proxy-ports", "array"),
            "ports": nullable("object", additionalProperties={"type": "integer"}),
            "force_pull_image": BOOLEAN,
            "registry_auth": optional("registry-auth", "object"),
            "add_capabilities": STRINGS,
            "drop_capabilities": STRINGS,
            "pod_spec": POD_SPEC,
        },
        later=("image",),
    ),
    "environment-image": union(
        ("type:object", {"rule": "environment-image-map"}),
        ("never", {"type": "string"}),
        message="is neither an image name nor a map of cpu, cuda or rocm to image names",
    ),
    "environment-image-map": obj(
        "environment.image", {k: STRING for k in DEVICE_TYPES}, later=("cpu", "cuda", "rocm")
    ),
    "environment-variables": union(
        ("type:object", {"rule": "environment-variables-map"}),
        ("never", {"type": "array", "items": {"type": "string"}}),
        message="is neither a list of strings nor a map of cpu, cuda or rocm to lists of strings",
    ),
    "environment-variables-map": obj(
        "environment.environment_variables", {k: STRINGS for k in DEVICE_TYPES}
    ),
    "proxy-ports": {"type": "array", "items": {"rule": "proxy-port"}},
    "proxy-port": obj(
        "a proxy port",
        {
            "proxy_port": {"type": "number"},
            "proxy_tcp": BOOLEAN,
            "unauthenticated": BOOLEAN,
            "default_service_id": BOOLEAN,
        },
        required=("proxy_port",),
    ),
    "registry-auth": obj(
        "environment.registry_auth",
        {
            k: STRING
            for k in (
                [
                    "username",
                    "password",
                    "auth",
                    "email",
                    "serveraddress",
                    "identitytoken",
                    "registrytoken",
                ]
            )
        },
    ),
    "resources": obj(
        "resources",
        {
            "agent_label": STRING,  # removed in 0.20.0; ignored
            "devices": optional("devices", "array"),
            "is_single_node": BOOLEAN,
            "max_slots": nullable("integer"),
            "native_parallel": BOOLEAN,
            "priority": nullable("integer", minimum=1, maximum=99),
            "resource_pool": STRING,
            "shm_size": nullable(
                "integer",
                "string",
                checks={"must be a valid memory size": {"pattern": MEMORY_SIZE}},
            ),
            "slots": nullable("integer"),  # the schema parses it; the master refuses it (master.py)
            "slots_per_trial": nullable("integer", minimum=0),
            "weight": nullable("number"),
        },
    ),
    "devices": {
        "type": "array",
        "items": union(
            ("type:object", {"rule": "device"}),
            # docker run --device=onhost:incontainer[:mode]
            ("never", {"type": "string", "pattern": "^/[^:]*:/[^:]*(:[rwm]*)?"}),
            message="is neither a host:container[:mode] device string nor a map with host_path, "
            "container_path and mode",
        ),
    },
    "device": obj(
        "a device",
        {"host_path": {"type": "string"}, "container_path": {"type": "string"}, "mode": STRING},
        required=("host_path", "container_path"),
    ),
    "bind-mounts": {"type": "array", "items": {"rule": "bind-mount"}},
    "bind-mount": obj(
        "a bind mount",
        {
            "host_path": {
                "type": "string",
                "checks": {"host_path must be an absolute path": {"pattern": "^/"}},
            },
            "container_path": {
                "type": "string",
                "checks": {'container_path must not be "."': {"not": {"const": "."}}},
            },
            "read_only": BOOLEAN,
            "propagation": STRING,
        },
        required=("host_path", "container_path"),
    ),
}
