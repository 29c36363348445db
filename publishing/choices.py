from django.db import models


class Platform(models.TextChoices):
    ANDROID = "android", "Android"
    IOS = "ios", "iOS"


class Channel(models.TextChoices):
    PREVIEW = "preview", "Preview"
    PRODUCTION = "production", "Production"


class Environment(models.TextChoices):
    DEV = "dev", "Development"
    STAGING = "staging", "Staging"
    PRODUCTION = "production", "Production"


class VersionStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    READY = "ready", "Ready"
    PUBLISHING = "publishing", "Publishing"
    PUBLISHED = "published", "Published"
    FAILED = "failed", "Failed"


class SourceState(models.TextChoices):
    PENDING = "pending", "Waiting for the archive"  # a direct upload not completed yet
    READY = "ready", "Ready"


class ArtifactKind(models.TextChoices):
    OTA_BUNDLE = "ota_bundle", "OTA bundle"
    SOURCEMAP = "sourcemap", "Sourcemap"
    EAS_BUILD_URL = "eas_build_url", "EAS build URL"
    APK = "apk", "APK"
    AAB = "aab", "Android App Bundle"
    IPA = "ipa", "iOS app archive"
    INSTRUCTIONS = "instructions", "Instructions"
    WORKFLOW = "workflow", "CI workflow file"
    RELEASE_MANIFEST = "release_manifest", "Release manifest"
    CODEPUSH_PACKAGE = "codepush_package", "CodePush package"


class Visibility(models.TextChoices):
    PUBLIC = "public", "Public"
    PRIVATE = "private", "Private"


class BuildTarget(models.TextChoices):
    OTA = "ota", "OTA bundle (Metro + Hermes)"
    EXPO = "expo", "Expo EAS"
    FLUTTER = "flutter", "Flutter"
    FLUTTERFLOW = "flutterflow", "FlutterFlow export"


class BuildStage(models.TextChoices):
    BUILD = "build", "Build"
    SUBMIT = "submit", "Submit"


class Provider(models.TextChoices):
    EAS = "eas", "Expo EAS"
    LOCAL = "local", "On BuildHub workers"
    CI = "ci", "Customer's CI"


class FailureAction(models.TextChoices):
    """What BuildHub does to a live release whose failure rate crosses the app's threshold."""

    HALT = "halt", "Halt the rollout (no new devices get it)"
    ROLLBACK = "rollback", "Roll back to the previous release"


class CheckinProtocol(models.TextChoices):
    BUILDHUB = "buildhub", "BuildHub update check"
    EXPO = "expo", "Expo Updates"
    CODEPUSH = "codepush", "CodePush"


class DeviceOutcome(models.TextChoices):
    INSTALLED = "installed", "Ran it"
    FAILED = "failed", "Reported it failing"
