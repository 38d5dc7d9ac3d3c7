/* Annotations in the episode browser (seedrl.ann, used by episodes.js). The section's data holds the dataset's
   current annotations, {id: {labels, rating, notes, tags: {step: [tag, ...]}}} (annotations.jsonl beside the
   dataset). The list shows them and filters by label; the detail shows them, and the step table the tags at the
   scrubber's step. A page on disk shows them read-only. A served page (data.live) adds controls: labels
   (add / remove), a rating 1-5, notes, a tag at a step (the scrubber's step for a game episode); each saves one
   record through POST api/annotate?source=i (seedrl.report.html.annotate) and shows the server's error. */
(function () {
  "use strict";
  var S = window.seedrl, el = S.el, A = S.ann = {}, RATINGS = [1, 2, 3, 4, 5];

  function of(b, id) { return b.data.annotations[id] || {labels: [], rating: null, notes: [], tags: {}}; }
  A.of = of;

  function allLabels(b) {
    var seen = {};
    Object.keys(b.data.annotations).forEach(function (id) {
      b.data.annotations[id].labels.forEach(function (l) { seen[l] = true; });
    });
    return Object.keys(seen).sort();
  }

  /* the list's label filter (a select: any label, or one of the labels in use) */
  A.filter = function (b, bar) {
    b.labelSel = el("select", {id: b.sid + "-label"});
    bar.appendChild(el("label", {}, " label "));
    bar.appendChild(b.labelSel);
    b.labelSel.addEventListener("change", function () { b.redraw(); });
    bar.appendChild(document.createTextNode(" "));
    fillFilter(b);
  };

  function fillFilter(b) {
    var keep = b.labelSel.value, labels = allLabels(b);
    if (keep && labels.indexOf(keep) < 0) labels.push(keep);  // a label just removed stays selectable
    b.labelSel.innerHTML = "";
    b.labelSel.appendChild(el("option", {value: ""}, "any"));
    labels.forEach(function (l) { b.labelSel.appendChild(el("option", {value: l}, l)); });
    b.labelSel.value = keep;
  }

  A.matches = function (b, id) {
    var want = b.labelSel ? b.labelSel.value : "";
    return !want || of(b, id).labels.indexOf(want) >= 0;
  };

  /* the list's annotations cell: labels, the rating as stars, counts of notes and tagged steps */
  A.summary = function (b, id) {
    var a = of(b, id), parts = a.labels.slice(), tagged = Object.keys(a.tags).length;
    if (a.rating !== null) parts.push("\u2605" + a.rating);
    if (a.notes.length) parts.push(a.notes.length + (a.notes.length > 1 ? " notes" : " note"));
    if (tagged) parts.push(tagged + (tagged > 1 ? " tagged steps" : " tagged step"));
    return parts.join(" \u00b7 ");
  };

  /* what the list's search box also matches: labels, notes and step tags */
  A.text = function (b, id) {
    var a = of(b, id), tags = [];
    Object.keys(a.tags).forEach(function (k) { tags = tags.concat(a.tags[k]); });
    return a.labels.concat(a.notes, tags).join("\n");
  };

  A.tagsAt = function (b, id, step) { return of(b, id).tags[String(step)] || []; };

  /* new annotations of the whole dataset (a poll's reply): redraw what shows them when they changed */
  A.update = function (b, all) {
    if (JSON.stringify(all) === JSON.stringify(b.data.annotations)) return;
    b.data.annotations = all;
    changed(b);
  };

  function changed(b) {
    fillFilter(b);
    b.redraw();
    if (b.ann) drawState(b);
    if (b.show) b.show(b.step);
  }

  function post(b, id, rec) {
    rec.episode_id = id;
    var who = b.ann.author.value.trim();
    if (who) rec.author = who;
    b.ann.error.textContent = "";
    b.posts++;
    return fetch(b.api("annotate"), {method: "POST", headers: {"Content-Type": "application/json"},
                                     body: JSON.stringify(rec)}).then(function (r) { return r.json(); }).then(function (r) {
      b.posts++;
      if (r.error) { b.ann.error.textContent = r.error; return false; }
      var a = r.annotations;
      if (a.labels.length || a.rating !== null || a.notes.length || Object.keys(a.tags).length) {
        b.data.annotations[id] = a;
      } else {
        delete b.data.annotations[id];
      }
      changed(b);
      return true;
    }).catch(function (err) { b.ann.error.textContent = "not saved: " + err; return false; });
  }

  function removeButton(b, id, rec, what) {
    var x = el("button", {"class": "ann-x", title: "remove " + what, type: "button"}, "\u00d7");
    x.addEventListener("click", function () { rec.op = "remove"; post(b, id, rec); });
    return x;
  }

  /* the parts of the box that show the current annotations (redrawn when they change) */
  function drawState(b) {
    var id = b.ann.id, a = of(b, id), live = b.data.live;
    b.ann.labels.innerHTML = "";
    a.labels.forEach(function (l) {
      var chip = el("span", {"class": "ann-chip", "data-label": l}, l);
      if (live) chip.appendChild(removeButton(b, id, {kind: "label", value: l}, "label " + l));
      b.ann.labels.appendChild(chip);
    });
    if (!a.labels.length && !live) b.ann.labels.textContent = "\u2013";
    if (live) {
      var sel = b.ann.rating, v = a.rating === null ? "" : String(a.rating);
      if (v && !sel.querySelector('option[value="' + v + '"]')) sel.appendChild(el("option", {value: v}, v));
      sel.value = v;
    } else {
      b.ann.rating.textContent = a.rating === null ? "\u2013" : "\u2605" + a.rating;
    }
    b.ann.rating.setAttribute("data-rating", a.rating === null ? "" : a.rating);
    b.ann.notes.innerHTML = "";
    a.notes.forEach(function (n) {
      var li = el("li", {"class": "ann-note"}, n);
      if (live) li.appendChild(removeButton(b, id, {kind: "note", value: n}, "this note"));
      b.ann.notes.appendChild(li);
    });
    b.ann.tags.innerHTML = "";
    Object.keys(a.tags).map(Number).sort(function (x, y) { return x - y; }).forEach(function (step) {
      a.tags[String(step)].forEach(function (tag) {
        var li = el("li", {"class": "ann-tag", "data-step": step, "data-tag": tag});
        var go = el("a", {href: "#", title: "show this step"}, "step " + step);
        go.addEventListener("click", function (ev) { ev.preventDefault(); if (b.show) b.show(step); });
        li.appendChild(go);
        li.appendChild(document.createTextNode(": " + tag));
        if (live) li.appendChild(removeButton(b, id, {kind: "tag", value: tag, step: step}, "this tag"));
        b.ann.tags.appendChild(li);
      });
    });
  }

  function row(box, name) {
    var div = el("div", {"class": "ann-row"});
    div.appendChild(el("span", {"class": "lbl"}, name));
    box.appendChild(div);
    return div;
  }

  /* a text input and a button that POSTs its text (Enter too); the input is cleared when saved */
  function adder(b, div, key, placeholder, button, rec) {
    var input = el(key === "note" ? "textarea" : "input", {id: b.sid + "-ann-" + key, placeholder: placeholder,
                                                          rows: 2, cols: 40});
    var go = el("button", {id: b.sid + "-ann-" + key + "-add", type: "button"}, button);
    function save() {
      post(b, b.ann.id, rec(input.value)).then(function (ok) { if (ok) input.value = ""; });
    }
    go.addEventListener("click", save);
    input.addEventListener("keydown", function (ev) { if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); save(); } });
    div.appendChild(input);
    div.appendChild(go);
    return input;
  }

  /* the detail's annotation box of episode d */
  A.box = function (b, d) {
    var box = el("div", {"class": "ann", id: b.sid + "-ann"}), live = b.data.live, n = d.steps;
    b.ann = {id: d.id};
    var labels = row(box, "labels");
    b.ann.labels = el("span", {"class": "ann-labels"});
    labels.appendChild(b.ann.labels);
    var rating = row(box, "rating");
    if (live) {
      b.ann.rating = el("select", {id: b.sid + "-ann-rating"});
      b.ann.rating.appendChild(el("option", {value: ""}, "none"));
      RATINGS.forEach(function (r) { b.ann.rating.appendChild(el("option", {value: String(r)}, String(r))); });
      b.ann.rating.addEventListener("change", function () {
        var v = b.ann.rating.value;
        post(b, d.id, v ? {kind: "rating", value: +v} : {kind: "rating", op: "remove"});
      });
    } else {
      b.ann.rating = el("span");
    }
    rating.appendChild(b.ann.rating);
    var notes = row(box, "notes");
    b.ann.notes = el("ul", {"class": "ann-notes"});
    notes.appendChild(b.ann.notes);
    var tags = row(box, "step tags");
    b.ann.tags = el("ul", {"class": "ann-tags"});
    tags.appendChild(b.ann.tags);
    if (live) {
      adder(b, labels, "label", "a label, e.g. good", "add label", function (v) { return {kind: "label", value: v}; });
      adder(b, notes, "note", "a note", "add note", function (v) { return {kind: "note", value: v}; });
      var at = el("input", {type: "number", min: 0, max: Math.max(0, n - 1), step: 1, value: 0, "class": "num",
                            id: b.sid + "-ann-step", title: "the step to tag (a game episode: the scrubber's)"});
      at.addEventListener("input", function () {  // a step in range moves the scrubber; others go to the server as typed
        var t = +at.value;
        if (b.show && at.value !== "" && t === Math.floor(t) && t >= 0 && t < n) b.show(t);
      });
      var tagRow = el("div", {"class": "ann-row"});
      tagRow.appendChild(el("span", {"class": "lbl"}, "tag step"));
      tagRow.appendChild(at);
      adder(b, tagRow, "tag", "e.g. mistake here", "tag this step", function (v) {
        return {kind: "tag", value: v, step: at.value === "" ? null : +at.value};
      });
      box.appendChild(tagRow);
      b.onStep = function (t) { at.value = t; };
      var by = row(box, "by");
      b.ann.author = el("input", {id: b.sid + "-ann-author", placeholder: "your name (optional)", size: 16});
      try { b.ann.author.value = localStorage.getItem("seedrl.annotator") || ""; } catch (e) { /* no storage */ }
      b.ann.author.addEventListener("change", function () {
        try { localStorage.setItem("seedrl.annotator", b.ann.author.value.trim()); } catch (e) { /* no storage */ }
      });
      by.appendChild(b.ann.author);
      b.ann.error = el("div", {"class": "ann-error", id: b.sid + "-ann-error", role: "alert"});
      box.appendChild(b.ann.error);
    } else {
      box.appendChild(el("p", {"class": "note"}, "read-only in a page on disk; `seedrl report --data PATH --serve` " +
        "(or `seedrl data annotate`) adds annotations"));
    }
    b.detail.appendChild(box);
    drawState(b);
  };
})();
