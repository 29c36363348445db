"""Server-rendered SVG charts for the publishing admin: no script, no CDN (the admin's CSP)."""

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

WIDTH, LABEL, BAR, ROW, TOP = 640, 150, 380, 36, 24
ADOPTION, FAILURE = "#2b6cb0", "#c53030"


def _state(row: dict) -> str:
    if row["health_action"]:
        return "halted" if row["health_action"] == "halt" else "rolled back (threshold)"
    if row["rolled_back_at"]:
        return "rolled back"
    return "live" if row["live"] else ""


def release_health_svg(health: dict) -> SafeString:
    """Adoption and failure rate per release of one environment, a pair of bars each."""
    rows = [row for row in health["releases"] if not row["directive"]][:10]
    if not rows:
        return mark_safe('<p class="help">No release in this environment.</p>')
    height = TOP + ROW * len(rows) + 8

    def width(value):
        return round(BAR * (value or 0) / 100, 1)

    parts = [
        format_html(
            '<text x="{}" y="14" font-size="12" fill="{}">adoption</text>'
            '<text x="{}" y="14" font-size="12" fill="{}">failure rate</text>',
            LABEL,
            ADOPTION,
            LABEL + 80,
            FAILURE,
        )
    ]
    for index, row in enumerate(rows):
        y = TOP + index * ROW
        adoption, failure = row["adoption_percent"], row["failure_rate_percent"]
        parts.append(
            format_html(
                '<text x="0" y="{}" font-size="12">v{} {}</text>'
                '<rect x="{}" y="{}" width="{}" height="12" fill="{}">'
                "<title>v{} adoption: {}% ({} devices)</title></rect>"
                '<text x="{}" y="{}" font-size="11">{}</text>'
                '<rect x="{}" y="{}" width="{}" height="12" fill="{}">'
                "<title>v{} failure rate: {}% ({} of {} devices)</title></rect>"
                '<text x="{}" y="{}" font-size="11">{}</text>',
                y + 18,
                row["version"],
                _state(row),
                LABEL,
                y + 2,
                width(adoption),
                ADOPTION,
                row["version"],
                adoption if adoption is not None else 0,
                row["devices_running"],
                LABEL + width(adoption) + 4,
                y + 12,
                f"{adoption}%" if adoption is not None else "—",
                LABEL,
                y + 16,
                width(failure),
                FAILURE,
                row["version"],
                failure if failure is not None else 0,
                row["devices_failed"],
                row["devices_tried"],
                LABEL + width(failure) + 4,
                y + 26,
                f"{failure}%" if failure is not None else "—",
            )
        )
    threshold = health["failure_threshold_percent"]
    if threshold is not None:
        parts.append(
            format_html(
                '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-dasharray="4 3"/>'
                '<text x="{}" y="14" font-size="11" fill="{}">threshold {}%</text>',
                LABEL + width(threshold),
                TOP - 4,
                LABEL + width(threshold),
                height,
                FAILURE,
                LABEL + BAR + 8,
                FAILURE,
                threshold,
            )
        )
    return format_html(
        '<svg class="bh-chart" role="img" viewBox="0 0 {} {}" width="{}"'
        ' aria-label="Adoption and failure rate per release on {}">{}</svg>',
        WIDTH,
        height,
        WIDTH,
        health["env"],
        mark_safe("".join(parts)),  # noqa: S308 - every part is built with format_html
    )


def release_health_table(health: dict) -> SafeString:
    """The chart's figures as a table (what a screen reader and a test read)."""
    rows = format_html_join(
        "",
        '<tr data-testid="health-{}-v{}"><td>v{}</td><td>{}</td><td>{}</td><td>{}</td>'
        "<td>{}</td><td>{}</td><td>{}</td></tr>",
        (
            (
                health["env"],
                row["version"],
                row["version"],
                _state(row) or "—",
                row["devices_running"],
                "—" if row["adoption_percent"] is None else f"{row['adoption_percent']}%",
                row["devices_tried"],
                row["devices_failed"],
                "—" if row["failure_rate_percent"] is None else f"{row['failure_rate_percent']}%",
            )
            for row in health["releases"]
            if not row["directive"]
        ),
    )
    return format_html(
        "<table><thead><tr><th>release</th><th>state</th><th>devices running</th>"
        "<th>adoption</th><th>devices tried</th><th>devices failed</th><th>failure rate</th>"
        "</tr></thead><tbody>{}</tbody></table>",
        rows,
    )
