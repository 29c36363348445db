// The admin's live build banner: the status pushed over /ws/admin/build-status/, with the
// elapsed time and the heartbeat age counted on between pushes. Reconnects on its own.
(function () {
  "use strict";
  var banner = document.getElementById("bh-build-banner");
  var initial = document.getElementById("bh-build-status");
  if (!banner || !initial) { return; }
  var text = banner.querySelector(".bh-build-banner-text");
  var command = banner.querySelector(".bh-build-banner-command");
  var status = JSON.parse(initial.textContent);
  var receivedAt = Date.now();
  var retryDelay = 1000;
  var socket = null;

  function duration(seconds) {
    var h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    if (h) { return h + "h" + (m < 10 ? "0" : "") + m + "m"; }
    if (m) { return m + "m" + (s < 10 ? "0" : "") + s + "s"; }
    return s + "s";
  }

  function render() {
    var run = status && status.activeRun;
    if (!run) { banner.hidden = true; return; }
    var since = Math.floor((Date.now() - receivedAt) / 1000);
    var silent = run.silentFor + since;
    var stale = run.status === "stale" || silent > status.heartbeatTimeout;
    banner.hidden = false;
    banner.classList.toggle("bh-build-banner-stale", stale);
    banner.classList.toggle("bh-build-banner-running", !stale);
    if (stale) {
      text.textContent = "stale: no heartbeat for " +
        (silent >= 60 ? Math.floor(silent / 60) + "m" : silent + "s");
    } else {
      text.textContent = "Building: " + (run.stage ? "stage " + run.stage + ", " : "") +
        duration(run.elapsed + since);
    }
    command.textContent = run.command || "";
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + window.location.host + banner.dataset.wsPath);
    socket.onopen = function () { retryDelay = 1000; };
    socket.onmessage = function (message) {
      status = JSON.parse(message.data);
      receivedAt = Date.now();
      render();
    };
    socket.onclose = function () {
      window.setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 30000);
    };
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && socket && socket.readyState === WebSocket.OPEN) { socket.send("{}"); }
  });
  render();
  window.setInterval(render, 1000);
  connect();
}());
