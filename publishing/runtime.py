"""An OTA build's runtime version: the native code an update needs, as Expo defines it.

A device only takes an update whose runtime version is its own. The version comes from the
app's ``app.json`` (``expo.runtimeVersion``: a string, or one of Expo's policies:
``appVersion`` → ``expo.version``, ``nativeVersion`` → the version with the platform's build
number, ``sdkVersion`` → ``exposdk:<sdkVersion>``), else from the app's ``runtime_version``
in BuildHub. The ``fingerprint`` policy needs the native project's hash, which a JavaScript
build cannot compute: such apps set the runtime version in BuildHub, which is then used.
"""

import json
import re
from pathlib import Path

from builds.engine.exceptions import JobFailed

VALID = re.compile(r"^[\x21-\x7e]{1,64}$")


def from_app_json(app_dir: Path, platform: str) -> str:
    """The runtime version app.json gives for ``platform``; '' when it gives none."""
    path = app_dir / "app.json"
    if not path.is_file():
        return ""
    try:
        document = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise JobFailed("The app's app.json is not valid JSON.") from None
    expo = document.get("expo", document) if isinstance(document, dict) else {}
    if not isinstance(expo, dict):
        return ""
    native = expo.get(platform)
    if not isinstance(native, dict):
        native = {}
    setting = native.get("runtimeVersion", expo.get("runtimeVersion"))
    if setting is None:
        return ""
    if isinstance(setting, str):
        value = setting
    elif isinstance(setting, dict) and isinstance(setting.get("policy"), str):
        value = _from_policy(setting["policy"], expo, native, platform)
    else:
        raise JobFailed('app.json\'s runtimeVersion must be a string or {"policy": ...}.')
    if not value:
        return ""
    if not VALID.match(value):
        raise JobFailed(
            f"app.json's runtime version {value[:80]!r} is not 1 to 64 printable characters."
        )
    return value


def _from_policy(policy: str, expo: dict, native: dict, platform: str) -> str:
    version = str(expo.get("version") or "")
    if policy == "appVersion":
        if not version:
            raise JobFailed("app.json's runtimeVersion policy appVersion needs expo.version.")
        return version
    if policy == "nativeVersion":
        build = native.get("buildNumber" if platform == "ios" else "versionCode")
        if not version or build in (None, ""):
            field = "ios.buildNumber" if platform == "ios" else "android.versionCode"
            raise JobFailed(
                f"app.json's runtimeVersion policy nativeVersion needs expo.version and {field}."
            )
        return f"{version}({build})"
    if policy == "sdkVersion":
        sdk = expo.get("sdkVersion")
        if not sdk:
            raise JobFailed("app.json's runtimeVersion policy sdkVersion needs expo.sdkVersion.")
        return f"exposdk:{sdk}"
    return ""  # fingerprint: computed from the native project; the app's setting is used
