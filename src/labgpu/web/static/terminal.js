// labgpu portal: the terminal page. xterm.js (vendored, static/vendor/xterm) shows what the portal's WebSocket
// sends (the container's pty); keystrokes and pastes go back as binary frames, window sizes as JSON text.
"use strict";
(function () {
  const box = document.getElementById("terminal");
  if (!box || !window.Terminal || !window.FitAddon) return;
  // xterm.js's own words for screen readers, in the page's language.
  window.Terminal.strings.promptLabel = box.dataset.msgPrompt || "Terminal input";
  window.Terminal.strings.tooMuchOutput = box.dataset.msgTooMuch || "";
  const term = new window.Terminal({
    cursorBlink: true,
    scrollback: 10000,
    fontFamily: "ui-monospace, 'DejaVu Sans Mono', 'Noto Sans Mono CJK SC', Menlo, Consolas, monospace",
    fontSize: 14,
  });
  const fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();

  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const url = scheme + location.host + box.dataset.ws + "?cols=" + term.cols + "&rows=" + term.rows;
  const socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  const encoder = new TextEncoder();
  // 1012: the server restarts (uvicorn closes open WebSockets so when it stops).
  const reasons = { 1000: "exited", 1012: "shutdown", 4000: "idle", 4001: "logged-out", 4002: "shutdown", 4003: "failed" };
  let opened = false;
  window.labgpuTerminal = { term: term, socket: socket };  // for the browser tests and the curious

  const send = function (data) {
    if (socket.readyState === WebSocket.OPEN) socket.send(data);
  };
  socket.addEventListener("open", function () {
    opened = true;
    box.dataset.state = "open";
    term.focus();
  });
  socket.addEventListener("message", function (event) {
    if (typeof event.data !== "string") term.write(new Uint8Array(event.data));
  });
  socket.addEventListener("close", function (event) {
    const reason = opened ? reasons[event.code] || "failed" : "refused";
    box.dataset.state = "closed";
    box.dataset.closeCode = String(event.code);
    const text = box.dataset["msg" + reason.split("-").map(function (w) {
      return w.charAt(0).toUpperCase() + w.slice(1);
    }).join("")] || "";
    term.write("\r\n\x1b[2m" + text + "\x1b[0m\r\n");
  });
  term.onData(function (data) { send(encoder.encode(data)); });
  term.onBinary(function (data) {
    const bytes = new Uint8Array(data.length);
    for (let i = 0; i < data.length; i++) bytes[i] = data.charCodeAt(i) & 0xff;
    send(bytes);
  });
  term.onResize(function (size) {
    send(JSON.stringify({ type: "resize", cols: size.cols, rows: size.rows }));
  });
  // Ctrl+Shift+C copies the selection (Ctrl+C stays the shell's interrupt); Ctrl+Shift+V is the browser's paste.
  term.attachCustomKeyEventHandler(function (event) {
    if (event.type === "keydown" && event.ctrlKey && event.shiftKey && event.code === "KeyC") {
      const text = term.getSelection();
      if (text && navigator.clipboard) navigator.clipboard.writeText(text);
      return false;
    }
    return !(event.ctrlKey && event.shiftKey && event.code === "KeyV");
  });
  let pending = 0;
  window.addEventListener("resize", function () {
    clearTimeout(pending);
    pending = setTimeout(function () { fit.fit(); }, 100);
  });
})();
