"""Each scoring rule on its own, at its limits, and all five together."""

import pytest

from abuse.choices import Rule
from abuse.scoring import names_similar, normalise_app_name
from tests.abuse.helpers import account, bundle_hash, rescore, rule_points, signal

pytestmark = pytest.mark.django_db


def test_app_names_are_normalised_to_letters_and_digits():
    assert normalise_app_name("Torch-Light  Pro 2!") == ("torchlightpro2", "torchlightpro")
    assert normalise_app_name("Café Über") == ("cafeuber", "cafeuber")
    assert normalise_app_name("2048") == ("2048", "2048")
    assert normalise_app_name("") == ("", "")


def test_name_similarity_threshold_is_exact():
    # "abcde" / "abcdx": bigrams ab bc cd de / ab bc cd dx share 3: 2·3 / 8 = 75 %.
    assert names_similar("abcde", "abcdx", 75)
    assert not names_similar("abcde", "abcdx", 76)
    assert names_similar("torchlight1", "torchlight7", 90)  # 2·9 / 20
    assert not names_similar("fitness1234", "fitness5678", 61)  # 2·6 / 20
    assert names_similar("a", "a", 100)
    assert not names_similar("", "abce", 0)


def test_shared_bundle_alone_needs_more_than_three_accounts():
    shared = bundle_hash("farm bundle")
    builders = [account(f"Builder {n}", created_days_ago=10 * n) for n in range(1, 5)]
    for n, builder in enumerate(builders[:3]):
        signal(builder, app_name=f"Alpha{n}", bundle=shared, minutes_ago=30 * n)

    assert rule_points(rescore(builders[0])) == {}  # three accounts: not more than three

    signal(builders[3], app_name="Zeta", bundle=shared, minutes_ago=200)
    result = rescore(builders[0])

    assert rule_points(result) == {Rule.SHARED_BUNDLE: 30}
    assert result.hits[0].accounts == {b.pk for b in builders[1:]}
    assert shared in result.hits[0].detail


def test_shared_bundle_outside_its_window_does_not_count(settings):
    settings.ABUSE_BUNDLE_WINDOW_DAYS = 5
    shared = bundle_hash("old bundle")
    builders = [account(f"Old {n}", created_days_ago=10 * n) for n in range(1, 5)]
    for builder in builders[:3]:
        signal(builder, bundle=shared)
    signal(builders[3], bundle=shared, days_ago=6)

    assert rule_points(rescore(builders[0])) == {}


def test_shared_ip_alone_within_its_window(settings):
    mine = account("Mine", created_days_ago=3)
    other = account("Other", created_days_ago=40)
    signal(mine, ip="198.51.100.7", app_name="Weather")
    signal(other, ip="198.51.100.7", app_name="Recipes", days_ago=6)

    result = rescore(mine)
    assert rule_points(result) == {Rule.SHARED_IP: 20}
    assert result.hits[0].accounts == {other.pk}
    assert "198.51.100.7" not in str(result.breakdown())  # breakdowns carry no addresses

    settings.ABUSE_IP_WINDOW_DAYS = 5
    assert rule_points(rescore(mine)) == {}


def test_similar_app_names_alone(settings):
    mine = account("Mine", created_days_ago=3)
    lookalike = account("Lookalike", created_days_ago=30)
    unrelated = account("Unrelated", created_days_ago=60)
    signal(mine, ip="198.51.100.1", app_name="Torch Light 1")
    signal(lookalike, ip="198.51.100.2", app_name="TorchLight 7", minutes_ago=60)
    signal(unrelated, ip="198.51.100.3", app_name="Weather Now", minutes_ago=120)

    result = rescore(mine)
    assert rule_points(result) == {Rule.SIMILAR_APP_NAME: 10}
    assert result.hits[0].accounts == {lookalike.pk}

    settings.ABUSE_APP_NAME_SIMILARITY_PERCENT = 91  # "torchlight1" / "torchlight7" is 90 %
    assert rule_points(rescore(mine)) == {}


def test_similar_names_are_also_compared_across_accounts_already_linked():
    mine = account("Mine", created_days_ago=3)
    other = account("Other", created_days_ago=30)
    signal(mine, ip="198.51.100.9", app_name="Torch")
    # A different stem, but similar enough, found because the IP links the two accounts.
    signal(other, ip="198.51.100.9", app_name="Torchs", minutes_ago=60)

    assert rule_points(rescore(mine)) == {Rule.SHARED_IP: 20, Rule.SIMILAR_APP_NAME: 10}


def test_same_day_creation_counts_only_with_linked_accounts():
    mine = account("Mine")
    twin = account("Twin")  # created the same day, but not linked by anything
    signal(mine, ip="198.51.100.20", app_name="Alpha")
    signal(twin, ip="198.51.100.21", app_name="Omega", minutes_ago=60)
    assert rule_points(rescore(mine)) == {}

    signal(twin, ip="198.51.100.20", app_name="Omega", minutes_ago=50)
    result = rescore(mine)

    assert rule_points(result) == {Rule.SHARED_IP: 20, Rule.SAME_DAY_ACCOUNTS: 15}
    assert result.hits[1].accounts == {twin.pk}


def test_same_day_creation_does_not_count_for_older_linked_accounts():
    mine = account("Mine")
    older = account("Older", created_days_ago=2)
    signal(mine, ip="198.51.100.30")
    signal(older, ip="198.51.100.30", minutes_ago=60)

    assert rule_points(rescore(mine)) == {Rule.SHARED_IP: 20}


def test_build_burst_alone_n_within_m_minutes(settings):
    busy = account("Busy", created_days_ago=20)
    for minutes_ago in (0, 2, 4, 6):
        signal(busy, app_name="Alpha", minutes_ago=minutes_ago)
    assert rule_points(rescore(busy)) == {}  # four: below N = 5

    signal(busy, app_name="Alpha", minutes_ago=10)  # exactly M minutes before the latest
    assert rule_points(rescore(busy)) == {Rule.BUILD_BURST: 10}

    settings.ABUSE_BURST_MINUTES = 9
    assert rule_points(rescore(busy)) == {}


def test_build_burst_counts_submissions_of_linked_accounts():
    accounts = [account(f"Burst {n}", created_days_ago=10 * (n + 1)) for n in range(5)]
    for n, member in enumerate(accounts):
        signal(member, ip="198.51.100.40", app_name=f"App {chr(65 + n) * 3}", minutes_ago=n)

    result = rescore(accounts[0])

    assert rule_points(result) == {Rule.SHARED_IP: 20, Rule.BUILD_BURST: 10}
    assert result.hits[1].accounts == {member.pk for member in accounts[1:]}


def test_all_five_rules_together():
    shared = bundle_hash("all rules")
    farm = [account(f"Farm {n}") for n in range(5)]
    for n, member in enumerate(farm):
        signal(member, ip="203.0.113.77", app_name=f"Torch Light {n}", bundle=shared)

    result = rescore(farm[0])

    others = {member.pk for member in farm[1:]}
    assert rule_points(result) == {
        Rule.SHARED_BUNDLE: 30,
        Rule.SHARED_IP: 20,
        Rule.SIMILAR_APP_NAME: 10,
        Rule.SAME_DAY_ACCOUNTS: 15,
        Rule.BUILD_BURST: 10,
    }
    assert result.total == 85
    assert all(hit.accounts == others for hit in result.hits)
    assert result.breakdown()["linked_accounts"] == sorted(others)
    stored = farm[0].abuse_score
    stored.refresh_from_db()
    assert (stored.score, [r["rule"] for r in stored.breakdown["rules"]]) == (
        85,
        [rule.value for rule in Rule],
    )
