// The sessionhive console: an approvals inbox of every tool call waiting for a human, a paged and
// searchable session list, a session's history (newest first) and live events. Plain JavaScript
// against the /v1 API; the bearer token lives in this tab's sessionStorage. Live events are read
// with fetch (EventSource cannot send a header) and resumed with Last-Event-ID when a stream drops;
// a prompt starts a run (by its id); the inbox and the list are polled, as no single stream covers
// thousands of sessions.
"use strict";

const TOKEN_KEY = "sessionhive-token";
const $ = (id) => document.getElementById(id);
let current = null;        // the selected session id
let eventsAbort = null;    // aborts the live event stream of the selected session
let scopes = new Set();    // what this token may do (GET /v1/whoami); controls it lacks are hidden
const LIST_PAGE = 50;      // sessions per page of the list
const HISTORY_PAGE = 100;  // messages per page of a history
const POLL_MS = 2000;      // how often the inbox and the list are refreshed
let listOffset = 0;        // the list page shown
let listRequest = 0;       // answers to older list requests are dropped (search typed faster)
let historyOldest = 0;     // index of the oldest message shown of the selected session

// The server refuses what a token may not do (403); hiding the control only spares a click.
function may(scope) { return scopes.has(scope) || scopes.has("admin"); }

function token() { return sessionStorage.getItem(TOKEN_KEY); }
function enc(id) { return encodeURIComponent(id); }
function say(text) { $("status").textContent = text; }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function api(method, path, body) {
  const headers = { "Authorization": "Bearer " + token() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) { logout("the token was refused; enter it again"); throw new Error("unauthorized"); }
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error((data && (data.error + ": " + data.detail)) || ("HTTP " + response.status));
  return data;
}

function showLogin(message) {
  $("login").hidden = false; $("console").hidden = true; $("logout").hidden = true;
  say(message || "enter the service's bearer token");
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  scopes = new Set(); $("whoami").textContent = "";
  if (eventsAbort) eventsAbort.abort();
  showLogin(message);
}

