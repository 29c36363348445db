from django.core.cache import cache
from django.test import Client

from publishing import releases
from publishing.models import App


def check(app_key, slug):
    return Client(HTTP_X_APP_KEY=app_key).get(
        f"/api/v1/updates/check?app={slug}&platform=android&runtime_version=1.0.0"
    )


def test_the_app_key_lookup_is_cached_and_forgotten_when_the_app_changes(
    app, clear_cache, django_assert_num_queries
):
    assert check(app.app_key, "shop").status_code == 204  # no release yet
    with django_assert_num_queries(0):  # the app and its (absent) release: both cached
        assert check(app.app_key, "shop").status_code == 204

    app.slug = "shop-2"
    app.save()

    assert check(app.app_key, "shop").status_code == 401
    assert check(app.app_key, "shop-2").status_code == 204
    App.objects.filter(pk=app.pk).delete()
    assert releases.app_by_key(app.app_key) is None
    assert check(app.app_key, "shop-2").status_code == 401
    assert cache.get(releases._app_key_cache_key(app.app_key)) is None
