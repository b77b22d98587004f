// rltrace web UI: the theme switch (system, light, dark; kept in localStorage) and keyboard
// shortcuts. Every page works without this script.
(function () {
  "use strict";
  var root = document.documentElement;
  var KEY = "rltrace-theme";
  function stored() {
    try { return localStorage.getItem(KEY) || "system"; } catch (e) { return "system"; }
  }
  function apply(mode) {
    if (mode === "light" || mode === "dark") { root.setAttribute("data-theme", mode); }
    else { root.removeAttribute("data-theme"); }
  }
  apply(stored());
  function label(button) {
    var mode = stored();
    button.textContent = "Theme: " + mode;
    button.setAttribute("aria-label", "Theme: " + mode + " (switch)");
  }
  function cycle() {
    var next = { system: "light", light: "dark", dark: "system" }[stored()] || "system";
    try { localStorage.setItem(KEY, next); } catch (e) { /* private mode: this page only */ }
    apply(next);
    var b = document.getElementById("theme");
    if (b) { label(b); }
  }
  function typing(el) {
    return el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT" || el.isContentEditable);
  }
  function moveRow(step) {
    var links = Array.prototype.slice.call(document.querySelectorAll("a.row-link"));
    if (links.length === 0) { return; }
    var i = links.indexOf(document.activeElement);
    var next = i < 0 ? (step > 0 ? 0 : links.length - 1) : Math.max(0, Math.min(links.length - 1, i + step));
    links[next].focus();
  }
  document.addEventListener("DOMContentLoaded", function () {
    var b = document.getElementById("theme");
    if (b) { label(b); b.addEventListener("click", cycle); }
  });
  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || typing(ev.target)) { return; }
    if (ev.key === "/") {
      var f = document.querySelector("[data-search]") || document.querySelector("main input:not([type=hidden]), main textarea");
      if (f) { ev.preventDefault(); f.focus(); }
    } else if (ev.key === "j") { moveRow(1); }
    else if (ev.key === "k") { moveRow(-1); }
    else if (ev.key === "t") { cycle(); }
  });
})();
