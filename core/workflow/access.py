"""Who may change a project: read-only share links for collaborators, and edit keys on a team server.

- A **share link** (``?project=NAME&share=TOKEN``) opens the project read-only: its results, report and verdict, and
  no control that starts a job, writes or deletes. The owner makes one and revokes them all (home page, or
  ``python -m core share``); a revoked link stops working at the next click.
- On a server configured for a team (``REACTOMO_TEAM=1``), a project URL alone is read-only too: changing a project
  needs its **edit key** (``?project=NAME&key=KEY``), which the session that created the project holds, and which the
  owner (or the administrator, with ``python -m core share NAME --edit-link``) hands to whoever should edit.

Tokens are 32 random bytes (``secrets``), compared in constant time, kept in ``access.json`` in the project folder
(mode 0600, never exported with the project).
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from core.atomic import atomic_write_json
from core.errors import ReactomoError

__all__ = ["ENV_TEAM", "ACCESS_FILE", "team_mode", "share_links", "create_share_link", "revoke_share_links",
           "valid_share", "edit_key", "valid_edit_key", "link"]

ENV_TEAM = "REACTOMO_TEAM"
ACCESS_FILE = "access.json"


def team_mode() -> bool:
    """True when the server is configured for a team (``REACTOMO_TEAM`` set to 1, true or yes)."""
    return os.environ.get(ENV_TEAM, "").strip().lower() in ("1", "true", "yes", "on")


def _path(project) -> Path:
    return Path(project.root) / ACCESS_FILE


def _read(project) -> dict[str, Any]:
    try:
        d = json.loads(_path(project).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"share": [], "edit_key": None}
    except (OSError, ValueError):
        # an unreadable access file grants nothing
        return {"share": [], "edit_key": None, "damaged": True}
    if not isinstance(d, dict):
        return {"share": [], "edit_key": None, "damaged": True}
    d.setdefault("share", [])
    d.setdefault("edit_key", None)
    return d


def _write(project, d: dict[str, Any]) -> None:
    p = _path(project)
    try:
        atomic_write_json(p, {k: v for k, v in d.items() if k != "damaged"})
        os.chmod(p, 0o600)
    except OSError as exc:
        raise ReactomoError(f"The project's access file could not be written ({exc.strerror or exc}); nothing changed.") from None


def share_links(project) -> list[dict[str, str]]:
    """The project's live share links: ``[{"token", "created"}]``."""
    return [s for s in _read(project)["share"] if isinstance(s, dict) and isinstance(s.get("token"), str)]


def create_share_link(project) -> str:
    """A new read-only share token for ``project`` (the older ones stay valid until revoked)."""
    d = _read(project)
    token = secrets.token_urlsafe(32)
    d["share"] = share_links(project) + [{"token": token, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}]
    _write(project, d)
    return token


def revoke_share_links(project) -> int:
    """Revoke every share link of ``project``; returns how many there were."""
    d = _read(project)
    n = len(share_links(project))
    d["share"] = []
    _write(project, d)
    return n


def valid_share(project, token: str | None) -> bool:
    """Whether ``token`` is a live share link of ``project`` (constant-time comparison)."""
    if not token or not isinstance(token, str):
        return False
    ok = False
    for s in share_links(project):
        ok |= hmac.compare_digest(s["token"].encode(), token.encode())
    return ok


def edit_key(project, *, create: bool = True) -> str | None:
    """The project's edit key (made on first use when ``create``)."""
    d = _read(project)
    key = d.get("edit_key")
    if isinstance(key, str) and key:
        return key
    if not create:
        return None
    d["edit_key"] = secrets.token_urlsafe(32)
    _write(project, d)
    return d["edit_key"]


def valid_edit_key(project, key: str | None) -> bool:
    stored = edit_key(project, create=False)
    return bool(key and stored and isinstance(key, str) and hmac.compare_digest(stored.encode(), key.encode()))


def link(base_url: str, project, *, share: str | None = None, key: str | None = None) -> str:
    """The URL that opens ``project`` with a share token or an edit key."""
    from urllib.parse import urlencode

    q = {"project": project.name}
    if share:
        q["share"] = share
    if key:
        q["key"] = key
    return f"{base_url.rstrip('/')}/?{urlencode(q)}"
