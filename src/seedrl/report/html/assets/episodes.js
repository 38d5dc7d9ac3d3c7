/* The episode browser of a seedrl report page: seedrl.episodes(sectionId) (data: seedrl.report.html.episodes).
   A list of episode summaries (sort, return range filter, text search; at most MAX_ROWS rows drawn) and the
   detail of the selected episode: game frames with a step scrubber, action / reward / observation per step,
   or a language episode's prompt, completion, reward and per-token log-probs as a heat map. Annotations (labels,
   rating, notes, step tags) are shown and, on a served page, edited by annotate.js (seedrl.ann). */
(function () {
  "use strict";
  var S = window.seedrl, el = S.el, MAX_ROWS = 500;
  S.browsers = {};

  function fmt(v) {
    if (v === null || v === undefined) return "\u2013";
    if (typeof v !== "number") return Array.isArray(v) ? "[" + v.map(fmt).join(", ") + "]" : String(v);
    if (v !== 0 && (Math.abs(v) >= 1e5 || Math.abs(v) < 1e-3)) return v.toExponential(3);
    return String(+v.toFixed(4));
  }

  function api(b, what) {
    return "api/" + what + (what.indexOf("?") >= 0 ? "&" : "?") + "source=" + b.data.source;
  }

  function matches(b, e) {
    var q = b.search.value.trim().toLowerCase(), lo = parseFloat(b.lo.value), hi = parseFloat(b.hi.value);
    var r = e["return"];
    if (!isNaN(lo) && !(r !== null && r >= lo)) return false;
    if (!isNaN(hi) && !(r !== null && r <= hi)) return false;
    if (q && (e.id + "\n" + e.text + "\n" + JSON.stringify(e.meta) + "\n" + S.ann.text(b, e.id)).toLowerCase()
        .indexOf(q) < 0) return false;
    return S.ann.matches(b, e.id);
  }

  function sorted(b, rows) {
    var parts = b.sort.value.split(":"), key = parts[0], sign = parts[1] === "desc" ? -1 : 1;
    return rows.slice().sort(function (x, y) {
      var a = x[key], c = y[key];
      if (a === null && c === null) return x.index - y.index;
      if (a === null) return 1;  // episodes without a value go last either way
      if (c === null) return -1;
      return sign * (a - c) || x.index - y.index;
    });
  }

  function drawList(b) {
    var rows = sorted(b, b.data.episodes.filter(function (e) { return matches(b, e); }));
    b.shown = rows.map(function (e) { return e.id; });
    var lang = b.data.kinds.indexOf("language") >= 0;
    var t = el("table", {"class": "cfg ep-list", id: b.sid + "-list"});
    var head = el("tr");
    ["#", "id", "steps", "return", "annotations", lang ? "prompt / completion" : "metadata"].forEach(function (h) {
      head.appendChild(el("th", {}, h));
    });
    t.appendChild(head);
    rows.slice(0, MAX_ROWS).forEach(function (e) {
      var tr = el("tr", {"data-id": e.id, "class": e.id === b.selected ? "sel" : ""});
      [e.index, e.id, e.steps, fmt(e["return"]), S.ann.summary(b, e.id),
       lang ? e.text.replace(/\s+/g, " ").slice(0, 90) : Object.keys(e.meta).map(function (k) {
         return k + "=" + e.meta[k]; }).join(" ")].forEach(function (v) { tr.appendChild(el("td", {}, String(v))); });
      tr.addEventListener("click", function () { select(b, e.id); });
      t.appendChild(tr);
    });
    b.count.textContent = rows.length + " of " + b.data.episodes.length + " episodes match" +
      (rows.length > MAX_ROWS ? " (the first " + MAX_ROWS + " listed)" : "") +
      (b.data.total > b.data.episodes.length ? "; the dataset holds " + b.data.total : "");
    b.listBox.innerHTML = "";
    b.listBox.appendChild(t);
  }

  function select(b, id) {
    b.selected = id;
    b.listBox.querySelectorAll("tr[data-id]").forEach(function (tr) {
      tr.className = tr.getAttribute("data-id") === id ? "sel" : "";
    });
    var d = b.data.details[id];
    if (d) return drawDetail(b, d);
    if (!b.data.live) {
      b.detail.innerHTML = "";
      b.detail.appendChild(el("p", {"class": "note"}, "Episode " + id + ": only the first episodes' details are " +
        "inline in a page written to disk; `seedrl report --serve` loads any episode."));
      return;
    }
    b.detail.textContent = "loading episode " + id + " ...";
    fetch(api(b, "episode/" + encodeURIComponent(id))).then(function (r) { return r.json(); }).then(function (d) {
      if (d.error) { b.detail.textContent = d.error; return; }
      b.data.details[id] = d;
      if (b.selected === id) drawDetail(b, d);
    });
  }

  function kv(table, name, key) {
    var tr = el("tr");
    tr.appendChild(el("th", {}, name));
    var td = el("td", {"data-f": key});
    tr.appendChild(td);
    table.appendChild(tr);
    return td;
  }

  function drawGame(b, d) {
    var box = b.detail, n = d.steps;
    var frames = Object.keys(d.frames), frameBox = el("div", {"class": "ep-frames"}), imgs = {};
    frames.forEach(function (path) {
      var fig = el("figure");
      imgs[path] = el("img", {"class": "ep-frame", "data-path": path, alt: path});
      fig.appendChild(imgs[path]);
      fig.appendChild(el("figcaption", {}, path));
      frameBox.appendChild(fig);
    });
    var scrub = el("div", {"class": "controls ep-scrub"});
    var slider = el("input", {type: "range", min: 0, max: Math.max(0, n - 1), value: 0, step: 1, id: b.sid + "-scrub"});
    scrub.appendChild(el("label", {}, "step "));
    scrub.appendChild(slider);
    var table = el("table", {"class": "cfg ep-step"}), cells = {step: kv(table, "step", "step")};
    Object.keys(d.action).forEach(function (p) { cells["a:" + p] = kv(table, p, p === "action" ? "action" : p); });
    cells.reward = kv(table, "reward", "reward");
    cells.ret = kv(table, "return so far", "return");
    cells.tags = kv(table, "step tags", "tags");
    Object.keys(d.vectors).forEach(function (p) { cells["v:" + p] = kv(table, p, p); });
    var cum = [], s = 0;
    d.reward.forEach(function (r) { s += r || 0; cum.push(s); });
    function show(t) {
      t = Math.max(0, Math.min(n - 1, t | 0));
      cells.step.textContent = t + " / " + (n - 1);
      Object.keys(d.action).forEach(function (p) { cells["a:" + p].textContent = fmt(d.action[p][t]); });
      cells.reward.textContent = fmt(d.reward[t]);
      cells.ret.textContent = fmt(cum[t]);
      cells.tags.textContent = S.ann.tagsAt(b, d.id, t).join(", ");
      Object.keys(d.vectors).forEach(function (p) { cells["v:" + p].textContent = fmt(d.vectors[p][t]); });
      var k = 0;  // the frame of the last kept step <= t
      while (k + 1 < d.frame_steps.length && d.frame_steps[k + 1] <= t) k++;
      frames.forEach(function (p) { imgs[p].src = d.frames[p][k]; imgs[p].setAttribute("data-step", d.frame_steps[k]); });
      slider.value = t;
      b.step = t;
      if (b.onStep) b.onStep(t);
    }
    slider.addEventListener("input", function () { show(+slider.value); });
    b.show = show;
    box.appendChild(frameBox);
    box.appendChild(scrub);
    box.appendChild(table);
    if (n > 1) drawStepChart(b, d);
    show(0);
  }

  function drawStepChart(b, d) {
    var xs = d.reward.map(function (_, i) { return i; }), data = [xs, d.reward], series = [{label: "step"},
      {label: "reward", stroke: S.color(0), width: 1.5}];
    Object.keys(d.vectors).forEach(function (p) {
      var rows = d.vectors[p];
      var dims = Array.isArray(rows[0]) ? Math.min(rows[0].length, 8) : 1;
      for (var j = 0; j < dims; j++) {
        data.push(rows.map(function (r) { return Array.isArray(r) ? r[j] : r; }));
        series.push({label: p + (Array.isArray(rows[0]) ? "[" + j + "]" : ""), stroke: S.color(series.length - 1), width: 1});
      }
    });
    var holder = el("div", {"class": "chart"});
    b.detail.appendChild(holder);
    S.chart(b.sid, {width: 620, height: 200, scales: {x: {time: false}}, series: series, axes: [{label: "step"}, {}]},
            data, holder);
  }

  /* log p -> background colour: p = exp(log p) from red (p = 0) to green (p = 1) */
  function heat(lp) { return "hsl(" + Math.round(120 * Math.exp(Math.min(0, lp))) + ",75%,78%)"; }

  function drawLanguage(b, d) {
    d.turns.forEach(function (turn, i) {
      var div = el("div", {"class": "ep-turn", "data-turn": i});
      div.appendChild(el("div", {"class": "lbl"}, "prompt" + (d.turns.length > 1 ? " (turn " + (i + 1) + ")" : "")));
      div.appendChild(el("pre", {"class": "ep-prompt"}, turn.prompt));
      var lbl = el("div", {"class": "lbl"}, "completion, reward ");
      lbl.appendChild(el("b", {"class": "ep-reward"}, fmt(turn.reward)));
      div.appendChild(lbl);
      div.appendChild(el("pre", {"class": "ep-completion"}, turn.completion));
      div.appendChild(el("div", {"class": "lbl"}, turn.logprobs ? "per-token log-probs (" + d.logprob_field +
        "): red p \u2192 0, green p \u2192 1; hover for the value" : "no per-token log-probs recorded"));
      var hm = el("div", {"class": "ep-heat"});
      turn.labels.forEach(function (label, j) {
        var lp = turn.logprobs ? turn.logprobs[j] : null;
        var span = el("span", {"class": "tok", "data-token": turn.tokens[j],
          title: "token " + turn.tokens[j] + (lp === null || lp === undefined ? "" : ": log p = " + fmt(lp))}, label);
        if (lp !== null && lp !== undefined) { span.setAttribute("data-lp", lp); span.style.background = heat(lp); }
        hm.appendChild(span);
      });
      div.appendChild(hm);
      b.detail.appendChild(div);
    });
  }

  function drawDetail(b, d) {
    (S.charts[b.sid] || []).forEach(function (u) { u.destroy(); });
    S.charts[b.sid] = [];
    b.detail.innerHTML = "";
    b.detail.setAttribute("data-id", d.id);
    b.show = b.onStep = null;
    b.step = 0;
    b.detail.appendChild(el("h3", {}, "episode " + d.id + " \u00b7 " + d.steps + " steps \u00b7 return " +
      fmt(d["return"])));
    S.ann.box(b, d);
    if (d.kind === "language") drawLanguage(b, d); else drawGame(b, d);
  }

  function poll(b) {
    var posts = b.posts;  // a reply older than a save of this page does not undo it on the page
    fetch(api(b, "episodes?since=" + b.data.episodes.length)).then(function (r) { return r.json(); }).then(function (r) {
      b.data.total = r.total;
      if (r.annotations && posts === b.posts) S.ann.update(b, r.annotations);
      if (!r.episodes.length) return;
      b.data.episodes = b.data.episodes.concat(r.episodes).slice(0, b.data.limit);
      r.kinds.forEach(function (k) { if (b.data.kinds.indexOf(k) < 0) b.data.kinds.push(k); });
      drawList(b);
      if (b.selected === null && b.shown.length) select(b, b.shown[0]);
    }).catch(function () {});
  }

  S.episodes = function (sid) {
    var data = S.data(sid), root = document.getElementById(sid + "-browser");
    var b = {sid: sid, data: data, selected: null, shown: [], step: 0, posts: 0};
    b.api = function (what) { return api(b, what); };
    b.redraw = function () { drawList(b); };
    var bar = el("div", {"class": "controls"});
    b.search = el("input", {type: "search", placeholder: "search id, prompt, completion, metadata, notes",
                            id: sid + "-search", size: 34});
    b.lo = el("input", {type: "number", step: "any", placeholder: "min", id: sid + "-min", "class": "num"});
    b.hi = el("input", {type: "number", step: "any", placeholder: "max", id: sid + "-max", "class": "num"});
    b.sort = el("select", {id: sid + "-sort"});
    [["index:asc", "recorded order"], ["return:desc", "return, highest first"], ["return:asc", "return, lowest first"],
     ["steps:desc", "longest first"], ["steps:asc", "shortest first"]].forEach(function (o) {
      b.sort.appendChild(el("option", {value: o[0]}, o[1]));
    });
    bar.appendChild(b.search);
    bar.appendChild(el("label", {}, " return from "));
    bar.appendChild(b.lo);
    bar.appendChild(el("label", {}, " to "));
    bar.appendChild(b.hi);
    bar.appendChild(el("label", {}, " sort "));
    bar.appendChild(b.sort);
    S.ann.filter(b, bar);
    b.count = el("span", {"class": "note", id: sid + "-count"});
    bar.appendChild(b.count);
    var split = el("div", {"class": "ep-split"});
    b.listBox = el("div", {"class": "ep-listbox"});
    b.detail = el("div", {"class": "ep-detail", id: sid + "-detail"});
    split.appendChild(b.listBox);
    split.appendChild(b.detail);
    root.appendChild(bar);
    root.appendChild(split);
    [b.search, b.lo, b.hi].forEach(function (i) { i.addEventListener("input", function () { drawList(b); }); });
    b.sort.addEventListener("change", function () { drawList(b); });
    S.browsers[sid] = b;
    drawList(b);
    if (b.shown.length) select(b, b.shown[0]);
    if (data.live) b.timer = setInterval(function () { poll(b); }, 2000);
  };
})();
