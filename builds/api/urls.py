from rest_framework.routers import SimpleRouter

from builds.api.views import AccountViewSet, JobViewSet

router = SimpleRouter()
router.register("accounts", AccountViewSet, basename="account")
router.register("jobs", JobViewSet, basename="job")

urlpatterns = router.urls