async function start() {
  $("login").hidden = true; $("console").hidden = false; $("logout").hidden = false;
  const me = await api("GET", "/v1/whoami");
  scopes = new Set(me.scopes);
  $("whoami").textContent = `${me.name} · tenant ${me.tenant} · ${me.scopes.join(", ")}`;
  for (const node of document.querySelectorAll("[data-needs]")) node.hidden = !may(node.dataset.needs);
  say("connected");
  await Promise.all([loadSessions(), loadInbox()]);
  const fromHash = decodeURIComponent(location.hash.replace(/^#session=/, ""));
  if (location.hash.startsWith("#session=") && fromHash) await select(fromHash);
}

async function loadSessions() {
  const params = new URLSearchParams({ details: "true", limit: LIST_PAGE, offset: listOffset });
  const prefix = $("search").value.trim();
  if (prefix) params.set("q", prefix);
  if ($("state-filter").value) params.set("state", $("state-filter").value);
  const asked = ++listRequest;
  const data = await api("GET", "/v1/sessions?" + params);
  if (asked !== listRequest) return;
  if (data.total && listOffset >= data.total) {  // the page emptied under us: show the last one
    listOffset = Math.floor((data.total - 1) / LIST_PAGE) * LIST_PAGE;
    return loadSessions();
  }
  const body = $("sessions").querySelector("tbody");
  body.replaceChildren();
  for (const s of data.sessions) {
    const row = el("tr", { "data-session": s.id },
      el("td", {}, s.id),
      el("td", {}, el("span", { class: "state state-" + s.state }, s.state)),
      el("td", {}, String(s.usage.total_tokens)),
      el("td", {}, String(s.pending_confirmations)));
    if (s.id === current) row.classList.add("selected");
    row.addEventListener("click", () => select(s.id));
    body.append(row);
  }
  $("sessions-more").textContent = data.total
    ? `${data.offset + 1} to ${data.offset + data.sessions.length} of ${data.total}`
    : (prefix || $("state-filter").value ? "no session matches" : "no sessions yet");
  $("sessions-prev").disabled = listOffset === 0;
  $("sessions-next").disabled = listOffset + LIST_PAGE >= data.total;
  document.body.dataset.listed = String(data.total);
}

function pageSessions(step) {
  listOffset = Math.max(0, listOffset + step * LIST_PAGE);
  loadSessions().catch((err) => say(String(err.message)));
}

function messageItem(m, index) {
  const calls = (m.tool_calls || []).map((c) => `\n→ ${c.name} ${JSON.stringify(c.arguments)}`).join("");
  return el("li", { class: "msg msg-" + m.role, "data-index": String(index) },
    el("span", { class: "role" }, m.role), m.text + calls);
}

async function loadInbox() {
  const data = await api("GET", "/v1/confirmations");
  const list = $("inbox");
  const key = (p) => p.session_id + "\n" + p.tool_id;
  const pending = new Map(data.pending.map((p) => [key(p), p]));
  // Keyed, not rebuilt: a reason being typed survives the refresh; answered calls leave.
  for (const item of [...list.children]) {
    if (!pending.has(item.dataset.key)) item.remove();
  }
  const shown = new Set([...list.children].map((item) => item.dataset.key));
  for (const p of data.pending) {
    if (!shown.has(key(p))) list.append(inboxItem(p, key(p)));
  }
  const count = data.pending.length;
  $("inbox-count").textContent = String(count);
  $("inbox-count").className = "state" + (count ? " state-waiting" : "");
  if (!count) list.append(el("li", { class: "hint none", "data-key": "" }, "nothing is waiting"));
}

function inboxItem(p, key) {
  const open = el("button", { type: "button", class: "session-link" }, p.session_id);
  open.addEventListener("click", () => select(p.session_id));
  const recent = el("ol", { class: "recent" });
  for (const m of p.recent) recent.append(messageItem(m, ""));
  const since = new Date(p.waiting_since * 1000).toLocaleTimeString();
  const item = el("li", { class: "pending", "data-key": key, "data-session": p.session_id, "data-tool-id": p.tool_id },
    el("strong", {}, p.tool_name), " in ", open,
    el("span", { class: "hint" }, (p.parent_id ? ` (child of ${p.parent_id})` : "") + ` · waiting since ${since}`),
    el("pre", { class: "arguments" }, JSON.stringify(p.arguments, null, 2)),
    el("div", { class: "prompt" }, el("span", { class: "role" }, "prompt"), p.prompt),
    recent);
  addDecision(item, p.session_id, p.tool_id, `${p.tool_name} in ${p.session_id}`, async () => {
    await loadInbox();
    if (p.session_id === current) await loadConfirmations();
  });
  return item;
}

// Approve / Reject with a reason, for one waiting call; `after` runs once the decision was sent.
function addDecision(item, sessionId, toolId, what, after) {
  if (!may("confirm")) {
    item.append(el("span", { class: "hint" }, "this token may not decide tool calls"));
    return;
  }
  const reason = el("input", { placeholder: "reason (optional)", class: "reason" });
  const approve = el("button", { type: "button", class: "approve" }, "Approve");
  const reject = el("button", { type: "button", class: "reject" }, "Reject");
  const decide = async (approved) => {
    approve.disabled = reject.disabled = true;
    try {
      await api("POST", `/v1/sessions/${enc(sessionId)}/confirmations/${enc(toolId)}`,
        { approved, reason: reason.value || null });
      say(`${approved ? "approved" : "rejected"} ${what}`);
      item.remove();
    } catch (err) { say(String(err.message)); approve.disabled = reject.disabled = false; }
    await after();
  };
  approve.addEventListener("click", () => decide(true));
  reject.addEventListener("click", () => decide(false));
  item.append(reason, " ", approve, " ", reject);
}

async function select(id) {
  current = id;
  location.hash = "session=" + enc(id);
  $("session-pane").hidden = false;
  $("session-id").textContent = id;
  $("events").replaceChildren();
  for (const row of document.querySelectorAll("#sessions tbody tr")) {
    row.classList.toggle("selected", row.dataset.session === id);
  }
  openEvents(id);
  await Promise.all([loadDetail(), loadHistory(), loadConfirmations()]);
}

async function loadDetail() {
  if (!current) return;
  const s = await api("GET", `/v1/sessions/${enc(current)}`);
  const state = $("session-state");
  state.textContent = s.state; state.className = "state state-" + s.state;
  const ctx = Math.round(s.context.percent * 1000) / 10;
  $("session-usage").textContent =
    `${s.usage.total_tokens} tokens (${s.usage.prompt_tokens} in, ${s.usage.completion_tokens} out); ` +
    `context ${ctx}% of ${s.context.max_tokens}; model ${s.llm ? s.llm.provider + "/" + s.llm.model : "none"}` +
    (s.children.length ? `; children: ${s.children.join(", ")}` : "");
}

async function loadHistory() {
  if (!current) return;
  const data = await api("GET", `/v1/sessions/${enc(current)}/history?limit=${HISTORY_PAGE}`);
  $("history").replaceChildren();
  showHistoryPage(data);
}

async function loadOlder() {
  if (!current || historyOldest === 0) return;
  const data = await api("GET", `/v1/sessions/${enc(current)}/history?before=${historyOldest}&limit=${HISTORY_PAGE}`);
  showHistoryPage(data);
}

// Newest first: a page is shown newest message first, below the newer pages shown already.
function showHistoryPage(data) {
  const list = $("history");
  for (let i = data.messages.length - 1; i >= 0; i--) list.append(messageItem(data.messages[i], data.offset + i));
  historyOldest = data.offset;
  $("history-older").hidden = data.offset === 0;
  $("history-older").textContent = `older messages (${data.offset} more)`;
}

async function loadConfirmations() {
  if (!current) return;
  const sessionId = current;
  const data = await api("GET", `/v1/sessions/${enc(sessionId)}/confirmations`);
  const list = $("confirmations");
  list.replaceChildren();
  if (!data.pending.length) list.append(el("li", { class: "hint none" }, "nothing is waiting"));
  for (const p of data.pending) {
    const item = el("li", { class: "confirmation", "data-tool-id": p.tool_id },
      el("strong", {}, p.tool_name || p.tool_id),
      el("pre", {}, p.arguments ? JSON.stringify(p.arguments, null, 2) : ""));
    list.append(item);
    addDecision(item, sessionId, p.tool_id, p.tool_name || p.tool_id, loadConfirmations);
  }
}

function describe(e) {
  switch (e.type) {
    case "TurnStart": return `turn ${e.turn_id}: ${e.prompt}`;
    case "TextDelta": return e.text;
    case "ToolStart": return `tool ${e.tool_name} ${JSON.stringify(e.arguments)}`;
    case "ToolEnd": return `tool ${e.tool_name} ${e.is_error ? "failed" : "done"}: ${e.output}`;
    case "ConfirmationRequired": return `${e.tool_name} waits for a decision`;
    case "ConfirmationResolved":
      return `${e.outcome}${e.reason ? " (" + e.reason + ")" : ""}${e.decided_by ? " by " + e.decided_by : ""}`;
    case "TurnEnd": return `turn done: ${e.result.rounds} LLM call(s), ${e.result.usage.total_tokens} tokens`;
    case "TurnError": return `turn failed: ${e.error}`;
    case "TurnCancelled": return `turn cancelled: ${e.reason}`;
    default: return "";
  }
}

function showEvent(e) {
  const list = $("events");
  const last = list.lastElementChild;
  if (e.type === "TextDelta" && last && last.dataset.type === "TextDelta") {
    last.lastChild.textContent += e.text;
  } else {
    const item = el("li", { "data-type": e.type }, el("span", { class: "role" }, e.type), describe(e));
    list.append(item);
  }
  list.scrollTop = list.scrollHeight;
}

// Reads one server-sent event stream, resuming it where it broke: every frame's `id:` is kept, and a
// reconnection sends it as Last-Event-ID, so the service replays exactly what was missed (fetch
// rather than EventSource, which cannot send the Authorization header). Ends when onFrame returns
// true (a terminal event) or the abort signal fires.
async function followStream(path, abort, onFrame) {
  let lastEventId = null;
  while (!abort.signal.aborted) {
    try {
      const headers = { "Authorization": "Bearer " + token(), "Accept": "text/event-stream" };
      if (lastEventId !== null) headers["Last-Event-ID"] = lastEventId;
      const response = await fetch(path, { headers, signal: abort.signal });
      if (response.status === 401) { logout("the token was refused; enter it again"); return; }
      if (!response.ok) throw new Error("HTTP " + response.status);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let type = "message";
          let id = null;
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) type = line.slice(6).trim();
            else if (line.startsWith("id:")) id = line.slice(3).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          }
          if (id !== null) lastEventId = id;
          if (data.length && onFrame(type, JSON.parse(data.join("\n")))) return;
        }
      }
    } catch (err) {
      if (abort.signal.aborted) return;
      say("live events: " + err.message + "; resuming");
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

async function openEvents(id) {
  if (eventsAbort) eventsAbort.abort();
  const abort = new AbortController();
  eventsAbort = abort;
  await followStream(`/v1/sessions/${enc(id)}/events`, abort, (type, data) => {
    if (current !== id) { abort.abort(); return true; }
    onEvent(type, data);
    return false;
  });
}

// 128 random bits in hex (crypto.randomUUID needs a secure context; getRandomValues does not).
function newKey() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

// A prompt is a background run: POST .../runs answers at once with its id (the Idempotency-Key makes
// a resent request the same run, never a second one), then the run's own stream says when it ends.
async function runPrompt(sessionId, prompt) {
  const headers = {
    "Authorization": "Bearer " + token(),
    "Content-Type": "application/json",
    "Idempotency-Key": newKey(),
  };
  const response = await fetch(`/v1/sessions/${enc(sessionId)}/runs`, {
    method: "POST", headers, body: JSON.stringify({ prompt }),
  });
  const run = await response.json();
  if (!response.ok) throw new Error(run.error + ": " + run.detail);
  say(`run ${run.run_id} started`);
  let outcome = "";
  await followStream(`/v1/runs/${enc(run.run_id)}/events`, new AbortController(), (type, data) => {
    if (type === "TurnEnd") outcome = `run ${run.run_id} done: ${data.result.rounds} LLM call(s)`;
    else if (type === "TurnError") outcome = `run ${run.run_id} failed: ${data.error}`;
    else if (type === "TurnCancelled") outcome = `run ${run.run_id} cancelled: ${data.reason}`;
    return outcome !== "";
  });
  say(outcome);
}

function onEvent(type, data) {
  if (type === "subscribed") { document.body.dataset.live = data.session_id; return; }
  if (type === "end") return;
  showEvent(data);
  if (type === "ConfirmationRequired" || type === "ConfirmationResolved") { loadConfirmations(); loadInbox(); }
  if (type === "TurnEnd" || type === "TurnError" || type === "TurnCancelled") { loadHistory(); loadConfirmations(); }
  loadDetail().catch(() => {});
}

async function control(action) {
  try {
    const data = await api("POST", `/v1/sessions/${enc(current)}/${action}`);
    say(`${action}: ${data && data.changed ? "done" : "nothing to do"}`);
  } catch (err) { say(String(err.message)); }
  await Promise.all([loadDetail(), loadSessions(), loadConfirmations(), loadInbox()]);
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    start().catch((err) => say(String(err.message)));
  });
  $("logout").addEventListener("click", () => logout());
  $("create").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const created = await api("POST", "/v1/sessions", { id: $("new-id").value.trim() });
      $("new-id").value = "";
      await loadSessions();
      await select(created.id);
    } catch (err) { say(String(err.message)); }
  });
  $("prompt-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const prompt = $("prompt").value;
    const sessionId = current;
    $("prompt").value = "";
    say("run sent");
    try {
      await runPrompt(sessionId, prompt);
    } catch (err) { say(String(err.message)); }
    if (sessionId === current) await loadHistory();
  });
  for (const action of ["pause", "resume", "cancel"]) $(action).addEventListener("click", () => control(action));
  $("sessions-prev").addEventListener("click", () => pageSessions(-1));
  $("sessions-next").addEventListener("click", () => pageSessions(1));
  let typing = null;
  $("search").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { listOffset = 0; loadSessions().catch((err) => say(String(err.message))); }, 200);
  });
  $("state-filter").addEventListener("change", () => { listOffset = 0; loadSessions().catch((err) => say(String(err.message))); });
  $("history-older").addEventListener("click", () => loadOlder().catch((err) => say(String(err.message))));
  setInterval(() => {
    if (token() && !$("console").hidden) { loadSessions().catch(() => {}); loadInbox().catch(() => {}); }
  }, POLL_MS);
  if (token()) start().catch((err) => say(String(err.message))); else showLogin();
});
