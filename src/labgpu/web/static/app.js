// labgpu portal: copy buttons. A button with data-copy="ID" copies the text of element ID.
"use strict";
document.addEventListener("click", function (event) {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const done = function () {
    const label = button.textContent;
    button.textContent = button.dataset.copied || "✓";
    setTimeout(function () { button.textContent = label; }, 1500);
  };
  const text = source.textContent;
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done);
  } else {
    const area = document.createElement("textarea");
    area.value = text;
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
    done();
  }
});

// Files page: uploads stream each chosen file as the request body (no form encoding), with the page's CSRF
// token in a header; the page reloads when all are done.
document.addEventListener("submit", function (event) {
  const form = event.target.closest("form#upload-form");
  if (!form) return;
  event.preventDefault();
  const input = form.querySelector("input[type=file]");
  const status = form.querySelector("#upload-status");
  const token = form.querySelector("input[name=csrf_token]").value;
  const files = Array.from(input.files || []);
  if (!files.length) return;
  const sendNext = function (index) {
    if (index >= files.length) {
      status.textContent = form.dataset.done;
      window.location.reload();
      return;
    }
    const file = files[index];
    status.textContent = file.name + " …";
    const url = form.dataset.url + "&filename=" + encodeURIComponent(file.name);
    fetch(url, { method: "PUT", body: file, headers: { "X-CSRF-Token": token }, credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error(String(response.status));
        sendNext(index + 1);
      })
      .catch(function (error) { status.textContent = form.dataset.failed + " (" + file.name + ": " + error.message + ")"; });
  };
  sendNext(0);
});
