/* Operations dashboard: draws the charts and follows the numbers over a websocket. */
(function () {
  "use strict";
  var root = document.getElementById("ops-dashboard");
  if (!root) { return; }
  var data = JSON.parse(document.getElementById("ops-dashboard-data").textContent);
  var charts = {};
  var palette = { P0: "#1f6feb", P1: "#8250df", P2: "#bf8700", P3: "#6e7781",
    succeeded: "#1a7f37", failed: "#cf222e", timed_out: "#bc4c00", cancelled: "#6e7781",
    queued: "#1f6feb", running: "#8250df" };

  function duration(seconds) {
    if (seconds === null || seconds === undefined) { return "\u2013"; }
    var s = Math.round(seconds);
    if (s < 60) { return s + "s"; }
    var m = Math.floor(s / 60); s = s % 60;
    if (m < 60) { return m + "m " + String(s).padStart(2, "0") + "s"; }
    var h = Math.floor(m / 60); m = m % 60;
    return h + "h " + String(m).padStart(2, "0") + "m";
  }

  function cell(text, className, testId) {
    var td = document.createElement("td");
    td.textContent = text;
    if (className) { td.className = className; }
    if (testId) { td.setAttribute("data-testid", testId); }
    return td;
  }

  function fill(testId, rows, emptyText, columns) {
    var body = root.querySelector('[data-testid="' + testId + '"]');
    body.replaceChildren();
    if (!rows.length) {
      var tr = document.createElement("tr");
      tr.className = "ops-empty";
      var td = cell(emptyText);
      td.colSpan = columns;
      tr.appendChild(td);
      body.appendChild(tr);
      return;
    }
    rows.forEach(function (cells) {
      var tr = document.createElement("tr");
      cells.forEach(function (td) { tr.appendChild(td); });
      body.appendChild(tr);
    });
  }

  function text(testId, value) {
    var node = root.querySelector('[data-testid="' + testId + '"]');
    if (node) { node.textContent = value; }
  }

  function render(d) {
    text("kpi-queued", d.queued);
    text("kpi-running", d.running);
    text("kpi-workers", d.supervisor.live_workers);
    text("supervisor-state", d.supervisor.text);
    fill("queue-rows", d.queues.map(function (q) {
      return [cell(q.label), cell(q.depth, "num", "queue-depth-" + q["class"]),
        cell(duration(q.oldest_wait_seconds), "num"), cell(duration(q.wait_p50_seconds), "num"),
        cell(duration(q.wait_p95_seconds), "num")];
    }), "", 5);
    fill("account-rows", d.accounts.map(function (a) {
      return [cell(a.name), cell(a.tier), cell(a.running + " / " + a.limit, "num", "account-running-" + a.account)];
    }), "No jobs running.", 3);
    fill("worker-rows", d.workers.map(function (w) {
      var health = document.createElement("td");
      var badge = document.createElement("span");
      badge.className = "ops-health " + (w.healthy ? "ok" : "bad");
      badge.textContent = w.healthy ? "healthy" : "not seen";
      health.appendChild(badge);
      return [cell(w.id, "ops-mono"), cell(w.host), cell(w.state),
        cell(duration(w.last_seen_seconds) + " ago", "num"), cell(w.running_jobs, "num"), cell(w.sandbox, "", "worker-sandbox"), health];
    }), "No workers running: " + d.supervisor.text, 7);
    drawCharts(d.charts);
  }

  function hourLabels(c) {
    return c.hours.map(function (h) { return new Date(h).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }); });
  }

  function chart(id, config) {
    if (typeof Chart === "undefined") { return; }
    if (charts[id]) {
      charts[id].data = config.data;
      charts[id].update("none");
      return;
    }
    config.options = Object.assign({ responsive: true, maintainAspectRatio: false, animation: false,
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } } }, config.options || {});
    charts[id] = new Chart(document.getElementById(id), config);
  }

  function drawCharts(c) {
    var labels = hourLabels(c);
    chart("chart-waits", { type: "line", data: { labels: labels, datasets: Object.keys(c.wait_p95_seconds).map(function (k) {
      return { label: k, data: c.wait_p95_seconds[k], borderColor: palette[k], backgroundColor: palette[k], spanGaps: true, pointRadius: 2 };
    }) }, options: { scales: { y: { beginAtZero: true, title: { display: true, text: "seconds" } } } } });
    var statuses = Object.keys(c.finished);
    chart("chart-finished", { type: "bar", data: { labels: labels, datasets: statuses.map(function (s) {
      return { label: s.replace("_", " "), data: c.finished[s], backgroundColor: palette[s] || "#999" };
    }) }, options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } } });
    chart("chart-durations", { type: "line", data: { labels: labels, datasets: [
      { label: "p50", data: c.duration_p50_seconds, borderColor: "#1f6feb", backgroundColor: "#1f6feb", spanGaps: true, pointRadius: 2 },
      { label: "p95", data: c.duration_p95_seconds, borderColor: "#cf222e", backgroundColor: "#cf222e", spanGaps: true, pointRadius: 2 }
    ] }, options: { scales: { y: { beginAtZero: true, title: { display: true, text: "seconds" } } } } });
  }

  var delay = 1000;
  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + window.location.host + root.getAttribute("data-ws"));
    socket.onopen = function () {
      delay = 1000;
      root.classList.add("ops-connected");
      text("live-text", "Live");
    };
    socket.onmessage = function (event) {
      render(JSON.parse(event.data));
      text("live-text", "Live \u00b7 updated " + new Date().toLocaleTimeString());
    };
    socket.onclose = function (event) {
      root.classList.remove("ops-connected");
      if (event.code === 4401 || event.code === 4403) {
        text("live-text", "Not live: sign in again");
        return;
      }
      text("live-text", "Reconnecting\u2026");
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    };
  }

  drawCharts(data.charts);
  connect();
})();
