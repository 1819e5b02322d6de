// The sessionhive console: sessions, a session's history and live events, and the tool calls
// waiting for a human. Plain JavaScript against the /v1 API; the bearer token lives in this
// tab's sessionStorage. Live events are read with fetch (EventSource cannot send a header).
"use strict";

const TOKEN_KEY = "sessionhive-token";
const $ = (id) => document.getElementById(id);
let current = null;        // the selected session id
let eventsAbort = null;    // aborts the live event stream of the selected session
let scopes = new Set();    // what this token may do (GET /v1/whoami); controls it lacks are hidden

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
  await loadSessions();
  const fromHash = decodeURIComponent(location.hash.replace(/^#session=/, ""));
  if (location.hash.startsWith("#session=") && fromHash) await select(fromHash);
}

async function loadSessions() {
  const data = await api("GET", "/v1/sessions?details=true&limit=200");
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
  $("sessions-more").textContent = data.total > data.sessions.length
    ? `showing ${data.sessions.length} of ${data.total}` : `${data.total} session(s)`;
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
  const data = await api("GET", `/v1/sessions/${enc(current)}/history?limit=1000`);
  const list = $("history");
  list.replaceChildren();
  for (const m of data.messages) {
    const calls = (m.tool_calls || []).map((c) => `\n→ ${c.name} ${JSON.stringify(c.arguments)}`).join("");
    list.append(el("li", { class: "msg msg-" + m.role }, el("span", { class: "role" }, m.role), m.text + calls));
  }
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
    if (!may("confirm")) {
      item.append(el("span", { class: "hint" }, "this token may not decide tool calls"));
      continue;
    }
    const reason = el("input", { placeholder: "reason (optional)", class: "reason" });
    const approve = el("button", { type: "button", class: "approve" }, "Approve");
    const reject = el("button", { type: "button", class: "reject" }, "Reject");
    const decide = async (approved) => {
      approve.disabled = reject.disabled = true;
      try {
        await api("POST", `/v1/sessions/${enc(sessionId)}/confirmations/${enc(p.tool_id)}`,
          { approved, reason: reason.value || null });
        say(`${approved ? "approved" : "rejected"} ${p.tool_name || p.tool_id}`);
      } catch (err) { say(String(err.message)); }
      await loadConfirmations();
    };
    approve.addEventListener("click", () => decide(true));
    reject.addEventListener("click", () => decide(false));
    item.append(reason, " ", approve, " ", reject);
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

async function openEvents(id) {
  if (eventsAbort) eventsAbort.abort();
  const abort = new AbortController();
  eventsAbort = abort;
  while (!abort.signal.aborted && current === id) {
    try {
      const response = await fetch(`/v1/sessions/${enc(id)}/events`, {
        headers: { "Authorization": "Bearer " + token(), "Accept": "text/event-stream" },
        signal: abort.signal,
      });
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
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) type = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          }
          if (data.length) onEvent(type, JSON.parse(data.join("\n")));
        }
      }
    } catch (err) {
      if (abort.signal.aborted) return;
      say("live events: " + err.message + "; reconnecting");
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

function onEvent(type, data) {
  if (type === "subscribed") { document.body.dataset.live = data.session_id; return; }
  if (type === "end") return;
  showEvent(data);
  if (type === "ConfirmationRequired" || type === "ConfirmationResolved") loadConfirmations();
  if (type === "TurnEnd" || type === "TurnError" || type === "TurnCancelled") { loadHistory(); loadConfirmations(); }
  loadDetail().catch(() => {});
}

async function control(action) {
  try {
    const data = await api("POST", `/v1/sessions/${enc(current)}/${action}`);
    say(`${action}: ${data && data.changed ? "done" : "nothing to do"}`);
  } catch (err) { say(String(err.message)); }
  await Promise.all([loadDetail(), loadSessions(), loadConfirmations()]);
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
    say("turn sent");
    try {
      const result = await api("POST", `/v1/sessions/${enc(sessionId)}/turns`, { prompt });
      say(`turn done: ${result.rounds} LLM call(s)`);
    } catch (err) { say(String(err.message)); }
    if (sessionId === current) await loadHistory();
  });
  for (const action of ["pause", "resume", "cancel"]) $(action).addEventListener("click", () => control(action));
  setInterval(() => { if (token() && !$("console").hidden) loadSessions().catch(() => {}); }, 3000);
  if (token()) start().catch((err) => say(String(err.message))); else showLogin();
});
