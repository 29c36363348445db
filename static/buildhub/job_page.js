/* A job's admin page: status, progress and log lines follow the job over its websocket. */
(function () {
  "use strict";
  var root = document.getElementById("job-page");
  if (!root) { return; }
  var jobId = root.getAttribute("data-job");
  var after = parseInt(root.getAttribute("data-after"), 10) || 0;
  var terminal = ["succeeded", "failed", "cancelled", "timed_out"];
  var statusLabels = { queued: "Queued", running: "Running", succeeded: "Succeeded", failed: "Failed",
    cancelled: "Cancelled", timed_out: "Timed out" };
  var shownStatus = root.getAttribute("data-status");
  var log = root.querySelector('[data-testid="log-' + jobId + '"]');
  var live = root.querySelector('[data-testid="live-text"]');

  function byTestId(name) { return root.querySelector('[data-testid="' + name + "-" + jobId + '"]'); }

  function stamp(iso) {
    var d = new Date(iso);
    function two(n) { return String(n).padStart(2, "0"); }
    return d.getFullYear() + "-" + two(d.getMonth() + 1) + "-" + two(d.getDate()) + " " +
      two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
  }
  // The bar's width is set here, not in a style attribute, which the admin's CSP refuses.
  var initialBar = byTestId("progress");
  initialBar.querySelector(".job-progress-bar").style.width =
    (parseInt(initialBar.getAttribute("aria-valuenow"), 10) || 0) + "%";

  function showStatus(message) {
    var badge = byTestId("badge-status");
    badge.textContent = statusLabels[message.status] || message.status;
    badge.className = "job-badge status-" + message.status;
    byTestId("badge-stage").textContent = message.stage || "not started";
    var bar = byTestId("progress");
    bar.setAttribute("aria-valuenow", message.progress);
    bar.querySelector(".job-progress-bar").style.width = message.progress + "%";
    byTestId("progress-text").textContent = message.progress + "%";
    if (message.status !== "queued") {
      // No longer waiting: the queue figures of the page load no longer apply.
      byTestId("queue-position").textContent = "\u2013";
      byTestId("waiting-reason").textContent = "\u2013";
    }
    if (message.started_at) { byTestId("started").textContent = stamp(message.started_at); }
    if (message.finished_at) { byTestId("finished").textContent = stamp(message.finished_at); }
    if (message.attempts !== undefined) {
      var attempts = byTestId("attempts");
      attempts.textContent = attempts.textContent.replace(/^\d+/, message.attempts);
    }
    showHeading(message.status);
    if (message.status !== "queued") { removeAction("run-now"); }
    if (terminal.indexOf(message.status) !== -1) {
      byTestId("eta").textContent = "\u2013";
      removeAction("cancel");
    }
  }

  // The heading and the window title end in the job's status: "diagnostic.sleep <id> (running)".
  function showHeading(status) {
    if (status === shownStatus) { return; }
    var heading = document.querySelector('[data-testid="text-job-heading-' + jobId + '"]');
    var was = "(" + shownStatus + ")", now = "(" + status + ")";
    if (heading) { heading.textContent = heading.textContent.replace(was, now); }
    document.title = document.title.replace(was, now);
    shownStatus = status;
  }

  function removeAction(verb) {
    var button = document.querySelector('[data-testid="button-' + verb + "-" + jobId + '"]');
    if (button) { button.closest("li").remove(); }
  }

  // What only the server knows once a job ends (its artifacts, its error, Retry) comes from
  // the page itself, read again in the background: the page stays where the reader is.
  function refreshEndedParts() {
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : Promise.reject(response.status); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var tools = document.querySelector("ul.object-tools");
        var freshTools = fresh.querySelector("ul.object-tools");
        if (tools && freshTools) { tools.replaceWith(document.importNode(freshTools, true)); }
        fresh.querySelectorAll("[data-refresh]").forEach(function (part) {
          var name = part.getAttribute("data-refresh");
          var current = root.querySelector('[data-refresh="' + name + '"]');
          var adopted = document.importNode(part, true);
          if (current) {
            current.replaceWith(adopted);
          } else {
            root.querySelector('[data-refresh="artifacts"]').before(adopted);
          }
        });
      })
      .catch(function () { live.textContent += " (reload for its artifacts)"; });
  }

  function appendLine(message) {
    if (message.seq <= after) { return; }
    after = message.seq;
    var atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    var line = document.createElement("span");
    line.className = "log-line level-" + message.level;
    line.setAttribute("data-seq", message.seq);
    var ts = new Date(message.ts);
    line.textContent = ts.toTimeString().slice(0, 8) + " " + message.message + "\n";
    log.appendChild(line);
    if (atBottom) { log.scrollTop = log.scrollHeight; }
  }

  var delay = 1000;
  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + window.location.host + root.getAttribute("data-ws") + "?after=" + after);
    socket.onopen = function () { delay = 1000; live.textContent = "Live"; root.classList.add("ops-connected"); };
    socket.onmessage = function (event) {
      var message = JSON.parse(event.data);
      if (message.event === "log") { appendLine(message); return; }
      var endedNow = terminal.indexOf(message.status) !== -1 && message.status !== shownStatus;
      showStatus(message);
      if (endedNow) {
        live.textContent = "Finished: " + (statusLabels[message.status] || message.status);
        refreshEndedParts();
      }
    };
    socket.onclose = function (event) {
      root.classList.remove("ops-connected");
      if (event.code === 1000) { live.textContent = "Finished"; return; }
      if (event.code >= 4400 && event.code < 4500) { live.textContent = "Not live (code " + event.code + ")"; return; }
      live.textContent = "Reconnecting…";
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    };
  }
  log.scrollTop = log.scrollHeight;
  connect();
})();
