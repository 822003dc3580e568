// The browser terminal: xterm.js over the session's WebSocket, the same protocol as `lap`
// (docs: DESIGN.md, Terminal protocol). Authenticated by the login cookie; the browser sends
// the page's Origin, which the platform checks. Keystrokes go out as binary frames, resizes
// as JSON text frames; the first frame after each attach is the scrollback plus the screen.
// Text frames from the server are control messages, never terminal output: when the harness
// exits, the page says so and stops reconnecting; attaching again (Enter or the button) starts
// the harness anew in the same sandbox.
"use strict";
(() => {
  const FINAL_CLOSES = {
    4401: "not authorised (log in again)",
    4404: "session not found",
    4409: "the session is not running",
    4500: "the harness exited and could not start again",
  };
  const container = document.getElementById("terminal");
  const state = document.getElementById("terminal-state");
  const again = document.getElementById("terminal-again");
  const term = new Terminal({
    cursorBlink: true,
    scrollback: 10000,
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
    fontSize: 14,
    lineHeight: 1.15, // room below the baseline: underscores are not clipped
    theme: { background: "#101418" },
  });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(container);
  const encoder = new TextEncoder();
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${container.dataset.ttyPath}`;
  let socket = null;
  let retryDelay = 500;
  let exited = false;

  const show = (text, kind) => {
    state.textContent = text;
    state.className = `terminal-state ${kind}`;
  };
  const send = (data) => {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(data);
  };
  const sendSize = () => send(JSON.stringify({ type: "resize", cols: term.cols, rows: term.rows }));

  const refit = () => fit.fit();
  const mirrorSize = () => {
    container.dataset.cols = String(term.cols);
    container.dataset.rows = String(term.rows);
  };
  term.onResize(() => {
    mirrorSize();
    sendSize();
  });
  term.onData((data) => {
    if (!exited) send(encoder.encode(data));
    else if (data === "\r") startAgain();
  });
  term.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0))));
  new ResizeObserver(() => requestAnimationFrame(refit)).observe(container);

  function connect() {
    show("connecting…", "pending");
    socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    let fresh = true;
    socket.onopen = () => {
      retryDelay = 500;
      show("connected", "ok");
      refit();
      sendSize();
      term.focus();
    };
    socket.onmessage = (event) => {
      if (fresh) {
        term.reset(); // the first frame redraws everything: scrollback, then the screen
        fresh = false;
      }
      if (typeof event.data === "string") control(event.data);
      else term.write(new Uint8Array(event.data));
    };
    socket.onclose = (event) => {
      if (exited) return;
      if (FINAL_CLOSES[event.code]) {
        show(`disconnected: ${event.reason || FINAL_CLOSES[event.code]}`, "error");
        if (event.code === 4409) document.dispatchEvent(new Event("lap:session-changed"));
        return;
      }
      // A network blip, a platform restart or the sandbox going away: try again, slower each time.
      show("reconnecting…", "pending");
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 10000);
    };
  }

  // {"type":"exit","code":N} when the harness ends; pong and error (a refused resize) need
  // nothing from the page.
  function control(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    if (message.type === "exit") {
      exited = true;
      show(`exited with code ${message.code} — press Enter to start it again`, "error");
      again.hidden = false;
    }
  }

  function startAgain() {
    exited = false;
    again.hidden = true;
    retryDelay = 500;
    connect();
  }

  again.addEventListener("click", startAgain);
  refit();
  mirrorSize();
  connect();
})();
