from django.db import models


class SignalKind(models.TextChoices):
    SUBMISSION = "submission", "Build submitted"
    BUNDLE = "bundle", "Bundle built"


class Rule(models.TextChoices):
    """The scoring rules, in the order the breakdown lists them."""

    SHARED_BUNDLE = "shared_bundle", "Same bundle built by several accounts"
    SHARED_IP = "shared_ip", "Same IP address used by other accounts"
    SIMILAR_APP_NAME = "similar_app_name", "Similar app names across accounts"
    SAME_DAY_ACCOUNTS = "same_day_accounts", "Created the same day as linked accounts"
    BUILD_BURST = "build_burst", "Builds submitted within minutes of each other"


class FlagStatus(models.TextChoices):
    OPEN = "open", "Open"
    DISMISSED = "dismissed", "Dismissed"
    BLOCKED = "blocked", "Blocked"
    UNBLOCKED = "unblocked", "Unblocked"


class FlagPriority(models.TextChoices):
    NORMAL = "normal", "Normal"
    HIGH = "high", "High"


class PatternKind(models.TextChoices):
    BUNDLE_HASH = "bundle_hash", "Bundle hash"
    IP = "ip", "IP address"


class ReviewActionKind(models.TextChoices):
    DISMISS = "dismiss", "Dismissed"
    CONFIRM_AND_BLOCK = "confirm_and_block", "Confirmed pattern and blocked"
    AUTO_BLOCK = "auto_block", "Blocked automatically (confirmed pattern)"
    UNBLOCK = "unblock", "Unblocked"


# A person's latest decision of these kinds outranks patterns confirmed before it.
CLEARING_ACTIONS = (ReviewActionKind.DISMISS, ReviewActionKind.UNBLOCK)
