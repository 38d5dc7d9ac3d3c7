/* Shared helpers of a seedrl report page (window.seedrl). */
(function () {
  "use strict";
  var palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
  var seedrl = {
    /* the JSON data of section `id` */
    data: function (id) {
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
})();
