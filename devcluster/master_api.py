"""The few master calls ``up``/``status`` need, through Determined's own SDK (its REST bindings)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from errors import ProjectError


def info(master_url: str) -> dict | None:
    """``GET /info`` (no login needed): the master's version and cluster id, or None when down."""
    try:
        with urllib.request.urlopen(f"{master_url}/info", timeout=3) as resp:
            return json.load(resp)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def login(master_url: str, user: str, password: str):
    """A logged-in ``determined.common.api.Session`` (no token cache written to ~/.determined)."""
    from determined.common.api import authentication, errors

    try:
        return authentication.login(master_url, user, password)
    except errors.APIException as err:
        raise ProjectError(f"login to {master_url} as {user} failed: {err}") from None


def agents(session) -> list[dict]:
    """Every registered agent: id, slots, and whether it is enabled."""
    from determined.common.api import bindings

    listed = bindings.get_GetAgents(session).agents or []
    return [{"id": a.id, "slots": len(a.slots or {}), "enabled": bool(a.enabled)} for a in listed]
