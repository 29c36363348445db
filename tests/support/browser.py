"""Pages in the browser tests: the staff login, and screenshots at each viewport."""

from pathlib import Path

from django.conf import settings

SCREENSHOTS = settings.VAR_DIR / "screenshots"
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
STAFF_PASSWORD = "operator-pass-123"


def log_in(page, username="operator", password=STAFF_PASSWORD) -> None:
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")


def screenshot(page, name: str, viewport: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}-{viewport}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def screenshot_both(page, name: str) -> None:
    """The page at 1280x800 and on a 390-px-wide phone, for tests that run on one viewport."""
    for viewport, size in VIEWPORTS.items():
        page.set_viewport_size(size)
        screenshot(page, name, viewport)
    page.set_viewport_size(VIEWPORTS["desktop"])
