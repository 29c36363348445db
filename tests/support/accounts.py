"""Accounts for tests, made as customers get them."""

from builds.choices import Tier
from builds.services import create_account


def make_account(tier: str, name: str | None = None):
    return create_account(name or f"{Tier(tier).label} Co", tier=tier)
