from builds.models.accounts import (
    Account,
    ApiToken,
    BuildUsage,
    EnterpriseLimit,
    Membership,
    TimeoutAddOn,
    hash_token_secret,
)
from builds.models.jobs import FairnessCursor, HeatUp, Job, JobLog, Worker

__all__ = [
    "Account",
    "ApiToken",
    "BuildUsage",
    "EnterpriseLimit",
    "FairnessCursor",
    "HeatUp",
    "Job",
    "JobLog",
    "Membership",
    "TimeoutAddOn",
    "Worker",
    "hash_token_secret",
]
