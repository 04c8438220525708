"""Ray's token authentication from a driver's side: Ray 2.59+ turns it on for clusters started with `ray start
--head`, and a driver that joins one must connect in token mode with the head's token."""

from __future__ import annotations

import os
from pathlib import Path


AUTH_ADVICE = ("If the head refused this machine's token (Ray 2.59+ turns token authentication on with `ray start "
               "--head`): copy the head's token (`ray get-auth-token` there) into RAY_AUTH_TOKEN or ~/.ray/auth_token "
               "here and set RAY_AUTH_MODE=token; a cluster started without authentication wants "
               "RAY_AUTH_MODE=disabled (lm-gym turns token mode on by itself when this machine holds a token).")


def use_token_auth_if_given() -> None:
    """Connect with token authentication when this machine holds a token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
    Ray's default ~/.ray/auth_token) and RAY_AUTH_MODE leaves it open: a head started by `ray start --head` on Ray
    2.59+ requires it, and without the mode Ray retries the refused connection for about 25 s, then fails.
    Ray reads the mode when it is imported: call this first (a process that imported ray already keeps its mode)."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or \
            (Path.home() / ".ray" / "auth_token").is_file():
        os.environ["RAY_AUTH_MODE"] = "token"
