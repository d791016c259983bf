// The admin's metrics page: draws the numbers the server put in #metrics-data with the
// vendored Chart.js (static/vendor/chart.umd.min.js, loaded before this module).
const data = JSON.parse(document.getElementById("metrics-data").textContent);
const t = JSON.parse(document.getElementById("metrics-i18n").textContent);
const Chart = window.Chart;

const PALETTE = ["#417690", "#ba2121", "#e0a800", "#5b8c5a", "#8e5ea2", "#3cba9f", "#c45850"];

function chart(id, config) {
  const canvas = document.getElementById(id);
  if (!canvas || !Chart) return;
  config.options = {
    animation: false,
    responsive: true,
    maintainAspectRatio: false, // the figure's height rules
    plugins: { title: { display: true, text: config.title }, legend: { position: "bottom" } },
    ...config.options,
  };
  new Chart(canvas, config);
}

function noData(id) {
  const canvas = document.getElementById(id);
  if (!canvas) return;
  const note = document.createElement("p");
  note.textContent = t.noData;
  canvas.replaceWith(note);
}

const limiter = data.limiter;
if (limiter) {
  chart("chart-requests", {
    type: "line",
    title: t.requests,
    data: {
      labels: limiter.minutes,
      datasets: [
        { label: t.allowed, data: limiter.allowed, borderColor: PALETTE[0], tension: 0.2 },
        { label: t.refused, data: limiter.denied, borderColor: PALETTE[1], tension: 0.2 },
      ],
    },
    options: { scales: { y: { beginAtZero: true } } },
  });
  const layers = Object.keys(limiter.denied_by_layer);
  chart("chart-refused", {
    type: "bar",
    title: t.refusedByLayer,
    data: {
      labels: limiter.minutes,
      datasets: layers.map((layer, i) => ({
        label: layer,
        data: limiter.denied_by_layer[layer],
        backgroundColor: PALETTE[(i + 1) % PALETTE.length],
      })),
    },
    options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } },
  });
  if (limiter.top_users.length) {
    chart("chart-top-users", {
      type: "bar",
      title: t.topUsers,
      data: {
        labels: limiter.top_users.map((u) => u.label),
        datasets: [{ label: t.refusals, data: limiter.top_users.map((u) => u.denied),
                     backgroundColor: PALETTE[1] }],
      },
      options: { indexAxis: "y", scales: { x: { beginAtZero: true } } },
    });
  } else {
    noData("chart-top-users");
  }
} else {
  ["chart-requests", "chart-refused", "chart-top-users"].forEach(noData);
}

chart("chart-cache", {
  type: "bar",
  title: t.cacheHitRate,
  data: {
    labels: data.cache.map((ns) => ns.namespace),
    datasets: [{
      label: t.hitRate,
      data: data.cache.map((ns) => (ns.hit_ratio === null ? null : Math.round(ns.hit_ratio * 1000) / 10)),
      backgroundColor: PALETTE[3],
    }],
  },
  options: { scales: { y: { beginAtZero: true, max: 100 } } },
});

if (data.queues) {
  const names = Object.keys(data.queues);
  chart("chart-queues", {
    type: "bar",
    title: t.queues,
    data: {
      labels: names,
      datasets: [{ label: t.waiting, data: names.map((n) => data.queues[n]), backgroundColor: PALETTE[2] }],
    },
    options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
  });
} else {
  noData("chart-queues");
}
