// The admin's evaluation page: a confirmation before a set is deleted, and the history of a question set's runs (MRR and recall@5 per
// mode, with each run's chunk settings and model in its label), drawn with the vendored
// Chart.js (static/vendor/chart.umd.min.js, loaded before this module) from the data the
// server put in #evaluation-history.
import { pageData } from "./page-data.js";

const runs = pageData("evaluation-history", []);
const t = pageData("evaluation-i18n");
const canvas = document.getElementById("evaluation-chart");
const Chart = window.Chart;

const COLOURS = { hybrid: "#417690", vector: "#5b8c5a", keyword: "#ba2121" };

function label(run) {
  const chunks = t.chunk.replace("%(size)s", run.chunk_size).replace("%(overlap)s", run.chunk_overlap);
  return [`#${run.id} ${run.created_at.slice(0, 16).replace("T", " ")}`, chunks, run.embedding_model];
}

if (canvas && !runs.length) {
  const note = document.createElement("p");
  note.textContent = t.noData;
  canvas.replaceWith(note);
} else if (canvas && Chart) {
  const datasets = [];
  for (const mode of ["hybrid", "vector", "keyword"]) {
    datasets.push({
      label: `${t[mode]} · ${t.mrr}`,
      data: runs.map((run) => run.metrics[mode]?.mrr ?? null),
      borderColor: COLOURS[mode],
      backgroundColor: COLOURS[mode],
      tension: 0.2,
    });
    datasets.push({
      label: `${t[mode]} · ${t.recall5}`,
      data: runs.map((run) => run.metrics[mode]?.recall_at_5 ?? null),
      borderColor: COLOURS[mode],
      backgroundColor: COLOURS[mode],
      borderDash: [6, 4],
      tension: 0.2,
    });
  }
  new Chart(canvas, {
    type: "line",
    data: { labels: runs.map(label), datasets },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      scales: { y: { min: 0, max: 1 } },
      plugins: { title: { display: true, text: t.title }, legend: { position: "bottom" } },
    },
  });
}

for (const button of document.querySelectorAll("button[data-confirm]")) {
  button.addEventListener("click", (event) => {
    if (!window.confirm(button.dataset.confirm)) event.preventDefault();
  });
}
