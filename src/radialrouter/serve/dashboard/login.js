// Login form: carry ?next= through the form, and say when the last key was wrong.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const p = new URLSearchParams(window.location.search);
  if (p.get("next")) document.getElementById("next").value = p.get("next");
  if (p.get("failed")) document.getElementById("error").classList.remove("hidden");
  document.body.dataset.ready = "1";
});
