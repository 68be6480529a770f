/* Draws every chart of a dashboard page: <div data-chart="ID"> + {{ spec|json_script:"ID" }}.
   Plotly comes from the plotly wheel (static investml/vendor/plotly.min.js), never a CDN. */
(function () {
  "use strict";
  var config = {
    displaylogo: false,
    displayModeBar: false,
    responsive: true,
  };

  function draw() {
    var nodes = document.querySelectorAll("[data-chart]");
    if (!nodes.length) return;
    if (typeof window.Plotly === "undefined") {
      nodes.forEach(function (node) {
        node.innerHTML = '<div class="empty"><strong>Charts unavailable</strong>plotly.min.js was not served ' +
          "(enable monitoring.staticfinders.PackageAssetsFinder and run collectstatic).</div>";
      });
      return;
    }
    nodes.forEach(function (node) {
      var source = document.getElementById(node.getAttribute("data-chart"));
      if (!source) return;
      var spec = JSON.parse(source.textContent);
      window.Plotly.newPlot(node, spec.data, spec.layout, config).then(function () {
        node.setAttribute("data-drawn", "1");
      });
    });
  }

  function confirmations() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
      });
    });
  }

  function autoSubmitFilters() {
    document.querySelectorAll("form.filters select").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    draw();
    confirmations();
    autoSubmitFilters();
  });
})();
