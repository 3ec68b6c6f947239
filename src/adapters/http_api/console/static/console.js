// dbward console: live regions and the inbox badge (docs/console.md §4).
// Each element with data-live="<url>" is refreshed from that URL every few seconds with
// If-None-Match, so an unchanged page costs a 304; the region is swapped only when the
// server's version changed and never while someone is typing in it.
(function () {
  "use strict";
  var INTERVAL_MS = 2000;

  function busy(region) {
    var active = document.activeElement;
    if (active && region.contains(active) && /^(TEXTAREA|INPUT|SELECT)$/.test(active.tagName)) {
      return true;
    }
    var fields = region.querySelectorAll("textarea, input:not([type=hidden])");
    for (var i = 0; i < fields.length; i++) {
      if (fields[i].value) { return true; }
    }
    return false;
  }

  function poll(url, etag, apply) {
    var headers = etag ? { "If-None-Match": etag } : {};
    return fetch(url, { headers: headers, credentials: "same-origin", cache: "no-cache" })
      .then(function (response) {
        if (response.redirected || response.status === 401) {
          window.location.assign("/ui/login?next=" + encodeURIComponent(window.location.pathname));
          return null;
        }
        if (response.status === 304 || !response.ok) { return etag; }
        var next = response.headers.get("ETag");
        return response.text().then(function (text) { return apply(text) ? next : etag; });
      })
      .catch(function () { return etag; });
  }

  function live(region) {
    var url = region.getAttribute("data-live");
    // The version the server rendered into the page: the first poll compares against it.
    var etag = region.getAttribute("data-etag");
    function tick() {
      poll(url, etag, function (html) {
        if (busy(region)) { return false; }
        region.innerHTML = html;
        region.setAttribute("data-updated", String(Date.now()));
        return true;
      }).then(function (next) {
        if (next !== null) { etag = next; setTimeout(tick, INTERVAL_MS); }
      });
    }
    tick();
  }

  function badge(element) {
    var url = element.getAttribute("data-live-count");
    var etag = null;
    function tick() {
      poll(url, etag, function (text) {
        element.textContent = text.trim();
        element.setAttribute("aria-label", text.trim() + " waiting");
        return true;
      }).then(function (next) {
        if (next !== null) { etag = next; setTimeout(tick, INTERVAL_MS); }
      });
    }
    tick();
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("[data-live]"), live);
    Array.prototype.forEach.call(document.querySelectorAll("[data-live-count]"), badge);
  });
})();
