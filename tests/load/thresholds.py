"""The product's latency and error bars, our own goal, and the smoke bars of CI."""

OVERALL_P95_MS = 800
OVERALL_P99_MS = 1500
OVERALL_ERROR_RATE = 0.0001  # 0.01 %

# endpoint name (as the locustfile reports it) -> p95 bar in ms
ENDPOINT_P95_MS = {
    "update check": 500,
    "expo manifest": 500,  # the other protocols' update checks: the same bar
    "codepush update check": 500,
    "bundle download": 2000,
    "device register": 1000,
}

# Our own goal, reported beside the product's bars: update check p95 at 100 users, 2 cores.
GOAL_UPDATE_CHECK_P95_MS = 20
GOAL_USERS = 100
