// hookrunner console: live refresh of the deliveries list and live run output.
// Plain JavaScript, no build step; everything the pages need works without it too.
"use strict";

const TERMINAL = new Set(["succeeded", "failed", "timed_out", "canceled", "skipped"]);
const STATUS_CLASSES = {
  queued: "st-queued", running: "st-running", succeeded: "st-ok", failed: "st-bad",
  timed_out: "st-bad", canceled: "st-warn", skipped: "st-muted",
};
const RUN_POLL_MS = 1000;

// The path prefix the server was given (--path-prefix), which starts every URL it serves.
const ROOT = document.body.dataset.root || "";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function fmtTime(ts) {
  if (ts === null || ts === undefined) return "—";
  return new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19);
}

function fmtSeconds(s) {
  if (s === null || s === undefined) return "—";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

// A session that ended mid-page: a fetch (it does not ask for HTML) is answered 401, or sent
// to the login page; reloading the page (a browser's request) shows the login form.
function checkSession(resp) {
  if (resp.status === 401 || (resp.redirected && new URL(resp.url).pathname === `${ROOT}/login`)) {
    window.location.reload();
    throw new Error("session ended");
  }
  return resp;
}

// ---- deliveries list -------------------------------------------------------------------

function liveDeliveries() {
  const table = document.getElementById("deliveries");
  const body = document.getElementById("delivery-rows");
  const toggle = document.getElementById("live");
  const status = document.getElementById("live-status");
  if (!table || !body || !toggle) return;
  const url = table.dataset.rowsUrl;
  const every = parseInt(table.dataset.pollMs, 10) || 2000;
  let last = null;
  async function tick() {
    if (toggle.checked && !document.hidden) {
      try {
        const resp = checkSession(await fetch(url, { credentials: "same-origin" }));
        if (resp.ok) {
          const html = await resp.text();
          if (html !== last) {
            mergeRows(body, html);
            last = html;
          }
          status.textContent = `updated ${new Date().toLocaleTimeString()}`;
        } else {
          status.textContent = `refresh failed: HTTP ${resp.status}`;
        }
      } catch (err) {
        status.textContent = "refresh failed: server unreachable";
      }
    }
    setTimeout(tick, every);
  }
  setTimeout(tick, every);
}

// The refreshed rows (server-rendered and escaped, like the page itself) merged into the
// table: a row that did not change is left as it is (the keyboard focus on one of its links
// stays), and rows added above the reader do not move what the reader looks at.
function mergeRows(body, html) {
  const fresh = document.createElement("tbody");
  fresh.innerHTML = html;
  const old = new Map([...body.children].filter((tr) => tr.dataset.id).map((tr) => [tr.dataset.id, tr]));
  const anchor = [...body.children].find((tr) => tr.getBoundingClientRect().bottom > 0);
  const anchorTop = anchor ? anchor.getBoundingClientRect().top : 0;
  const rows = [...fresh.children].map((tr) => {
    const kept = tr.dataset.id && old.get(tr.dataset.id);
    return kept && kept.outerHTML === tr.outerHTML ? kept : tr;
  });
  const keep = new Set(rows);
  for (const tr of [...body.children]) if (!keep.has(tr)) tr.remove();
  rows.forEach((tr, i) => {
    if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] || null);
  });
  if (anchor && anchor.isConnected && window.scrollY > 0) {
    window.scrollBy(0, anchor.getBoundingClientRect().top - anchorTop);
  }
}

// ---- run detail ------------------------------------------------------------------------

async function getRun(id) {
  try {
    const resp = checkSession(await fetch(`${ROOT}/api/runs/${encodeURIComponent(id)}`, { credentials: "same-origin" }));
    return resp.ok ? await resp.json() : null;
  } catch (err) {
    return null;
  }
}

