// The agent form's secrets editor: "Add secret" appends a row from the formset's empty form.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const rows = document.getElementById("secret-rows");
  const template = document.getElementById("secret-row-template");
  const total = document.getElementById("id_secrets-TOTAL_FORMS");
  document.getElementById("add-secret").addEventListener("click", () => {
    const index = Number(total.value);
    const html = template.innerHTML.replaceAll("__prefix__", String(index));
    rows.insertAdjacentHTML("beforeend", html);
    total.value = String(index + 1);
    rows.lastElementChild.querySelector("input").focus();
  });
});
