"""What ``npm ci`` may fetch from: checked before npm starts.

``npm ci`` is the one OTA step with the network. Every URL it could fetch from is named by
the app's lock file (``resolved``), its .npmrc (registries) or the account's ``NPM_REGISTRY``
secret; each is checked here as git sources are (https only, unless
``NPM_ALLOW_HTTP_REGISTRIES``; no loopback, private, link-local or metadata address,
resolved now), except hosts the operator trusts (``NPM_TRUSTED_REGISTRY_HOSTS``). The
app's .npmrc is rewritten to its registries and their credentials; every other key (scripts,
node options, proxies, cache or user-config locations) is dropped before npm reads it.
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings

from builds.engine.exceptions import JobFailed
from publishing.hosts import private_host

NPMRC = ".npmrc"
REGISTRY_KEY = re.compile(r"^(?:@[a-z0-9][\w.-]*:)?registry$", re.I)
# Credentials of one registry, scoped to it by URL ("nerf-darted"): //host/path/:_authToken
AUTH_KEY = re.compile(r"^//[^\s=]+:(?:_authToken|_auth|username|_password|email|always-auth)$")
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
ACCOUNT_REGISTRY_SECRET = "NPM_REGISTRY"


@dataclass
class NpmConfig:
    """The app's .npmrc reduced to what npm may use."""

    lines: list[str] = field(default_factory=list)
    registries: list[tuple[str, str]] = field(default_factory=list)  # (key, url)
    variables: set[str] = field(default_factory=set)
    ignored: list[str] = field(default_factory=list)


def parse_npmrc(text: str) -> NpmConfig:
    config = NpmConfig()
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, separator, value = line.partition("=")
        key, value = key.strip(), value.strip().strip("\"'")
        if not separator or not key:
            continue
        if REGISTRY_KEY.match(key):
            config.registries.append((key, value))
        elif not AUTH_KEY.match(key):
            config.ignored.append(key)
            continue
        config.lines.append(f"{key}={value}")
        config.variables.update(VARIABLE.findall(value))
    return config


def lockfile_urls(lock: dict) -> list[tuple[str, str]]:
    """``(package, resolved)`` of every entry of a v1, v2 or v3 lock file."""
    found = []
    for name, entry in (lock.get("packages") or {}).items():
        if isinstance(entry, dict) and isinstance(entry.get("resolved"), str) and name:
            found.append((name, entry["resolved"]))

    def walk(dependencies, trail):
        for name, entry in (dependencies or {}).items():
            if not isinstance(entry, dict):
                continue
            if isinstance(entry.get("resolved"), str):
                found.append(("/".join([*trail, name]), entry["resolved"]))
            walk(entry.get("dependencies"), [*trail, name])

    if not lock.get("packages"):
        walk(lock.get("dependencies"), [])
    return found


def shown(url: str) -> str:
    """The URL as an error may show it: without user name or password."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit(parts._replace(netloc=netloc))
    return url


class HostCheck:
    """Checks URLs, resolving each host once."""

    def __init__(self):
        self.trusted = {host.lower() for host in settings.NPM_TRUSTED_REGISTRY_HOSTS}
        self.verdicts: dict[str, bool] = {}

    def refusal(self, url: str) -> str | None:
        """Why npm must not fetch ``url``, or None."""
        lowered = url.lower()
        if lowered.startswith("file:") or "://" not in lowered and ":" not in lowered:
            return None  # a path inside the app (workspaces, local packages)
        scheme = lowered.split(":", 1)[0]
        if scheme.startswith("git+"):
            scheme = scheme[4:]
            if scheme == "ssh" and "ssh" not in settings.SOURCE_GIT_PROTOCOLS:
                return "ssh git dependencies are not allowed here"
        if scheme == "http" and not settings.NPM_ALLOW_HTTP_REGISTRIES:
            return "only https registries are allowed (NPM_ALLOW_HTTP_REGISTRIES is off)"
        if scheme not in ("https", "http", "ssh"):
            return f"{scheme}: URLs are not allowed; use https"
        try:
            host = (
                urlsplit(url.split("+", 1)[1] if lowered.startswith("git+") else url).hostname or ""
            )
        except ValueError:
            return "it is not a valid URL"
        if not host:
            return "it names no host"
        if host in self.trusted:
            return None
        if host not in self.verdicts:
            self.verdicts[host] = private_host(host, resolve=True)
        if self.verdicts[host]:
            return f"{host} is a local, private, link-local or metadata address"
        return None


def check_sources(
    app_dir: Path, secrets: dict[str, str], user_config: Path
) -> tuple[dict[str, str], list[str]]:
    """Check every place npm could fetch from; rewrite .npmrc files to what npm may read.

    Returns the account secrets that the kept .npmrc lines name (``${NPM_TOKEN}``), the only
    secrets npm gets, and the .npmrc keys that were dropped. Raises JobFailed naming the
    first URL that is refused.
    """
    check = HostCheck()
    npmrc_path = app_dir / NPMRC
    project = NpmConfig()
    if npmrc_path.is_symlink() or npmrc_path.exists():
        if npmrc_path.is_symlink() or not npmrc_path.is_file():
            raise JobFailed("The app's .npmrc must be a plain file.")
        project = parse_npmrc(npmrc_path.read_text(errors="replace"))
    for key, url in project.registries:
        reason = check.refusal(url)
        if reason:
            raise JobFailed(f"The app's .npmrc sets {key} to {shown(url)}, refused: {reason}.")
    user_lines = []
    account_registry = secrets.get(ACCOUNT_REGISTRY_SECRET, "")
    if account_registry:
        reason = check.refusal(account_registry)
        if reason:
            raise JobFailed(
                f"The account's {ACCOUNT_REGISTRY_SECRET} secret names {shown(account_registry)}, "
                f"refused: {reason}."
            )
        user_lines.append(f"registry={account_registry}")
    lock = _lock_file(app_dir)
    for package, url in lockfile_urls(lock):
        reason = check.refusal(url)
        if reason:
            raise JobFailed(
                f"The lock file's {package} resolves to {shown(url)}, refused: {reason}."
            )
    npmrc_path.unlink(missing_ok=True)
    if project.lines:
        npmrc_path.write_text("\n".join(project.lines) + "\n")
    user_config.write_text("\n".join(user_lines) + ("\n" if user_lines else ""))
    wanted = project.variables
    return {name: value for name, value in secrets.items() if name in wanted}, project.ignored


def _lock_file(app_dir: Path) -> dict:
    for name in ("npm-shrinkwrap.json", "package-lock.json"):
        path = app_dir / name
        if path.is_file():
            try:
                lock = json.loads(path.read_text())
            except (ValueError, UnicodeDecodeError):
                raise JobFailed(f"The app's {name} is not valid JSON.") from None
            if not isinstance(lock, dict):
                raise JobFailed(f"The app's {name} is not a lock file.")
            return lock
    return {}
