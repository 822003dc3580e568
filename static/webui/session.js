// The session page's vault panel: a toggle that shows it (htmx polls it only while it is open).
"use strict";
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
