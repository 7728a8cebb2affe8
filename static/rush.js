// rush dashboard: live updates over Server-Sent Events. No framework, no build step.
// Text from the server is inserted with textContent; only the server's own SVG charts and table fragments (rendered
// from escaped templates) are inserted as HTML.
(function () {
  "use strict";
  var cmpUpdate = null;
  function throttle(fn, ms) {
    var timer = null, again = false;
    return function () {
      if (timer) { again = true; return; }
      fn();
      timer = setTimeout(function () { timer = null; if (again) { again = false; fn(); } }, ms);
    };
  }
  function refresh(url, target) {
    return fetch(url, { credentials: "same-origin" }).then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null && target) { target.innerHTML = html; } });
  }
  function setLive(on) {
    var dot = document.getElementById("live");
    if (dot) { dot.classList.toggle("on", on); dot.textContent = on ? "live" : "not live"; }
  }

  // The sessions list's columns sort in the page: a click on a header sorts by it, a second click the other way. A
  // sweep's points (rows sharing data-group, its header row first) move together, ordered by their first point (the
  // best: the server puts it on top). Cells sort by their data-v when they have one, else by their text.
  var sorting = null;
  function sortTable(table) {
    if (!sorting || !table) { return; }
    var body = table.querySelector("tbody");
    var groups = [], byKey = {};
    Array.prototype.forEach.call(body.rows, function (r, i) {
      var key = r.dataset.group || "row-" + i;
      if (!byKey[key]) { byKey[key] = { rows: [], first: null, at: groups.length }; groups.push(byKey[key]); }
      byKey[key].rows.push(r);
      if (!byKey[key].first && r.dataset.id) { byKey[key].first = r; }
    });
    var value = function (g) {
      var cell = g.first && g.first.cells[sorting.col];
      if (!cell) { return null; }
      var v = cell.dataset.v !== undefined ? cell.dataset.v : cell.textContent.trim();
      if (sorting.num) { var n = parseFloat(v); return isNaN(n) ? null : n; }
      return v === "" ? null : v.toLowerCase();
    };
    groups.sort(function (a, b) {
      var x = value(a), y = value(b);
      if (x === y) { return a.at - b.at; }
      if (x === null) { return 1; }
      if (y === null) { return -1; }
      return (x < y ? -1 : 1) * sorting.dir;
    });
    groups.forEach(function (g) { g.rows.forEach(function (r) { body.appendChild(r); }); });
  }
  var sortable = document.getElementById("sessions");
  if (sortable) {
    sortable.querySelectorAll("th[data-sort]").forEach(function (th) {
      th.classList.add("sortable");
      th.addEventListener("click", function () {
        var col = th.cellIndex, num = th.dataset.sort === "num";
        // Numbers (accuracy, sizes, times) are most useful high first; text from A.
        var dir = sorting && sorting.col === col ? -sorting.dir : (num ? -1 : 1);
        sorting = { col: col, dir: dir, num: num };
        sortable.querySelectorAll("th[data-sort]").forEach(function (o) { o.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
        sortTable(sortable);
      });
    });
  }

  // The sessions list: when the daemon reports a change, fetch the page again and swap in its rows, the state counts
  // and the totals (all rendered from escaped templates).
  var list = document.getElementById("sessions");
  if (list && list.dataset.live) {
    var es = new EventSource(list.dataset.live);
    var body = list.querySelector("tbody");
    var swap = function (doc, id) {
      var from = doc.getElementById(id), to = document.getElementById(id);
      if (from && to) { to.innerHTML = from.innerHTML; }
    };
    var reload = throttle(function () {
      fetch(location.pathname + location.search, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html === null) { return; }
          var doc = new DOMParser().parseFromString(html, "text/html");
          var rows = doc.querySelector("#sessions tbody");
          if (!rows) { return; }
          // Keep the compare boxes the user ticked across the refresh.
          var ticked = Array.prototype.map.call(body.querySelectorAll("input[name=s]:checked"), function (i) { return i.value; });
          body.innerHTML = rows.innerHTML;
          sortTable(list);
          body.querySelectorAll("input[name=s]").forEach(function (i) { i.checked = ticked.indexOf(i.value) >= 0; });
          ["sessions-total", "state-pills", "sessions-showing"].forEach(function (id) { swap(doc, id); });
          if (cmpUpdate) { cmpUpdate(); }
        });
    }, 1000);
    es.addEventListener("open", function () { setLive(true); });
    es.addEventListener("error", function () { setLive(false); });
    es.addEventListener("changed", reload);
  }

  // One session: charts, log tail, state, checkpoints.
  var page = document.getElementById("session");
  if (page && page.dataset.live) {
    var base = page.dataset.base;
    // Redraws keep the smoothing and log axis the page was drawn with.
    var chartQuery = page.dataset.chartQuery ? "?" + page.dataset.chartQuery : "";
    var chart = function (name, box) {
      return throttle(function () { refresh(base + "/charts/" + name + ".svg" + chartQuery, document.getElementById(box)); }, 1500);
    };
    var charts = {
      loss: chart("loss", "chart-loss"),
      accuracy: chart("accuracy", "chart-accuracy"),
      lr: chart("lr", "chart-lr"),
      throughput: chart("throughput", "chart-throughput")
    };
    var log = document.getElementById("log");
    // "Run time" ticks while the session runs: from the seconds the server counted when it drew the page (or from the
    // moment the page sees it start), formatted like the server does.
    var elapsed = document.getElementById("elapsed");
    var ticking = null;
    var duration = function (secs) {
      var s = Math.max(0, Math.round(secs));
      var pad = function (n) { return (n < 10 ? "0" : "") + n; };
      if (s < 60) { return s + "s"; }
      if (s < 3600) { return Math.floor(s / 60) + "m " + pad(s % 60) + "s"; }
      if (s < 86400) { return Math.floor(s / 3600) + "h " + pad(Math.floor((s % 3600) / 60)) + "m"; }
      return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
    };
    var tick = function (from) {
      if (!elapsed || ticking) { return; }
      var t0 = Date.now();
      ticking = setInterval(function () { elapsed.textContent = duration(from + (Date.now() - t0) / 1000); }, 1000);
    };
    var untick = function () { if (ticking) { clearInterval(ticking); ticking = null; } };
    if (elapsed && elapsed.dataset.runningFor) { tick(parseFloat(elapsed.dataset.runningFor) || 0); }
    var stream = new EventSource(page.dataset.live);
    stream.addEventListener("open", function () { setLive(true); });
    stream.addEventListener("error", function () { setLive(false); });
    stream.addEventListener("step", function (e) {
      var d = JSON.parse(e.data);
      var s = document.getElementById("step-now");
      if (s) { s.textContent = "step " + d.step + " · loss " + Number(d.loss).toFixed(4); }
      charts.loss(); charts.lr(); charts.throughput();
    });
    stream.addEventListener("epoch", function () { charts.accuracy(); charts.loss(); });
    // A code session's report: its loss, accuracy and "Reported" (in the learning rate's place) charts.
    stream.addEventListener("report", function () { charts.accuracy(); charts.loss(); charts.lr(); });
    stream.addEventListener("log", function (e) {
      if (!log) { return; }
      var atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.appendChild(document.createTextNode(e.data + "\n"));
      while (log.childNodes.length > 2000) { log.removeChild(log.firstChild); }
      if (atBottom) { log.scrollTop = log.scrollHeight; }
    });
    // A checkpoint was saved (and retention applied): redraw the table, and offer what is kept in the fork box,
    // `best` and `last` first, as the server draws it; the user's choice stays while it still exists.
    var forkBox = document.getElementById("fork-checkpoint");
    var forkButton = document.getElementById("fork");
    stream.addEventListener("checkpoint", function (e) {
      refresh(base + "?fragment=checkpoints", document.querySelector("#checkpoints tbody"));
      var d = JSON.parse(e.data);
      if (!forkBox || !d.saved) { return; }
      var chosen = forkBox.value;
      var choices = d.saved.length ? ["best", "last"].concat(d.saved.map(String)) : [];
      forkBox.textContent = "";
      choices.forEach(function (c) {
        var o = document.createElement("option");
        o.value = c; o.textContent = c; o.selected = c === chosen;
        forkBox.appendChild(o);
      });
      forkBox.disabled = !choices.length;
      if (forkButton) { forkButton.disabled = !choices.length; forkButton.removeAttribute("title"); }
    });
    stream.addEventListener("state", function (e) {
      var d = JSON.parse(e.data);
      var badge = document.getElementById("state");
      if (badge) { badge.className = "badge " + d.state; badge.textContent = d.state; }
      var bar = document.getElementById("progress-bar");
      if (bar) { bar.className = "bar " + d.state; bar.firstElementChild.style.width = d.percent + "%"; }
      var text = document.getElementById("progress-text");
      if (text) { text.textContent = d.progress; }
      var best = document.getElementById("best");
      if (best) { best.textContent = d.best; }
      var reason = document.getElementById("reason");
      if (reason) { reason.textContent = d.reason; }
      var activity = document.getElementById("activity");
      if (activity) { activity.textContent = d.activity || ""; }
      var stop = document.getElementById("stop");
      if (stop) { stop.disabled = d.terminal; }
      if (d.state === "running") { tick(0); } else { untick(); }
    });
    stream.addEventListener("end", function () {
      untick(); stream.close(); setLive(false); charts.loss(); charts.accuracy(); charts.lr(); charts.throughput();
      refresh(base + "?fragment=checkpoints", document.querySelector("#checkpoints tbody"));
    });
  }

  // Compare: at least two sessions chosen before the button works.
  var cmp = document.getElementById("compare-form");
  if (cmp) {
    var update = function () {
      var n = cmp.querySelectorAll("input[name=s]:checked").length;
      var b = document.getElementById("compare-button");
      if (b) { b.disabled = n < 2; b.textContent = "Compare" + (n ? " (" + n + ")" : ""); }
    };
    cmp.addEventListener("change", update);
    cmpUpdate = update;
    update();
  }
  // The ensemble builder: the validation accuracy of the mix as the weights change (from cached probabilities), and
  // the submit button. Answers are shown with textContent.
  var builder = document.getElementById("builder");
  var accOut = document.getElementById("mix-acc");
  if (builder && accOut && builder.dataset.dataset) {
    var dataset = builder.dataset.dataset;
    var inputs = builder.querySelectorAll("input.weight");
    var note = document.getElementById("mix-note");
    var flip = document.getElementById("mix-flip");
    var members = function () {
      return Array.prototype.map.call(inputs, function (i) {
        return { session: i.dataset.session, epoch: i.dataset.epoch, weight: parseFloat(i.value) || 0 };
      });
    };
    // The same submission from the command line, kept in step with the weights and boxes.
    var command = document.getElementById("mix-command");
    var dryBox = document.getElementById("mix-dry");
    var showCommand = function () {
      if (!command) { return; }
      var ms = members();
      var text = "rush submit " + ms.map(function (m) { return m.session + ":" + m.epoch; }).join(" ");
      if (ms.some(function (m) { return m.weight !== 1; })) {
        text += " --weights " + ms.map(function (m) { return String(m.weight); }).join(",");
      }
      if (flip && flip.checked) { text += " --tta flip"; }
      if (dryBox && dryBox.checked) { text += " -t"; }
      command.textContent = text;
    };
    builder.addEventListener("input", showCommand);
    if (flip) { flip.addEventListener("change", showCommand); }
    if (dryBox) { dryBox.addEventListener("change", showCommand); }
    var evaluate = throttle(function () {
      var list = members().map(function (m) { return m.session + ":" + m.epoch + ":" + m.weight; }).join(",");
      var url = "/api/datasets/" + encodeURIComponent(dataset) + "/ensemble?members=" + encodeURIComponent(list) +
        "&tta=" + (flip && flip.checked ? "flip" : "none");
      fetch(url, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (body) {
        if (body.error) { accOut.textContent = "–"; note.textContent = body.error; return; }
        accOut.textContent = (100 * body.val_acc).toFixed(2) + "%";
        note.textContent = "on " + body.rows + " validation samples; members alone: " +
          body.singles.map(function (x) { return (100 * x).toFixed(2) + "%"; }).join(", ");
      }).catch(function () { note.textContent = "the daemon did not answer"; });
    }, 300);
    builder.addEventListener("input", evaluate);
    if (flip) { flip.addEventListener("change", evaluate); }
    evaluate();
    var submit = document.getElementById("mix-submit");
    var result = document.getElementById("mix-result");
    var dry = document.getElementById("mix-dry");
    submit.addEventListener("click", function () {
      var body = {
        members: members().map(function (m) { return { session: m.session, checkpoint: String(m.epoch), weight: m.weight }; }),
        tta: flip && flip.checked ? "flip" : "none",
        dry_run: !!(dry && dry.checked)
      };
      submit.disabled = true;
      fetch("/api/submissions", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify(body)
      }).then(function (r) { return r.text(); }).then(function (text) {
        // errors from the token guard are plain text; the API's are {"error": ...}
        var answer;
        try { answer = JSON.parse(text); } catch (e) { answer = { error: text }; }
        result.textContent = answer.error ? answer.error : answer.dry_run ?
          "submission " + answer.id + " queued (a dry run: scored on the submissions page, never on the board)" :
          "submission " + answer.id + " queued; its public score appears on the board of " + answer.dataset;
      }).catch(function () { result.textContent = "the daemon did not answer"; })
        .then(function () { submit.disabled = false; });
    });
  }
})();
