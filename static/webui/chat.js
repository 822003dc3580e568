// The chat of an API harness (opencode, the Agent SDK): the durable log from
// GET {api}/messages, then one turn per message on POST {api}/message_stream (Server-Sent
// Events: {type:"ready"}, {type:"harness_event", event}, {type:"done"}, {type:"error"}).
// Parts are opencode's: text, reasoning, tool {tool, state:{status, input, output, error}}.
// Everything is put on the page as text, never as HTML.
"use strict";
(() => {
  const api = document.getElementById("chat").dataset.api;
  const log = document.getElementById("chat-log");
  const form = document.getElementById("chat-form");
  const input = document.getElementById("chat-input");
  const sendButton = document.getElementById("chat-send");
  const abortButton = document.getElementById("chat-abort");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  let inFlight = null;
  let historyShown = false;

  const el = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const pretty = (value) => (typeof value === "string" ? value : JSON.stringify(value, null, 2));

  function renderPart(part) {
    if (part.type === "text") return el("div", "part-text", part.text || "");
    if (part.type === "reasoning") {
      const details = el("details", "part-reasoning");
      details.append(el("summary", "", "thinking"), el("div", "part-text", part.text || ""));
      return details;
    }
    if (part.type === "tool") {
      const toolState = part.state || {};
      const details = el("details", `part-tool tool-${toolState.status || "pending"}`);
      details.append(el("summary", "mono", `${part.tool || "tool"} · ${toolState.status || "pending"}`));
      if (toolState.input !== undefined) details.append(el("pre", "mono", pretty(toolState.input)));
      if (toolState.output !== undefined) details.append(el("pre", "mono", pretty(toolState.output)));
      if (toolState.error) details.append(el("pre", "mono error", pretty(toolState.error)));
      return details;
    }
    return null; // step markers and the like carry nothing to read
  }

  function messageItem(role) {
    const item = el("li", `msg msg-${role}`);
    item.append(el("div", "msg-role", role));
    const body = el("div", "msg-body");
    item.append(body);
    log.append(item);
    return { item, body, parts: new Map() };
  }

  function setPart(message, part, key) {
    const node = renderPart(part);
    if (!node) return;
    const old = message.parts.get(key);
    if (old) {
      if (old.open !== undefined && node.open !== undefined) node.open = old.open; // keep what the reader expanded
      old.replaceWith(node);
    } else {
      message.body.append(node);
    }
    message.parts.set(key, node);
    log.scrollTop = log.scrollHeight;
  }

  function notice(text, kind) {
    log.append(el("li", `notice ${kind}`, text));
    log.scrollTop = log.scrollHeight;
  }

  // Sending waits for the history: a turn started before it arrived would be shown above it.
  async function loadHistory() {
    historyShown = false;
    sendButton.disabled = true;
    try {
      const response = await fetch(`${api}/messages`, { headers: { Accept: "application/json" } });
      const body = response.ok ? await response.json() : null;
      log.replaceChildren();
      if (!body) {
        notice(`could not load the conversation (${response.status})`, "error");
        return;
      }
      const messages = Array.isArray(body) ? body : body.data || body.messages || [];
      for (const stored of messages) {
        const info = stored.info || stored; // the log's entries are {info: {role, status}, parts}
        const message = messageItem(info.role || "assistant");
        (stored.parts || []).forEach((part, index) => setPart(message, part, part.id || index));
        if (info.status === "failed") showFailure(message, info);
      }
    } catch (error) {
      notice(`could not load the conversation: ${error.message || error}`, "error");
    } finally {
      historyShown = true;
      sendButton.disabled = inFlight !== null;
    }
  }

  // One SSE frame of the reply (see the contract at the top).
  function onFrame(frame, turn) {
    if (frame.type === "error") throw new Error(frame.message || frame.error || "the turn failed");
    if (frame.type === "harness_event") {
      const event = frame.event || {};
      const props = event.properties || {};
      if (event.type === "message.updated" && props.info) turn.roles.set(props.info.id, props.info.role);
      if (event.type === "session.status" && props.status && props.status.type === "retry") {
        showRetry(turn, props.status);
      }
      if (event.type === "message.part.updated" && props.part) {
        if (turn.roles.get(props.part.messageID) === "user") return; // our own message echoed
        clearRetry(turn);
        turn.parts.set(props.part.id, { ...props.part });
        setPart(turn.reply, props.part, props.part.id);
      }
      if (event.type === "message.part.delta" && turn.parts.has(props.partID)) {
        // Text as it is written: appended to the part its message.part.updated started.
        const part = turn.parts.get(props.partID);
        const field = props.field || "text";
        part[field] = (part[field] || "") + (props.delta || "");
        setPart(turn.reply, part, part.id);
      }
      return;
    }
    const text = typeof frame.delta === "string" ? frame.delta : frame.text;
    if (typeof text === "string" && frame.type !== "ready" && frame.type !== "done") {
      turn.plain += text;
      setPart(turn.reply, { type: "text", text: turn.plain }, "plain");
    }
  }

  // A turn that ended with info.error (aborted, or the harness's error): said in its bubble, live
  // and in the history, so it does not read as an empty reply.
  function showFailure(message, info) {
    const error = info && info.error;
    if (!error && !(info && info.status === "failed")) return;
    let text = "failed";
    if (error && error.name === "MessageAbortedError") text = "aborted";
    else if (typeof error === "string") text = error;
    else if (error) text = (error.data && error.data.message) || error.name || text;
    message.item.classList.add("failed");
    message.body.append(el("div", "part-error", text));
    log.scrollTop = log.scrollHeight;
  }

  // The harness retries a failed model request (opencode's session.status "retry"; the Agent
  // SDK harness sends the same): said in the reply until the model answers.
  function showRetry(turn, status) {
    const attempt = status.maxAttempts ? `${status.attempt} of ${status.maxAttempts}` : status.attempt;
    const text = `model request failed, retrying (attempt ${attempt}): ${status.message || "no reason"}`;
    if (!turn.retry) {
      turn.retry = el("div", "part-retry", text);
      turn.reply.body.append(turn.retry);
    } else {
      turn.retry.textContent = text;
    }
    log.scrollTop = log.scrollHeight;
  }

  function clearRetry(turn) {
    if (turn.retry) turn.retry.remove();
    turn.retry = null;
  }

  async function readEvents(response, turn) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      const blocks = buffer.split(/\r?\n\r?\n/);
      buffer = blocks.pop();
      for (const block of blocks) {
        const data = block
          .split(/\r?\n/)
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (!data) continue;
        let frame;
        try {
          frame = JSON.parse(data);
        } catch {
          frame = { type: "text", text: data };
        }
        if (frame.type === "done") {
          showFailure(turn.reply, frame.message && frame.message.info);
          return;
        }
        onFrame(frame, turn);
      }
    }
  }

  const post = (path, body = {}, signal = undefined) =>
    fetch(`${api}/${path}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf, Accept: "text/event-stream, application/json" },
      body: JSON.stringify(body),
      signal,
    });

  async function sendMessage(text) {
    const mine = messageItem("user");
    setPart(mine, { type: "text", text }, "text");
    const turn = { reply: messageItem("assistant"), roles: new Map(), parts: new Map(), plain: "", retry: null };
    turn.reply.item.classList.add("streaming");
    inFlight = new AbortController();
    sendButton.disabled = true;
    abortButton.disabled = false;
    try {
      const response = await post("message_stream", { text }, inFlight.signal);
      if (!response.ok) {
        const problem = await response.json().catch(() => ({}));
        if (response.status === 409) document.dispatchEvent(new Event("lap:session-changed"));
        throw new Error(problem.error || `the platform answered ${response.status}`);
      }
      await readEvents(response, turn);
    } catch (error) {
      if (error.name === "AbortError") notice("reply aborted", "warn");
      else notice(String(error.message || error), "error");
    } finally {
      turn.reply.item.classList.remove("streaming");
      inFlight = null;
      sendButton.disabled = !historyShown;
      abortButton.disabled = true;
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || inFlight || !historyShown) return;
    input.value = "";
    sendMessage(text);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  abortButton.addEventListener("click", async () => {
    const turn = inFlight;
    await post("abort");
    if (turn) turn.abort();
  });
  document.getElementById("chat-restart").addEventListener("click", async () => {
    if (!confirm("Restart this session in a new sandbox? The conversation is replayed; files are not kept.")) return;
    notice("restarting…", "warn");
    const response = await post("restart");
    if (!response.ok) {
      const problem = await response.json().catch(() => ({}));
      notice(`restart failed: ${problem.error || response.status}`, "error");
      return;
    }
    // The session is coming up again in a new sandbox and takes no message until it is
    // ready: the page shows its bring-up, then the chat with the conversation.
    location.reload();
  });

  loadHistory();
})();
