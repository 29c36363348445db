"""The update check's hand-validated query agrees with its serializer on every input."""

import pytest
from django.http import QueryDict

from publishing.api.serializers import UpdateCheckQuerySerializer
from publishing.edge import plain_update_query

BASE = "app=shop&platform=android&runtime_version=1.0.0"
SHA = "a" * 64

QUERIES = [
    BASE,
    f"{BASE}&channel=production&env=staging&current={SHA}&device=d-1",
    f"{BASE}&env=dev&device=" + "d" * 128,
    "app=shop&platform=ios&runtime_version=2",
    # each of these goes to the serializer (invalid, or valid only after trimming)
    f"{BASE}&device=" + "d" * 129,
    f"{BASE}&channel=",
    f"{BASE}&channel=%20beta",
    f"{BASE}&current=",
    f"{BASE}&current={SHA.upper()}",
    f"{BASE}&current={SHA}%0A",
    f"{BASE}&env=prod",
    "app=shop&platform=symbian&runtime_version=1",
    "app=sh%20op&platform=android&runtime_version=1",
    "app=shop%0A&platform=android&runtime_version=1",
    "app=&platform=android&runtime_version=1",
    "platform=android&runtime_version=1",
    "app=shop&platform=android",
    "app=shop&platform=android&runtime_version=%00",
    "app=shop&platform=android&runtime_version=1.0.0%20",
    "app=shop&platform=android&runtime_version=" + "9" * 65,
    "app=shop&platform=android&platform=ios&runtime_version=1",
]


@pytest.mark.parametrize("raw", QUERIES)
def test_plain_query_is_the_serializers_answer_or_defers_to_it(raw):
    query = QueryDict(raw)
    serializer = UpdateCheckQuerySerializer(data=query)
    valid = serializer.is_valid()

    plain = plain_update_query(query)

    if plain is not None:
        assert valid
        assert plain == dict(serializer.validated_data)


def test_ordinary_queries_take_the_plain_path():
    assert all(plain_update_query(QueryDict(raw)) is not None for raw in QUERIES[:4])
    assert all(plain_update_query(QueryDict(raw)) is None for raw in QUERIES[4:-1])
