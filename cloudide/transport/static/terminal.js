// CloudIDE browser terminal: xterm.js over the gateway's WebSocket (message format: cloudide/transport/gateway.py).
// The session and token come from the URL fragment (#session=<id>&token=<token>[&mode=read]), which never
// reaches a server log, from the sessions panel (sessions.js) when the gateway knows the REST API, or from
// the form. `window.term` and `window.gateway` are exposed for tests.
"use strict";

(function () {
  // xterm.js creates <style> elements (the terminal's font, dimensions, theme, cursor) and takes no nonce;
  // the gateway's CSP allows only its own stylesheets and this page's nonce, so each <style> gets the nonce
  // when it is created (before insertion, or the browser ignores it).
  const styleNonce = document.querySelector('meta[name="csp-nonce"]').content;
  const createElement = Document.prototype.createElement;
  Document.prototype.createElement = function (name, options) {
    const element = createElement.call(this, name, options);
    if (String(name).toLowerCase() === "style") element.setAttribute("nonce", styleNonce);
    return element;
  };

  // Closes after which reconnecting cannot help: the session ended or the API refused us.
  const FINAL_CODES = new Set([1000, 4400, 4401, 4403, 4404, 4409]);
  const statusEl = document.getElementById("status");
  const encoder = new TextEncoder();
  // What the indicator showed, in order (tests read it; a reconnect can be too quick to watch), and what
  // became of the session once its shell ended (the gateway's "ended" message).
  const gateway = { state: "connecting", states: [], readOnly: false, closeCode: null, closeReason: "",
                    ended: null };
  window.gateway = gateway;

  function setStatus(state, text) {
    gateway.state = state;
    gateway.states.push(state);
    statusEl.dataset.state = state;
    statusEl.textContent = text || state;
  }

  function start(sessionId, token, readOnly) {
    gateway.readOnly = readOnly;
    document.getElementById("mode").hidden = !readOnly;
    document.getElementById("title").textContent = "CloudIDE terminal: " + sessionId;

    const term = new Terminal({ cursorBlink: !readOnly, disableStdin: readOnly, scrollback: 5000 });
    const fit = new FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(document.getElementById("terminal"));
    fit.fit();
    window.term = term;

    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = scheme + "//" + location.host + "/sessions/" + encodeURIComponent(sessionId) + "/terminal";
    let socket = null;
    let retryDelay = 250;

    function send(message) {
      if (socket && socket.readyState === WebSocket.OPEN) socket.send(message);
    }

    function connect() {
      socket = new WebSocket(url);
      socket.binaryType = "arraybuffer";
      socket.onopen = function () {
        send(JSON.stringify({ type: "auth", token: token, mode: readOnly ? "read" : "write",
                              rows: term.rows, cols: term.cols }));
      };
      socket.onmessage = function (event) {
        if (typeof event.data !== "string") {
          term.write(new Uint8Array(event.data));
          return;
        }
        const message = JSON.parse(event.data);
        if (message.type === "welcome") {
          retryDelay = 250;
        } else if (message.type === "resync") {
          term.reset();
        } else if (message.type === "state") {
          setStatus(message.state);
        } else if (message.type === "ended") {
          gateway.ended = { status: message.status, reason: message.reason };
          term.write("\r\n\x1b[1m[" + fate(gateway.ended) + "]\x1b[0m\r\n");
        }
      };
      socket.onclose = function (event) {
        gateway.closeCode = event.code;
        gateway.closeReason = event.reason;
        if (gateway.ended) {
          setStatus("closed", fate(gateway.ended));
          return;
        }
        if (FINAL_CODES.has(event.code)) {
          setStatus("closed", event.code === 1000 ? "session ended" : "closed: " + (event.reason || event.code));
          return;
        }
        setStatus("reconnecting", "reconnecting…");
        setTimeout(connect, retryDelay);
        retryDelay = Math.min(retryDelay * 2, 5000);
      };
    }

    // READY: only the shell exited, and opening the session again starts a new one; otherwise it ended, and why.
    function fate(ended) {
      if (ended.status === "READY") return "shell exited; the session runs on: open it again for a new shell";
      return "session " + String(ended.status).toLowerCase() + (ended.reason ? ": " + ended.reason : "");
    }

    if (!readOnly) {
      term.onData(function (data) { send(encoder.encode(data)); });
      // Binary strings (some mouse reports) are one byte per character, not UTF-8.
      term.onBinary(function (data) { send(Uint8Array.from(data, function (c) { return c.charCodeAt(0); })); });
      term.onResize(function (size) { send(JSON.stringify({ type: "resize", rows: size.rows, cols: size.cols })); });
    }
    window.addEventListener("resize", function () { fit.fit(); });
    term.focus();
    connect();
  }

  function showLogin() {
    const form = document.getElementById("login");
    form.hidden = false;
    setStatus("closed", "not connected");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      form.hidden = true;
      start(form.elements.session.value, form.elements.token.value, form.elements.readonly.checked);
    });
  }

  const params = new URLSearchParams(location.hash.slice(1));
  // Keep the token out of the history and of anything that copies the address bar.
  history.replaceState(null, "", location.pathname + location.search);
  if (params.get("session") && params.get("token")) {
    start(params.get("session"), params.get("token"), params.get("mode") === "read");
  } else {
    fetch("/config.json")
      .then(function (response) { return response.json(); })
      .catch(function () { return {}; })
      .then(function (config) {
        if (!config.apiUrl) { showLogin(); return; }
        setStatus("closed", "no terminal open");
        window.cloudideSessions.show(config.apiUrl, params.get("token"), function (sessionId, token) {
          document.getElementById("sessions").hidden = true;
          document.getElementById("back").hidden = false;
          start(sessionId, token, false);
        });
      });
  }
})();
