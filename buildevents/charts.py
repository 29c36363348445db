"""Server-rendered SVG charts for the admin: no script and no CDN, so they work offline."""

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from buildevents.notifications import format_duration

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 28
SERIES = (("p50", "#2b6cb0"), ("p95", "#c05621"))


def daily_duration_svg(daily: list[dict]) -> SafeString:
    """p50 and p95 build duration per day, as a line chart with a point per day."""
    points = [day for day in daily if day["p50"] is not None]
    if not points:
        return mark_safe('<p class="help">No finished runs in this period.</p>')
    peak = max(day["p95"] for day in points) or 1
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_width / max(len(points) - 1, 1)

    def x(index):
        return LEFT + (index * step if len(points) > 1 else plot_width / 2)

    def y(value):
        return TOP + plot_height - value / peak * plot_height

    parts = [
        format_html(
            '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#999"/>',
            LEFT,
            TOP + plot_height,
            WIDTH - RIGHT,
            TOP + plot_height,
        ),
        format_html(
            '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#999"/>',
            LEFT,
            TOP,
            LEFT,
            TOP + plot_height,
        ),
        format_html(
            '<text x="{}" y="{}" text-anchor="end" font-size="11">{}</text>',
            LEFT - 4,
            TOP + 10,
            format_duration(peak),
        ),
        format_html(
            '<text x="{}" y="{}" text-anchor="end" font-size="11">0</text>',
            LEFT - 4,
            TOP + plot_height,
        ),
        format_html(
            '<text x="{}" y="{}" font-size="11">{}</text>', LEFT, HEIGHT - 8, points[0]["date"]
        ),
        format_html(
            '<text x="{}" y="{}" text-anchor="end" font-size="11">{}</text>',
            WIDTH - RIGHT,
            HEIGHT - 8,
            points[-1]["date"],
        ),
    ]
    for name, colour in SERIES:
        line = " ".join(f"{x(i):.1f},{y(day[name]):.1f}" for i, day in enumerate(points))
        parts.append(
            format_html(
                '<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>', colour, line
            )
        )
        parts.append(
            format_html_join(
                "",
                '<circle cx="{}" cy="{}" r="3" fill="{}">'
                "<title>{} {}: {} ({} runs)</title></circle>",
                (
                    (
                        f"{x(i):.1f}",
                        f"{y(day[name]):.1f}",
                        colour,
                        day["date"],
                        name,
                        format_duration(day[name]),
                        day["count"],
                    )
                    for i, day in enumerate(points)
                ),
            )
        )
        legend_x = LEFT + 10 + (0 if name == "p50" else 70)
        parts.append(
            format_html(
                '<text x="{}" y="{}" font-size="12" fill="{}">{}</text>',
                legend_x,
                TOP + 12,
                colour,
                name,
            )
        )
    return format_html(
        '<svg class="bh-chart" role="img" viewBox="0 0 {} {}" width="100%" '
        'aria-label="p50 and p95 build duration per day">{}</svg>',
        WIDTH,
        HEIGHT,
        mark_safe("".join(parts)),  # noqa: S308 - every part is built with format_html
    )
