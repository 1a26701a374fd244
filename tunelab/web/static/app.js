/* tunelab UI: small progressive enhancements. Every form also works without JavaScript. */
(function () {
  "use strict";

  // htmx: swap validation errors (422) and conflicts (409) into the target like any answer.
  if (window.htmx) {
    htmx.config.responseHandling = [
      { code: "204", swap: false },
      { code: "[23]..", swap: true },
      { code: "4(22|09)", swap: true },
      { code: "[45]..", swap: false, error: true },
    ];
  }

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  function duration(s) {
    if (s == null || isNaN(s)) return "—";
    if (s < 1) return "under 1 s";
    if (s < 90) return Math.round(s) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    return (s / 3600).toFixed(1) + " h";
  }

  // The API's event times are UTC without a zone; a browser would read them as local time.
  function parseTime(iso) {
    return Date.parse(/([zZ]|[+-]\d\d:?\d\d)$/.test(iso || "") ? iso : iso + "Z");
  }

  // Relative times ("3 min ago") as web/format.py's `when` words them, kept true while a page is open.
  function when(iso) {
    var t = parseTime(iso);
    if (isNaN(t)) return null;
    var ago = (Date.now() - t) / 1000;
    if (ago < 60) return "just now";
    if (ago < 3600) return Math.floor(ago / 60) + " min ago";
    if (ago < 86400) return Math.floor(ago / 3600) + " h ago";
    return null;                        // a date: as the server wrote it
  }
  function refreshTimes() {
    $all("time[data-relative]").forEach(function (el) {
      var text = when(el.getAttribute("datetime"));
      if (text) el.textContent = text;
    });
  }

  // What a job waits for before it runs (the live panel's ETA slot), as _live.html words it.
  var WAITING = { queued: "waiting for a worker", validating: "checking the data", paused: "paused until resumed" };

  // ---- filters that apply on change (an inline onchange= would break the pages' CSP) ------------
  document.addEventListener("change", function (ev) {
    var el = ev.target;
    if (el.dataset && el.dataset.autosubmit !== undefined && el.form) el.form.submit();
  });

  // ---- confirmations on destructive forms -------------------------------------------------
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) ev.preventDefault();
  }, true);

  // ---- sign-in tabs ------------------------------------------------------------------------
  function initTabs(list) {
    var tabs = $all("[role=tab]", list);
    function select(tab) {
      tabs.forEach(function (t) {
        var on = t === tab;
        t.setAttribute("aria-selected", on ? "true" : "false");
        t.tabIndex = on ? 0 : -1;
        document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
      });
    }
    tabs.forEach(function (t, i) {
      t.addEventListener("click", function () { select(t); });
      t.addEventListener("keydown", function (e) {
        if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
          var next = tabs[(i + (e.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
          select(next); next.focus();
        }
      });
    });
    select(tabs.find(function (t) { return t.getAttribute("aria-selected") === "true"; }) || tabs[0]);
  }

  // ---- upload: drag and drop, progress bar ---------------------------------------------------
  function initUpload(form) {
    var zone = $("[data-dropzone]", form), input = $("input[type=file]", form), chosen = $("[data-chosen]", form);
    var box = $("[data-progress]", form), bar = $("progress", box), text = $("[data-progress-text]", box);
    var result = document.getElementById("upload-result");
    function show() { chosen.textContent = input.files.length ? "Selected: " + input.files[0].name : ""; }
    input.addEventListener("change", show);
    ["dragenter", "dragover"].forEach(function (n) {
      zone.addEventListener(n, function (e) { e.preventDefault(); zone.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (n) {
      zone.addEventListener(n, function () { zone.classList.remove("over"); });
    });
    zone.addEventListener("drop", function (e) {
      e.preventDefault();
      if (e.dataTransfer && e.dataTransfer.files.length) { input.files = e.dataTransfer.files; show(); }
    });
    form.addEventListener("submit", function (e) {
      if (!window.FormData || !input.files.length) return;     // the browser's own validation / post
      e.preventDefault();
      var xhr = new XMLHttpRequest(), button = $("button[type=submit]", form);
      box.hidden = false; bar.value = 0; text.textContent = "0%"; button.disabled = true;
      xhr.upload.addEventListener("progress", function (p) {
        if (!p.lengthComputable) return;
        var pct = Math.round(100 * p.loaded / p.total);
        bar.value = pct;
        text.textContent = pct < 100 ? pct + "%" : "100%, checking every row…";
      });
      xhr.addEventListener("load", function () {
        button.disabled = false;
        if (xhr.status === 200 && xhr.responseURL && xhr.responseURL.indexOf("/datasets/upload") < 0) {
          window.location.assign(xhr.responseURL);       // the new dataset's page
          return;
        }
        box.hidden = true;
        var doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
        var answer = doc.getElementById("upload-result");
        if (answer) result.innerHTML = answer.innerHTML;
        else if (xhr.status === 413) result.innerHTML = '<p class="alert error" role="alert">The file is larger than this server accepts.</p>';
        else result.innerHTML = '<p class="alert error" role="alert">The upload failed (HTTP ' + xhr.status + '). Try again.</p>';
        result.focus();
      });
      xhr.addEventListener("error", function () {
        button.disabled = false; box.hidden = true;
        result.innerHTML = '<p class="alert error" role="alert">The connection failed during the upload. Try again.</p>';
      });
      xhr.open("POST", form.action);
      xhr.send(new FormData(form));
    });
  }

  // ---- a job's live panel: SSE events into the chart, the progress bar and the event log -----
  function initLive(panel) {
    var t0 = parseTime(panel.dataset.t0), box = document.getElementById("chart");
    var data = JSON.parse(document.getElementById("chart-data").textContent || "[]");
    var xs = [], pct = [], loss = [], f1 = [], plot = null, live = 0;
    // A classifier's loop reports validation macro-F1 (0-1); a causal LM's, minus the validation loss.
    var negLoss = panel.dataset.metric === "neg-loss";
    function add(p) {
      xs.push(p.t); pct.push(p.pct == null ? null : p.pct);
      loss.push(p.loss == null ? null : p.loss);
      f1.push(p.metric == null ? null : (negLoss ? -p.metric : 100 * p.metric));
    }
    data.forEach(add);
    function draw() {
      box.dataset.points = xs.length;
      if (!window.uPlot || !xs.length) return;
      var width = Math.max(280, box.clientWidth || 600);
      if (plot) { plot.setData([xs, pct, loss, f1]); return; }
      plot = new uPlot({
        width: width, height: 260,
        scales: { x: { time: false }, pct: { range: [0, 100] }, loss: { auto: true } },
        series: [
          { label: "seconds", value: function (u, v) { return v == null ? "" : v.toFixed(0) + " s"; } },
          { label: "progress %", scale: "pct", stroke: "#94a3b8", width: 2, spanGaps: true },
          { label: "training loss", scale: "loss", stroke: "#dc2626", width: 2, spanGaps: true },
          { label: negLoss ? "validation loss" : "validation macro-F1 %", scale: negLoss ? "loss" : "pct",
            stroke: "#4338ca", width: 2, spanGaps: true, points: { show: true, size: 6 } },
        ],
        axes: [{ label: "seconds since created" }, { scale: "pct", label: "%" },
               { scale: "loss", side: 1, label: "loss", grid: { show: false } }],
      }, [xs, pct, loss, f1], box);
      window.addEventListener("resize", function () { plot.setSize({ width: Math.max(280, box.clientWidth), height: 260 }); });
    }
    draw();
    if (panel.dataset.terminal === "true" || !window.EventSource) return;

    var log = document.getElementById("events"), status = document.getElementById("job-status");
    function logEvent(e) {
      var li = document.createElement("li");
      li.className = "ev-" + e.type + " lvl-" + e.level;
      var time = document.createElement("time"), type = document.createElement("span"), msg = document.createElement("span");
      time.textContent = new Date(e.created_at).toTimeString().slice(0, 8);
      type.className = "ev-type"; type.textContent = e.type;
      msg.className = "ev-msg"; msg.textContent = e.message;
      li.append(time, " ", type, " ", msg);
      log.appendChild(li);
    }
    var es = new EventSource(panel.dataset.stream + "?after=" + encodeURIComponent(panel.dataset.last));
    es.addEventListener("progress", function (m) {
      var e = JSON.parse(m.data), d = e.data || {};
      var p = d.total_steps ? 100 * d.step / d.total_steps : null;
      add({ t: (parseTime(e.created_at) - t0) / 1000, pct: p, loss: d.loss, metric: d.eval_metric });
      live += 1; box.dataset.livePoints = live;
      draw();
      if (p != null) $("#job-progress").value = Math.round(p);
      $("[data-phase]", panel).textContent = (d.phase || "").replace("-", " ");
      $("[data-steps]", panel).textContent = d.total_steps ? d.step + " / " + d.total_steps : "";
      var eta = $("[data-eta]", panel), label = $("[data-eta-label]", panel);
      if (eta) eta.textContent = d.eta_s != null ? duration(d.eta_s) : "estimating…";
      if (label) label.textContent = "ETA";
      costSoon();
    });
    // "charged so far" and the hold, live: the cost partial again, at most every few seconds.
    var costTimer = null;
    function costSoon() {
      var box = $("[data-cost-box]");
      if (!box || costTimer || !window.fetch) return;
      costTimer = window.setTimeout(function () {
        fetch(box.dataset.costUrl, { credentials: "same-origin" }).then(function (r) {
          return r.ok ? r.text() : null;
        }).then(function (html) {
          costTimer = null;
          if (!html) return;
          var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("[data-cost-box]");
          if (fresh) box.innerHTML = fresh.innerHTML;
        }).catch(function () { costTimer = null; });
      }, 3000);
    }
    var costPoll = window.setInterval(costSoon, 10000);
    ["status", "log", "checkpoint", "metrics"].forEach(function (type) {
      es.addEventListener(type, function (m) {
        var e = JSON.parse(m.data);
        logEvent(e);
        if (type === "status" && e.data && e.data.to) {
          var to = String(e.data.to);
          if (status) {
            var badge = document.createElement("span");
            badge.className = "badge badge-" + to.replace(/[^a-z-]/g, ""); badge.textContent = to;
            status.replaceChildren(badge);
          }
          // the progress line follows the status: a running job's phase comes with its next event
          var text = $(".progress-text", panel), eta = $("[data-eta]", panel), label = $("[data-eta-label]", panel);
          if (text) text.dataset.progressStatus = to;
          $("[data-phase]", panel).textContent = to === "running" ? "starting" : to.replace("-", " ");
          if (to !== "running") $("[data-steps]", panel).textContent = "";
          if (eta) eta.textContent = to === "running" ? "estimating…" : (WAITING[to] || "");
          if (label) label.textContent = to === "running" ? "ETA" : "";
          costSoon();
        }
      });
    });
    es.addEventListener("end", function () {
      es.close(); window.clearInterval(costPoll);
      window.setTimeout(function () { window.location.reload(); }, 400);   // final metrics, card, table
    });
  }

  // ---- the chat playground: the answer read from a streamed response as the model writes it ----
  function initChat(form) {
    if (!window.fetch || !window.TextDecoder || !window.FormData) return;    // the plain form post
    var out = $("[data-answer]"), status = $("[data-chat-status]", form), box = $("[data-chat-error-live]");
    var button = $("button[type=submit]", form);
    if (!button) return;
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var old = $("[data-chat-error]");
      if (old) old.remove();
      box.hidden = true; out.textContent = ""; out.dataset.done = "false"; out.dataset.pieces = "0";
      button.disabled = true; status.textContent = "Writing…";
      fetch(form.dataset.stream, { method: "POST", body: new FormData(form), credentials: "same-origin" })
        .then(function (r) {
          if (!r.ok) {
            return r.text().then(function (t) {
              var html = (r.headers.get("content-type") || "").indexOf("html") >= 0;
              throw new Error(html || !t ? "The request failed (HTTP " + r.status + "). Reload the page and try again." : t);
            });
          }
          var reader = r.body.getReader(), decoder = new TextDecoder();
          function pump() {
            return reader.read().then(function (chunk) {
              if (chunk.done) { out.textContent += decoder.decode(); return; }
              out.textContent += decoder.decode(chunk.value, { stream: true });
              out.dataset.pieces = String(+out.dataset.pieces + 1);
              return pump();
            });
          }
          return pump();
        })
        .then(function () {
          status.textContent = out.textContent ? "Done." : "Done: the model ended its answer at once.";
          out.dataset.done = "true";
        })
        .catch(function (err) {
          box.textContent = err.message; box.hidden = false; status.textContent = ""; out.dataset.done = "error";
        })
        .then(function () { button.disabled = false; });
    });
  }

  function copyButtons() {
    $all("[data-copy]").forEach(function (b) {
      b.addEventListener("click", function () {
        var text = $(b.dataset.copy).textContent;
        if (navigator.clipboard) navigator.clipboard.writeText(text).then(function () { b.textContent = "Copied"; });
      });
    });
  }

  // ---- the image playground: an image dropped on the zone is the file input's ------------------
  function initImageDrop(zone) {
    var input = $("input[type=file]", zone);
    ["dragenter", "dragover"].forEach(function (n) {
      zone.addEventListener(n, function (e) { e.preventDefault(); zone.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (n) {
      zone.addEventListener(n, function () { zone.classList.remove("over"); });
    });
    zone.addEventListener("drop", function (e) {
      e.preventDefault();
      if (e.dataTransfer && e.dataTransfer.files.length) input.files = e.dataTransfer.files;
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    $all("[data-tabs]").forEach(initTabs);
    $all("[data-image-drop]").forEach(initImageDrop);
    $all("form[data-upload]").forEach(initUpload);
    $all("[data-live]").forEach(initLive);
    $all("form[data-chat]").forEach(initChat);
    copyButtons();
    refreshTimes();
    window.setInterval(refreshTimes, 15000);
  });
})();