// A value as the server's pages write it (present.shown): control characters as their
// pictures, bidirectional controls as their code point (`evil<U+202E>txt.exe`, not a name
// reordered to read `evilexe.txt`). Everything the script writes from the API goes through it.
function shown(text) {
  return (text ?? "").toString().replace(CONTROLS,
    (c) => String.fromCharCode(c === "\x7f" ? 0x2421 : 0x2400 + c.charCodeAt(0)))
    .replace(BIDI, (c) => `<U+${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0")}>`);
}

function setText(id, text) {
  const el = document.getElementById(id);
  if (el) el.textContent = shown(text);
}

function showRun(run) {
  const badge = document.getElementById("run-status");
  badge.textContent = run.status;
  badge.className = `badge big ${STATUS_CLASSES[run.status] || "st-muted"}`;
  badge.dataset.status = run.status;
  setText("run-attempt", String(run.attempt));
  setText("run-exit", run.exit_code === null ? "—" : String(run.exit_code));
  setText("run-reason", run.reason || "—");
  setText("run-started", fmtTime(run.started_at));
  setText("run-finished", fmtTime(run.finished_at));
  setText("run-node", run.node || "—");
  const waiting = document.getElementById("run-waiting");
  const waitingLabel = document.getElementById("run-waiting-label");
  if (waiting && waitingLabel) {
    waiting.hidden = waitingLabel.hidden = run.status !== "queued";
    waiting.textContent = run.status === "queued" ? shown(waitingText(run.waiting)) : "";
  }
  const end = run.finished_at ?? (TERMINAL.has(run.status) ? null : Date.now() / 1000);
  // An ended run took what its last attempt took (as the page says when it is made).
  const last = Array.isArray(run.attempts) && run.attempts.length ? run.attempts[run.attempts.length - 1] : null;
  if (TERMINAL.has(run.status) && last && last.finished_at) {
    setText("run-duration", fmtSeconds(Math.max(0, last.finished_at - last.started_at)));
  } else {
    setText("run-duration", run.started_at && end ? fmtSeconds(Math.max(0, end - run.started_at)) : "—");
  }
  if (Array.isArray(run.attempts)) showAttempts(run.id, run.attempts);
  showUnrecorded(run.unrecorded);
  if (TERMINAL.has(run.status)) {
    const form = document.getElementById("cancel-form");
    if (form) form.remove();
  }
}

// An attempt that ended while the store refused to record it (the API's `unrecorded`):
// shown until the result is written, then gone.
function showUnrecorded(ended) {
  const label = document.getElementById("run-unrecorded-label");
  const text = document.getElementById("run-unrecorded");
  if (!label || !text) return;
  label.hidden = text.hidden = !ended;
  text.textContent = ended ? `${ended.status}, exit ${ended.exit_code ?? "—"}, at ${fmtTime(ended.finished_at)} UTC: ` +
    "not recorded yet, the store refuses writes (it is written once it takes them)" : "";
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = shown(text);
  if (cls) td.className = cls;
  return td;
}

function badge(status) {
  const span = document.createElement("span");
  span.className = `badge ${STATUS_CLASSES[status] || "st-muted"}`;
  span.textContent = status;
  return span;
}

function showAttempts(runId, attempts) {
  const body = document.querySelector("#attempts tbody");
  if (!body || attempts.length === 0) return;
  body.replaceChildren(...attempts.map((a) => {
    const tr = document.createElement("tr");
    const st = document.createElement("td");
    st.appendChild(badge(a.status));
    const log = document.createElement("td");
    const link = document.createElement("a");
    link.href = `${ROOT}/runs/${encodeURIComponent(runId)}?attempt=${a.attempt}`;
    link.textContent = "output";
    log.appendChild(link);
    tr.append(cell(String(a.attempt)), cell(a.node, "mono"), st,
      cell(a.exit_code === null ? "—" : String(a.exit_code), "mono"),
      cell(fmtTime(a.started_at), "nowrap"), cell(fmtTime(a.finished_at), "nowrap"), cell(a.reason || ""),
      log);
    return tr;
  }));
}

