"""A real Determined 0.38.1 cluster on this machine: ``invoke cluster up / down / status``.

The project's equivalent of Determined's ``det deploy local`` and its CI's devcluster: PostgreSQL,
the master, and N agents with CPU slots, each agent's Docker API served by podman (runc, cgroupfs,
rlimits within the sandbox's) through ``podman-docker-shim``. Master and agent are built from
Determined's Go module at v0.38.1 by the small Go module in ``devcluster/go`` (no Determined source
is copied) and cached per version.

Modules, lower first: ``spec`` (what a cluster is: ports, dirs, pure), ``processes`` (start/stop
daemons by PID), ``binaries`` (the Go build), ``postgres``, ``podman``, ``master_api`` (the
master's REST API through Determined's SDK), ``cluster`` (up/down/status), ``cli``.
devcluster may import ``images`` (the storage the images are built into) and ``errors``; nothing in
images/, staging/ or trial/ imports devcluster.
"""
