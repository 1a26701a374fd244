"""The browser session: a signed cookie (HMAC-SHA256 with a secret kept in TUNELAB_HOME), and
CSRF tokens for every form.

The cookie holds who signed in (user, tenant, the API key used if any), when, and a random CSRF
token; never an API key or a password. It is HttpOnly, SameSite=Lax, Secure over HTTPS, and
expires after SESSION_SECONDS. Each request re-reads the user (role changes apply at once) and,
for a key sign-in, the key (revoking it ends the session at once); for a password sign-in, the
password (changing it ends the session).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path

COOKIE = "tl_session"
LOGIN_CSRF_COOKIE = "tl_login_csrf"
SESSION_SECONDS = 12 * 3600
SECRET_FILE = "web-session.key"


def load_secret(home: Path) -> bytes:
    """The signing secret: created once (0600) and shared by every server on this TUNELAB_HOME."""
    path = Path(home) / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    secret = path.read_text().strip()
    if len(secret) < 32:
        raise RuntimeError(f"{path} is too short to be a session secret; delete it to make a new one")
    return secret.encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: bytes, payload: dict) -> str:
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    mac = hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()
    return f"{body}.{mac}"


def unsign(secret: bytes, value: str | None, max_age: float = SESSION_SECONDS) -> dict | None:
    """The payload of a valid, unexpired cookie; None for anything else (tampered, old, garbage)."""
    if not value or value.count(".") != 1:
        return None
    body, mac = value.split(".")
    want = hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, mac):
        return None
    try:
        payload = json.loads(_unb64(body))
    except (ValueError, json.JSONDecodeError):
        return None
    if not isinstance(payload, dict) or time.time() - float(payload.get("iat", 0)) > max_age:
        return None
    return payload


def password_mark(password_hash: str | None) -> str | None:
    """A short fingerprint of the stored password hash: changing the password ends the sessions
    that signed in with the old one."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16] if password_hash else None


def new_session(user_id: str, tenant_id: str, key_id: str | None, password_hash: str | None = None) -> dict:
    return {"u": user_id, "t": tenant_id, "k": key_id, "p": None if key_id else password_mark(password_hash),
            "iat": int(time.time()), "csrf": secrets.token_urlsafe(24)}


def cookie_args(secure: bool, max_age: int = SESSION_SECONDS) -> dict:
    return {"httponly": True, "samesite": "lax", "secure": secure, "path": "/", "max_age": max_age}


def tokens_match(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))