// Run output as the page shows it (present.visible_log on the server): terminal escapes
// dropped, other control characters (tab, newline, CR aside) shown as control pictures.
const ESCAPES = /\x1b\[[0-?]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)/g;
const CONTROLS = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/g;
// The start of an escape sequence at the very end of a chunk (its rest is in the next one).
const PARTIAL_ESCAPE = /\x1b(?:\[[0-?]*[ -\/]*|\][^\x07\x1b]*)?$/;
// Bidirectional controls reorder what follows them (`evil\u202etxt.exe` reads `evilexe.txt`):
// written out as their code point, as the server's pages do (present.shown).
const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
function visibleLog(text) {
  return shown(text.replace(ESCAPES, ""));
}

// A log the server did not send (a 503 while it sends 64 logs already): not the whole log.
class LogRefused extends Error {
  constructor(message, seconds) {
    super(message);
    this.seconds = seconds;
  }
}

async function refusal(resp) {
  let why = `HTTP ${resp.status}`;
  try {
    const doc = await resp.json();
    if (doc && typeof doc.error === "string") why = doc.error;
  } catch (err) {
    // not JSON (a proxy's page): its status says it
  }
  const after = parseInt(resp.headers.get("Retry-After"), 10);
  return new LogRefused(why, after > 0 ? Math.min(after, 60) : 5);
}

// Stream one attempt's log into <pre> (the server sends it chunked while the run runs); true if any text came.
async function streamLog(id, attempt, pre, state) {
  const resp = checkSession(await fetch(
    `${ROOT}/api/runs/${encodeURIComponent(id)}/log?attempt=${attempt}`, { credentials: "same-origin" }));
  if (!resp.ok) throw await refusal(resp);
  if (!resp.body) return false;
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let first = true;
  let got = false;
  let held = "";  // an escape sequence cut by the chunk's end: shown once whole
  for (;;) {
    const { done, value } = await reader.read();
    let text = held + (done ? decoder.decode() : decoder.decode(value, { stream: true }));
    held = "";
    const cut = done ? -1 : text.search(PARTIAL_ESCAPE);
    if (cut >= 0 && text.length - cut < 256) {  // a stray ESC never holds back much
      held = text.slice(cut);
      text = text.slice(0, cut);
    }
    if (first && (text || done)) {
      pre.textContent = "";  // replace what an earlier read showed, without a blank flash
      first = false;
    }
    if (text) {
      got = true;
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.appendChild(document.createTextNode(visibleLog(text)));
      if (atBottom) pre.scrollTop = pre.scrollHeight;
      state.textContent = "streaming…";
    }
    if (done) return got;
  }
}

// One read of an attempt's log: `whole` once it was read to its end. A refusal is said in
// the pane and waited out (its Retry-After), then the log is asked for again.
async function readLog(id, attempt, pre, state) {
  try {
    return { whole: true, got: await streamLog(id, attempt, pre, state) };
  } catch (err) {
    if (err instanceof LogRefused) {
      state.textContent = `log not sent: ${err.message}; asking again in ${err.seconds} s…`;
      await sleep(err.seconds * 1000);
    } else {
      state.textContent = "stream interrupted, retrying…";
    }
    return { whole: false, got: false };
  }
}

// What a queued run waits for (the API's `waiting`), as the page says it (waiting.describe).
function waitingText(waiting) {
  if (!waiting) return "a free worker";
  if (waiting.for === "retry") return `retry at ${fmtTime(waiting.at)}`;
  if (waiting.for === "concurrency key") return `its concurrency key, held by ${waiting.held_by}`;
  return "a free worker";
}

