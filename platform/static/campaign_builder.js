/* The campaign builder, checked as it is typed.
 *
 * The server stays the authority: after each pause in typing the form is posted as it is to
 * the builder's check endpoint, which runs the checks saving the draft runs and answers the
 * errors by field (in the reader's language), the coupon preview and the participants'
 * stores. Here only what needs no rule is checked at once: required fields, the format of
 * amounts, percentages, whole numbers and days, and the shares' total. Errors are shown for
 * the fields the reader has been to. Without this script the form works by posting it.
 */
(() => {
  "use strict";
  const form = document.querySelector("form[data-builder]");
  if (!form) return;
  const messages = JSON.parse(document.getElementById("builder-messages").textContent);
  const amount = new RegExp(form.dataset.amountPattern);
  const whole = /^\s*\d+\s*$/;
  const percent = new Intl.NumberFormat(document.documentElement.lang, {
    style: "percent",
    maximumFractionDigits: 2,
  });
  const visited = new Set();
  let timer = 0;
  let sequence = 0;
  let inFlight = null;

  const box = (name) => form.querySelector(`[data-field="${name}"]`);
  const radio = (name) => form.querySelector(`input[name="${name}"]:checked`)?.value;

  function show(name, message) {
    const wrapper = box(name);
    if (!wrapper) return;
    let note = wrapper.querySelector(":scope > small.error");
    wrapper.classList.toggle("invalid", Boolean(message));
    for (const input of wrapper.querySelectorAll(":scope > input, :scope > select")) {
      if (message) {
        input.setAttribute("aria-invalid", "true");
        input.setAttribute("aria-describedby", `err-${name}`);
      } else {
        input.removeAttribute("aria-invalid");
        input.removeAttribute("aria-describedby");
      }
    }
    if (!message) {
      note?.remove();
      return;
    }
    if (!note) {
      note = document.createElement("small");
      note.className = "error";
      note.id = `err-${name}`;
      note.dataset.testid = `error-${name}`;
      wrapper.append(note);
    }
    note.textContent = message;
  }

  // Basis points of a typed percentage (the amount pattern: up to two decimals).
  function basisPoints(text) {
    const parts = amount.exec(text);
    return parts ? Number(parts[1]) * 100 + Number((parts[2] || "").padEnd(2, "0")) : null;
  }

  function sharesTotal() {
    let total = 0;
    for (const input of form.querySelectorAll("[data-share]")) {
      const partner = input.dataset.share;
      if ((partner && !form.elements[partner].value) || !input.value.trim()) continue;
      const share = basisPoints(input.value);
      if (share === null) return null;
      total += share;
    }
    return total;
  }

  function localProblems() {
    const found = {};
    for (const input of form.querySelectorAll("[required]")) {
      if (!input.value.trim()) found[input.name] = messages.required;
    }
    for (const input of form.querySelectorAll("[data-format]")) {
      const text = input.value.trim();
      const pattern = input.dataset.format === "whole" ? whole : amount;
      if (text && !found[input.name] && !pattern.test(text)) {
        found[input.name] = messages[input.dataset.format];
      }
    }
    const starts = form.elements.starts.value;
    const ends = form.elements.ends.value;
    if (starts && ends && ends < starts) found.ends = messages.ends;
    return found;
  }

  function showTotal() {
    const total = sharesTotal();
    const output = document.getElementById("shares-total");
    output.textContent =
      total === null ? "" : messages.sharesTotal.replace("{total}", percent.format(total / 10000));
    output.dataset.state = total === null ? "" : total === 10000 ? "ok" : "off";
  }

  function showRelevantFields() {
    const kind = form.elements.offer_kind.value;
    for (const wrapper of form.querySelectorAll("[data-kinds]")) {
      wrapper.hidden = !wrapper.dataset.kinds.split(" ").includes(kind);
    }
    const audience = radio("audience_kind") || "open";
    for (const wrapper of form.querySelectorAll("[data-audience]")) {
      wrapper.hidden = wrapper.dataset.audience !== audience;
    }
    document.getElementById("store-groups").hidden = radio("store_scope") !== "chosen";
  }

  const partners = () =>
    [...form.querySelectorAll("select[name^=partner_]")]
      .map((select) => select.value)
      .filter(Boolean)
      .join(",");

  function apply(result) {
    const local = localProblems();
    for (const wrapper of form.querySelectorAll("[data-field]")) {
      const name = wrapper.dataset.field;
      if (visited.has(name)) show(name, local[name] || result.errors[name] || "");
    }
    document.getElementById("coupon-preview").outerHTML = result.preview;
    if (document.getElementById("store-groups").dataset.partners !== partners()) {
      document.getElementById("store-groups").outerHTML = result.stores;
    }
    if (result.valid) document.querySelector("[data-testid=alert]")?.remove();
    showRelevantFields();
  }

  async function check() {
    const mine = ++sequence;
    inFlight?.abort();
    inFlight = new AbortController();
    let result;
    try {
      const response = await fetch(form.dataset.check, {
        method: "POST",
        body: new URLSearchParams(new FormData(form)),
        headers: { Accept: "application/json" },
        credentials: "same-origin",
        signal: inFlight.signal,
      });
      if (!response.ok) return;
      result = await response.json();
    } catch {
      return; // replaced by a newer check, or offline: the submit is checked anyway
    }
    if (mine === sequence) apply(result);
  }

  // The fields an edit of this input concerns: its own, and those it is checked with.
  function visit(input) {
    const names = [input.closest("[data-field]")?.dataset.field];
    names.push(...(input.dataset.touches || "").split(" "));
    const found = names.filter(Boolean);
    for (const name of found) visited.add(name);
    return found;
  }

  function edited(event) {
    if (!event.target.name) return;
    const local = localProblems();
    for (const name of visit(event.target)) show(name, local[name] || "");
    showTotal();
    showRelevantFields();
    clearTimeout(timer);
    timer = setTimeout(check, 300);
  }

  form.addEventListener("input", edited);
  form.addEventListener("change", edited);
  form.addEventListener("focusout", (event) => {
    if (!event.target.name) return;
    const local = localProblems();
    for (const name of visit(event.target)) if (local[name]) show(name, local[name]);
  });
  // Errors the server rendered stay up to date as their fields change.
  for (const wrapper of form.querySelectorAll("[data-field].invalid")) {
    visited.add(wrapper.dataset.field);
  }
  showTotal();
  showRelevantFields();
})();
