// wecom-edge console, "Try it": streams the answer of the question form as it is written.
// Served from the binary at /static/try.js (the CSP allows scripts from the console only).
// Part of wecom-edge, under the project's licence. No library.
//
// The form's POST /try is sent with "Accept: text/event-stream"; the answer comes back as
// server-sent events (event: text / final, data: JSON string) on the POST's own response,
// read with the Fetch API's stream reader. Without this script the form posts normally.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("ask");
  const out = document.getElementById("answer");
  const send = document.getElementById("send");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    send.disabled = true;
    out.textContent = "…";
    out.className = "streaming";
    try {
      const r = await fetch(form.action, {
        method: "POST",
        headers: { "Accept": "text/event-stream" },
        body: new URLSearchParams(new FormData(form)),
        credentials: "same-origin",
      });
      if (!r.ok || !r.body) {
        out.textContent = "The console refused the question (" + r.status + "). Reload the page.";
        out.className = "error";
        return;
      }
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          let event = "message", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
          }
          if (!data) continue;
          out.textContent = JSON.parse(data);
          if (event === "final") out.className = "final";
        }
      }
    } catch (err) {
      out.textContent = "The answer stopped: " + err;
      out.className = "error";
    } finally {
      send.disabled = false;
    }
  });
});
