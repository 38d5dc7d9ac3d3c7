/* Shared helpers of a seedrl report page (window.seedrl). */
(function () {
  "use strict";
  var overrides = {};  // section data replaced by a served page's refreshes (seedrl.update)
  var palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
  var seedrl = {
    /* the JSON data of section `id` */
    data: function (id) {
      if (id in overrides) return overrides[id];
      var el = document.getElementById("data-" + id);
      return el ? JSON.parse(el.textContent) : null;
    },
    color: function (i) { return palette[i % palette.length]; },
    /* all uPlot charts made through seedrl.chart, by section id */
    charts: {},
    chart: function (sectionId, opts, data, target) {
      var u = new uPlot(opts, data, target);
      (seedrl.charts[sectionId] = seedrl.charts[sectionId] || []).push(u);
      return u;
    },
    el: function (tag, attrs, text) {
      var e = document.createElement(tag);
      for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
      if (text !== undefined) e.textContent = text;
      return e;
    }
  };
  window.seedrl = seedrl;

  /* Curves of a section (data: {axes, labels, charts: [{key, series}]}, see seedrl.report.html.runs):
     one uPlot chart per key, series of several runs joined on their x values, seed groups as a mean
     line with a min/max band. seedrl.setXAxis(axis) redraws every curves section on that x-axis. */
  var curveSections = [];
  seedrl.xaxis = null;

  function seriesOn(s, axis) {
    if (s.agg) return s.agg[axis] || null;
    if (!s.x[axis]) return null;
    return {x: s.x[axis], y: s.y};
  }

  function sortedTable(p) {
    var order = p.x.map(function (_, i) { return i; }).filter(function (i) { return p.x[i] !== null; });
    order.sort(function (a, b) { return p.x[a] - p.x[b]; });
    var t = [order.map(function (i) { return p.x[i]; }), order.map(function (i) { return p.y[i]; })];
    if (p.lo) { t.push(order.map(function (i) { return p.lo[i]; })); t.push(order.map(function (i) { return p.hi[i]; })); }
    return t;
  }

  function drawChart(sid, chart, axis, holder, label) {
    var tables = [], uSeries = [{label: label}], bands = [], col = 1;
    chart.series.forEach(function (s) {
      var p = seriesOn(s, axis);
      if (!p) return;
      var t = sortedTable(p), c = seedrl.color(s.color);
      tables.push(t);
      uSeries.push({label: s.label, stroke: c, width: 1.5, spanGaps: true});
      if (p.lo) {
        uSeries.push({label: s.label + " min", stroke: c, width: 0.5, dash: [3, 3], spanGaps: true});
        uSeries.push({label: s.label + " max", stroke: c, width: 0.5, dash: [3, 3], spanGaps: true});
        bands.push({series: [col + 2, col + 1], fill: c + "33"});
        col += 3;
      } else {
        col += 1;
      }
    });
    if (!tables.length) return null;
    var data = tables.length === 1 ? tables[0] : uPlot.join(tables);
    var box = seedrl.el("div", {"class": "chart", "data-key": chart.key});
    box.appendChild(seedrl.el("h3", {}, chart.key));
    holder.appendChild(box);
    var opts = {width: 460, height: 260, scales: {x: {time: false}}, series: uSeries, bands: bands,
                axes: [{label: label}, {}], legend: {live: true}};
    var u = seedrl.chart(sid, opts, data, box);
    u.seedrlKey = chart.key;
    // the band's min and max series stay out of the legend (the band shows them)
    var rows = u.root.querySelectorAll(".u-legend .u-series");
    uSeries.forEach(function (s, i) { if (s.dash && rows[i]) rows[i].style.display = "none"; });
    return u;
  }

  function drawSection(sid) {
    var d = seedrl.data(sid), holder = document.getElementById("charts-" + sid);
    (seedrl.charts[sid] || []).forEach(function (u) { u.destroy(); });
    seedrl.charts[sid] = [];
    holder.innerHTML = "";
    var axis = d.axes.indexOf(seedrl.xaxis) >= 0 ? seedrl.xaxis : d.axes[0];
    d.charts.forEach(function (chart) { drawChart(sid, chart, axis, holder, d.labels[axis]); });
    holder.setAttribute("data-xaxis", axis);
  }

  seedrl.curves = function (sid) {
    var d = seedrl.data(sid);
    if (seedrl.xaxis === null) seedrl.xaxis = d.axes[0];
    curveSections.push(sid);
    drawSection(sid);
  };

  seedrl.setXAxis = function (axis) {
    seedrl.xaxis = axis;
    curveSections.forEach(drawSection);
    document.querySelectorAll('input[name="xaxis"]').forEach(function (r) { r.checked = r.value === axis; });
  };

  /* a served page (seedrl report --serve): replace a curves section's data and redraw it */
  seedrl.update = function (sid, d) {
    overrides[sid] = d;
    if (curveSections.indexOf(sid) >= 0) drawSection(sid);
  };

  /* poll api/metrics?since=ROWS every `ms`: new rows -> the curves are redrawn from the reply's downsampled
     section data; a section the page lacks (a run's first metrics, its first recorded episodes) -> reload */
  seedrl.live = function (rows, ms) {
    var status = document.getElementById("live-status"), busy = false;
    function tick() {
      if (busy) return;
      busy = true;
      fetch("api/metrics?since=" + rows).then(function (r) { return r.json(); }).then(function (reply) {
        busy = false;
        if (reply.section_ids && reply.section_ids.some(function (id) { return !document.getElementById(id); })) {
          location.reload();
          return;
        }
        if (reply.sections) {
          for (var sid in reply.sections) seedrl.update(sid, reply.sections[sid]);
        }
        rows = reply.rows;
        status.setAttribute("data-rows", rows);
        status.textContent = rows + " metric rows, checked " + new Date().toLocaleTimeString();
      }).catch(function () { busy = false; status.textContent = "server unreachable (stopped?)"; });
    }
    seedrl.liveTimer = setInterval(tick, ms);
  };

  document.addEventListener("change", function (ev) {
    if (ev.target && ev.target.name === "xaxis") seedrl.setXAxis(ev.target.value);
  });
})();
