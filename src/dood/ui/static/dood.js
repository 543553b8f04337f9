// dood's pages: refresh the live part in place. The server renders (and escapes) every piece of HTML;
// this script only swaps a fragment of our own page for the same fragment fetched again.
(function () {
  "use strict";
  function every(seconds, fn) {
    if (!seconds) return;
    setInterval(function () { if (!document.hidden) fn(); }, seconds * 1000);
  }
  function refetch(url) {
    return fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "dood" } }).then(function (r) {
      if (!r.ok) throw new Error(r.status);
      return r.text();
    });
  }
  var live = document.getElementById("live");
  var auto = document.getElementById("auto-refresh");
  if (live) {
    every(Number(live.dataset.refresh), function () {
      if (auto && !auto.checked) return;
      var url = new URL(window.location.href);
      url.searchParams.set("fragment", "1");
      refetch(url).then(function (html) { live.innerHTML = html; }).catch(function () {});
    });
  }
  var logs = document.getElementById("log-tail");
  if (logs && logs.dataset.refresh) {
    every(Number(logs.dataset.refresh), function () {
      refetch(window.location.href).then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("log-tail");
        if (fresh) logs.textContent = fresh.textContent;
      }).catch(function () {});
    });
  }
})();
