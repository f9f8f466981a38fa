"""The project's image in an experiment: the reference must be one ``invoke build-image`` makes.

``invoke build-image --variant V --registry R`` tags ``R/mmdet-determined:<readable tag>`` (and
``…-<content hash>``); without ``--registry`` the tags are ``localhost/…``, which exists only on the
machine that built it: only a cluster on that machine (``invoke cluster up``, a master on loopback)
can run it, and there a bare ``mmdet-determined:<tag>`` means the local image. An experiment names
the project's image as ``mmdet-determined:<tag>`` (no registry: it is filled in from ``--registry``)
or in full. Pure: references in, references out.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

from errors import ConfigError
from images.matrix import CPU, IMAGE_NAME, ImageSpec
from images.plan import HASH_LEN, LOCAL_REGISTRY, repository

IMAGE_KEYS = ("cpu", "cuda", "rocm")  # environment.image may be a mapping of these
HASH_SUFFIX = re.compile(rf"-[0-9a-f]{{{HASH_LEN}}}$")


def resolve_experiment_images(
    experiment: Mapping[str, Any],
    specs: Sequence[ImageSpec],
    *,
    registry: str | None,
    local_cluster: bool = False,
) -> dict:
    """A copy of ``experiment`` whose project image references carry ``registry``; ConfigError
    (one line naming the field) for a reference the project does not build or cannot serve.
    ``local_cluster``: the master runs on this machine, so the images built here may be used."""
    out = copy.deepcopy(dict(experiment))
    environment = out.get("environment")
    image = environment.get("image") if isinstance(environment, Mapping) else None
    kwargs = {"registry": registry, "local_cluster": local_cluster}
    if isinstance(image, str):
        environment["image"] = resolve_ref(image, specs, field="image", **kwargs)
    elif isinstance(image, Mapping):
        environment["image"] = {
            key: resolve_ref(ref, specs, field=f"image.{key}", **kwargs)
            if isinstance(ref, str)
            else ref
            for key, ref in image.items()
        }
    return out


def resolve_ref(
    ref: str,
    specs: Sequence[ImageSpec],
    *,
    registry: str | None,
    field: str,
    local_cluster: bool = False,
) -> str:
    """``ref`` with the project's registry filled in; other images pass unchanged."""
    where, name, tag = _split(ref)
    if name != IMAGE_NAME:
        return ref  # not the project's image: the user's own choice
    label = f"environment.{field} {ref!r}"
    spec = _variant(tag, specs, label=label)
    kind = field.rpartition(".")[2]
    if kind in IMAGE_KEYS and (kind == "cpu") != (spec.cuda == CPU):
        raise ConfigError(
            f"{label} is the {spec.key} variant, which does not fit environment.{field}; "
            f"use a {'cpu' if kind == 'cpu' else 'CUDA'} variant of images/matrix.yaml"
        )
    if local_cluster and not registry and where in ("", LOCAL_REGISTRY):
        return f"{repository(LOCAL_REGISTRY)}:{tag}"  # built here, run here
    if where == LOCAL_REGISTRY:
        raise ConfigError(
            f"{label} exists only on the machine that built it; push it (invoke build-image "
            f"--variant {spec.key} --registry R --push) and name R/{IMAGE_NAME}:{tag}"
        )
    if where and registry and where != registry.rstrip("/"):
        raise ConfigError(
            f"{label} is in registry {where!r}, not --registry {registry!r}; drop the registry "
            f"from the experiment ({IMAGE_NAME}:{tag}) or pass the one it names"
        )
    if not where and not registry:
        raise ConfigError(
            f"{label} has no registry: a cluster cannot pull it; pass --registry R (where "
            f"invoke build-image --variant {spec.key} --registry R --push put it) or write the "
            f"full R/{IMAGE_NAME}:{tag}"
        )
    return f"{repository(where or registry)}:{tag}"


def _variant(tag: str, specs: Sequence[ImageSpec], *, label: str) -> ImageSpec:
    readable = HASH_SUFFIX.sub("", tag)
    for spec in specs:
        if spec.readable_tag == readable:
            return spec
    built = ", ".join(spec.readable_tag for spec in specs)
    raise ConfigError(
        f"{label}: tag {tag!r} is no variant of images/matrix.yaml, so invoke build-image never "
        f"makes it; use one of: {built}"
    )


def _split(ref: str) -> tuple[str, str, str]:
    """``registry/path/name:tag@digest`` -> (``registry/path``, ``name``, ``tag``)."""
    ref = ref.split("@", 1)[0]
    path, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "")
    where, _, name = path.rpartition("/")
    return where, name, tag