async function liveRun() {
  const box = document.getElementById("run");
  if (!box || box.dataset.live !== "true") return;
  const id = box.dataset.runId;
  const pre = document.getElementById("log");
  const state = document.getElementById("log-state");
  let ended = false;
  (async () => {  // status, exit code and timings, every second until the run ends
    while (!ended) {
      const run = await getRun(id);
      if (run) {
        showRun(run);
        if (TERMINAL.has(run.status)) break;
      }
      await sleep(RUN_POLL_MS);
    }
  })();
  let whole = 0;  // the attempt whose log was read to its end: not read again
  for (;;) {
    const run = await getRun(id);
    if (!run) {
      state.textContent = "server unreachable, retrying…";
      await sleep(2000);
      continue;
    }
    showRun(run);
    if (whole === run.attempt && run.status !== "queued") {
      if (TERMINAL.has(run.status)) break;  // (its end is recorded a moment after the log's)
      await sleep(300);
      continue;
    }
    if (run.status === "queued") {
      if (run.attempt > 0 && whole !== run.attempt) {
        // Waiting for its retry: the attempt that ended is shown until the next one starts.
        if ((await readLog(id, run.attempt, pre, state)).whole) whole = run.attempt;
      }
      const why = waitingText(run.waiting);
      state.textContent = `queued: waiting for ${why}…`;
      setText("run-waiting", why);
      await sleep(500);
      continue;
    }
    const read = await readLog(id, run.attempt, pre, state);
    if (read.whole) whole = run.attempt;
    if (whole === run.attempt && TERMINAL.has(run.status)) break;  // the whole, final log
    if (read.whole && !read.got) state.textContent = `waiting for output (running on ${run.node || "a node"})…`;
    await sleep(read.got ? 300 : 1000);
  }
  ended = true;
  state.textContent = "finished";
}

// ---- delivery detail: its runs' status until they all end -------------------------------

async function liveDeliveryRuns() {
  const table = document.getElementById("runs");
  if (!table) return;
  const id = table.dataset.deliveryId;
  const rowsById = new Map([...table.querySelectorAll("tbody tr[data-id]")].map((tr) => [tr.dataset.id, tr]));
  const pending = () => [...rowsById.values()].some(
    (tr) => !TERMINAL.has(tr.querySelector(".c-status").textContent.trim()));
  while (pending()) {
    await sleep(RUN_POLL_MS * 2);
    let runs;
    try {
      const resp = checkSession(await fetch(
        `${ROOT}/api/runs?delivery=${encodeURIComponent(id)}&limit=1000`, { credentials: "same-origin" }));
      if (!resp.ok) continue;
      runs = (await resp.json()).runs;
    } catch (err) {
      continue;
    }
    for (const run of runs) {
      const tr = rowsById.get(run.id);
      if (!tr) {
        document.getElementById("new-runs").hidden = false;
        continue;
      }
      const b = tr.querySelector(".c-status");
      b.textContent = run.status;
      b.className = `badge ${STATUS_CLASSES[run.status] || "st-muted"} c-status`;
      tr.querySelector(".c-reason").textContent = shown(run.reason || "");
      tr.querySelector(".c-attempt").textContent = `${run.attempt}/${run.max_attempts}`;
      tr.querySelector(".c-exit").textContent = run.exit_code === null ? "—" : String(run.exit_code);
      tr.querySelector(".c-started").textContent = fmtTime(run.started_at);
      tr.querySelector(".c-finished").textContent = fmtTime(run.finished_at);
    }
  }
}

// ---- buttons pressed once: a double click sent Replay twice (the server also answers a
// repeat as the first, see console/once.py) ----------------------------------------------

function submitOnce() {
  for (const form of document.querySelectorAll("form[data-submit-once]")) {
    const buttons = [...form.querySelectorAll("button[type=submit]")];
    // (Disabled while this submission goes on, it does not stop it: it has no name to send.)
    form.addEventListener("submit", () => buttons.forEach((b) => { b.disabled = true; }));
    // A page the browser shows again from its history: its buttons work again.
    window.addEventListener("pageshow", (event) => {
      if (event.persisted) buttons.forEach((b) => { b.disabled = false; });
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  submitOnce();
  liveDeliveries();
  liveDeliveryRuns();
  liveRun();
});
