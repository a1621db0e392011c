// zapreply console: live updates by server-sent events, and copy buttons. No build step.
(function () {
  "use strict";

  function refresh(url, ids) {
    return fetch(url, { headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" })
      .then(function (response) {
        if (response.redirected || !response.ok) { throw new Error("refresh " + response.status); }
        return response.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        ids.forEach(function (id) {
          var current = document.getElementById(id);
          var next = doc.getElementById(id);
          // Never pull a form away from someone typing in it; the next change brings it.
          if (!current || !next || current.contains(document.activeElement)) { return; }
          // Nothing changed here: keep the elements (and whatever the operator is pointing at).
          if (current.innerHTML === next.innerHTML) { return; }
          var before = new Set(Array.prototype.map.call(
            current.querySelectorAll("[data-conversation]"), function (el) { return el.dataset.conversation; }));
          var open = Array.prototype.map.call(
            current.querySelectorAll("details[open][data-run]"), function (el) { return el.dataset.run; });
          current.innerHTML = next.innerHTML;
          open.forEach(function (run) {
            var details = current.querySelector('details[data-run="' + run + '"]');
            if (details) { details.open = true; }
          });
          current.querySelectorAll("[data-conversation]").forEach(function (el) {
            if (before.size && !before.has(el.dataset.conversation)) { el.classList.add("fresh"); }
          });
        });
      });
  }

  function partialUrl(base) {
    var url = new URL(base, window.location.href);
    url.searchParams.set("partial", "1");
    return url.toString();
  }

  function live() {
    var body = document.body;
    var kind = body.dataset.live;
    if (!kind || !window.EventSource) { return; }
    var source = new EventSource("/live?after=" + encodeURIComponent(body.dataset.after || ""));
    window.zapreplyLive = source;
    var busy = false, again = false;
    function update() {
      if (busy) { again = true; return; }
      busy = true;
      var done;
      if (kind === "inbox") {
        var rows = document.getElementById("inbox-rows");
        done = refresh(partialUrl(rows.dataset.partialUrl), ["inbox-rows"]);
      } else {
        done = refresh(partialUrl(window.location.pathname), ["live-transcript", "live-side"]);
      }
      done.catch(function () {}).then(function () {
        busy = false;
        if (again) { again = false; update(); }
      });
    }
    source.addEventListener("open", function () { body.classList.add("is-live"); });
    // Each answer ends and the browser asks again: an error while reconnecting is the normal
    // course; only a closed source (signed out, the console gone) is not live.
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) { body.classList.remove("is-live"); }
    });
    source.addEventListener("change", function (event) {
      body.classList.add("is-live");
      var data = JSON.parse(event.data || "{}");
      if (data.reload) { update(); return; }
      var changed = data.conversations || [];
      if (!changed.length) { return; }
      if (kind === "inbox") { update(); return; }
      var mine = Number(body.dataset.conversation);
      if (changed.indexOf(mine) !== -1) { update(); }
    });
  }

  function copyButtons() {
    document.addEventListener("click", function (event) {
      var button = event.target.closest("button.copy");
      if (!button) { return; }
      var text = button.dataset.copy;
      var done = function () { button.textContent = "Copied"; setTimeout(function () { button.textContent = "Copy"; }, 1500); };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done);
      } else {
        var input = button.parentElement.querySelector("input");
        if (input) { input.select(); document.execCommand("copy"); done(); }
      }
    });
  }

  function selectAll() {
    var all = document.getElementById("select-all");
    if (!all) { return; }
    all.addEventListener("change", function () {
      document.querySelectorAll('input[name="run"]').forEach(function (box) { box.checked = all.checked; });
    });
  }

  // A playground turn being answered: its text arrives by server-sent events, each answer
  // short (the text after the offset in Last-Event-ID); once done, the finished turn replaces it.
  function followTurn(answer) {
    var url = answer.dataset.streamUrl;
    if (!url || !window.EventSource) { return; }
    var source = new EventSource(url);
    var text = answer.querySelector(".pg-text");
    source.addEventListener("text", function (event) {
      var data = JSON.parse(event.data || "{}");
      if (!text || !data.text) { return; }
      text.textContent = data.replace ? data.text : text.textContent + data.text;
      var waiting = answer.querySelector(".pg-waiting");
      if (waiting) { waiting.textContent = "Writing…"; }
    });
    source.addEventListener("done", function () {
      source.close();
      var turn = answer.closest("[id^='turn-']");
      fetch(answer.dataset.turnUrl, { credentials: "same-origin" })
        .then(function (response) {
          if (response.redirected || !response.ok) { throw new Error("turn " + response.status); }
          return response.text();
        })
        .then(function (html) {
          var next = new DOMParser().parseFromString(html, "text/html").getElementById(turn.id);
          if (next) { turn.replaceWith(next); }
        })
        .catch(function () { answer.classList.remove("is-streaming"); });
    });
  }

  function playground() {
    document.querySelectorAll(".pg-answer[data-stream-url]").forEach(followTurn);
    var box = document.getElementById("pg-message");
    if (!box) { return; }
    // Enter sends, Shift+Enter starts a new line, as in a chat.
    box.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        box.form.requestSubmit();
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    live();
    playground();
    copyButtons();
    selectAll();
  });
})();
