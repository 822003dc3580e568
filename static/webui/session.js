// The session page's vault panel: a toggle that shows it (htmx polls it only while it is open).
// The status badge: when the terminal or the chat learns that the session is not running any
// more (stopped elsewhere, failed), they say so with a "lap:session-changed" event and the
// badge asks the API for the session's status once; there is no poll.
"use strict";
document.addEventListener("lap:session-changed", async () => {
  const badge = document.getElementById("session-status");
  try {
    const response = await fetch(badge.dataset.api, { headers: { Accept: "application/json" } });
    if (!response.ok) return;
    const { status } = await response.json();
    const shown = badge.querySelector(".status");
    shown.className = `status status-${status || "none"}`;
    shown.textContent = status || "—";
  } catch {
    // The platform is out of reach: the badge keeps what it said.
  }
});
document.addEventListener("DOMContentLoaded", () => {
  const panel = document.getElementById("vault-panel");
  const toggle = document.getElementById("vault-toggle");
  const show = (open) => {
    panel.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    toggle.setAttribute("aria-label", open ? "Hide the vault panel" : "Show the vault panel");
    if (open) htmx.trigger(document.getElementById("vault-body"), "every");
    window.dispatchEvent(new Event("resize")); // the terminal refits to the space left
  };
  toggle.addEventListener("click", () => show(panel.hidden));
  document.getElementById("vault-close").addEventListener("click", () => show(false));
});
