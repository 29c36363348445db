import pytest

from publishing.models import App


@pytest.fixture
def app(pro_account):
    return App.objects.create(
        account=pro_account,
        slug="shop",
        name="Shop",
        platforms=["android", "ios"],
        runtime_version="1.0.0",
    )
