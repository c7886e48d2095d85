// CloudIDE sessions panel: list my sessions, start one, open its terminal, stop it, through the REST API
// the gateway names in /config.json. Progress (PROVISIONING -> STARTING -> READY) comes from polling
// GET /sessions while any session is on its way. The token stays in this tab (sessionStorage).
"use strict";

window.cloudideSessions = (function () {
  const LIVE = new Set(["REQUESTED", "PROVISIONING", "STARTING", "READY", "STOPPING"]);
  const SETTLED = new Set(["READY", "STOPPED", "FAILED"]);
  const POLL_MS = 1000;  // while a session is on its way somewhere
  const WATCH_MS = 15000;  // while one is READY: it may still end on its own (idle timeout, lifetime)

  function show(apiUrl, token, openTerminal) {
    const panel = document.getElementById("sessions");
    const form = document.getElementById("start");
    const rows = document.getElementById("session-rows");
    const message = document.getElementById("message");
    let timer = null;
    let stopping = null;  // the session whose stop the status line reports, until it has ended
    panel.hidden = false;
    form.elements.token.value = token || sessionStorage.getItem("cloudide-token") || "";

    function bearer() {
      const value = form.elements.token.value.trim();
      sessionStorage.setItem("cloudide-token", value);
      return value;
    }

    async function call(method, path, body) {
      const headers = { Authorization: "Bearer " + bearer() };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const response = await fetch(apiUrl + path, {
        method: method, headers: headers, body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await response.text();
      const payload = text ? JSON.parse(text) : {};
      if (!response.ok) throw new Error(payload.message || response.status + " " + response.statusText);
      return payload;
    }

    function say(text) { message.textContent = text; }

    function cell(row, text, className) {
      const td = row.insertCell();
      td.textContent = text == null ? "" : String(text);
      if (className) td.className = className;
      return td;
    }

    function button(td, label, className, onClick) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = label;
      b.className = className;
      b.addEventListener("click", onClick);
      td.appendChild(b);
    }

    function render(sessions) {
      rows.replaceChildren();
      for (const s of sessions) {
        const row = rows.insertRow();
        row.dataset.sessionId = s.sessionId;
        row.dataset.status = s.status;
        cell(row, s.sessionId, "id");
        cell(row, s.projectId);
        cell(row, s.status, "status");
        cell(row, s.statusReason, "reason");
        const actions = cell(row, "", "actions");
        if (s.status === "READY") {
          button(actions, "Open", "open", function () { openTerminal(s.sessionId, bearer()); });
        }
        if (LIVE.has(s.status) && s.status !== "STOPPING" && !s.stopRequestedAt) {
          button(actions, "Stop", "stop", function () { stop(s.sessionId); });
        }
      }
    }

    // A stop is asynchronous: DELETE records stopRequestedAt and the session stays READY until its
    // workflow moves it to STOPPING, so a READY session with a stop requested is still on its way.
    function onItsWay(s) { return !SETTLED.has(s.status) || (LIVE.has(s.status) && !!s.stopRequestedAt); }

    async function refresh() {
      clearTimeout(timer);
      if (!form.elements.token.value.trim()) { say("enter a token (locally: local:<user-id>)"); return; }
      try {
        const sessions = (await call("GET", "/sessions")).sessions;
        sessions.sort(function (a, b) { return a.createdAt < b.createdAt ? 1 : -1; });
        render(sessions);
        reportStop(sessions);
        if (sessions.some(onItsWay)) timer = setTimeout(refresh, POLL_MS);
        else if (sessions.some(function (s) { return LIVE.has(s.status); })) timer = setTimeout(refresh, WATCH_MS);
      } catch (error) {
        say("could not list sessions: " + error.message);
        timer = setTimeout(refresh, POLL_MS * 5);  // the API may be briefly unreachable: keep trying
      }
    }

    // The status line says "stopping" until the row shows the session ended, then how it ended.
    function reportStop(sessions) {
      const s = sessions.find(function (each) { return each.sessionId === stopping; });
      if (!s || LIVE.has(s.status)) return;
      say(s.sessionId + " " + s.status.toLowerCase() + (s.statusReason ? ": " + s.statusReason : ""));
      stopping = null;
    }

    async function stop(sessionId) {
      try {
        await call("DELETE", "/sessions/" + encodeURIComponent(sessionId));
        stopping = sessionId;
        say("stopping " + sessionId);
      } catch (error) {
        say("could not stop " + sessionId + ": " + error.message);
      }
      refresh();
    }

    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      try {
        const session = await call("POST", "/sessions", { projectId: form.elements.project.value.trim() });
        say("started " + session.sessionId);
      } catch (error) {
        say("could not start a session: " + error.message);
      }
      refresh();
    });
    form.elements.token.addEventListener("change", refresh);
    refresh();
  }

  return { show: show };
})();
