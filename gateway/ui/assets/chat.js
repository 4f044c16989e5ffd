// Chat: one session with the agent (`chat.history`, `chat.send`), its reply streamed from `chat` delta events,
// and Abort (`chat.abort`) while a run is going.
(function () {
  "use strict";
  const OCS = window.OCS;
  const { h, clear, fmtTime } = OCS.dom;

  function textOf(message) {
    if (!message) return "";
    if (typeof message.content === "string") return message.content;
    return (message.content || []).map((c) => c.text || "").join("");
  }

  function create(ctx) {
    const session = h("input", { id: "chat-session", "aria-label": "session key", value: "" });
    const log = h("div", { class: "chat-log", id: "chat-log", role: "log" });
    const input = h("textarea", { id: "chat-input", rows: 3, placeholder: "Message the agent (Enter sends, Shift+Enter for a new line)",
      "aria-label": "message" });
    const send = h("button", { type: "submit", class: "primary", id: "chat-send", text: "Send" });
    const abort = h("button", { type: "button", id: "chat-abort", text: "Abort", disabled: true });
    const state = h("span", { class: "muted", id: "chat-state" });
    const form = h("form", { class: "composer" }, input, h("div", { class: "composer-actions" }, send, abort, state));
    const el = h("div", { class: "view view-chat" },
      h("div", { class: "row" }, h("h2", { text: "Chat" }), h("label", { class: "muted", text: "session " }), session),
      log, form);
    let runId = null;
    let bubble = null;

    function key() {
      return session.value.trim() || "agent:main:main";
    }

    function message(role, text, extra) {
      const el = h("div", { class: `msg msg-${role}` }, h("div", { class: "who", text: role }),
        h("div", { class: "text", text }), extra ? h("div", { class: "meta", text: extra }) : null);
      log.append(el);
      log.scrollTop = log.scrollHeight;
      return el;
    }

    function busy(on) {
      abort.disabled = !on;
      send.disabled = on;
      state.textContent = on ? "the agent is answering…" : "";
    }

    async function load() {
      if (!session.value && ctx.hello && ctx.hello.snapshot && ctx.hello.snapshot.sessionDefaults) {
        session.value = ctx.hello.snapshot.sessionDefaults.mainSessionKey || "agent:main:main";
      }
      // Sending waits for the history: a reply streamed into the log while it is being replaced would be lost.
      send.disabled = true;
      state.textContent = "loading the conversation…";
      try {
        const res = await ctx.gw.request("chat.history", { sessionKey: key(), limit: 50 });
        clear(log);
        for (const m of res.messages || []) message(m.role, textOf(m), fmtTime(m.timestamp));
        if (!(res.messages || []).length) log.append(h("p", { class: "muted", text: "No messages in this session yet." }));
        const active = res.sessionInfo && res.sessionInfo.activeRunIds;
        runId = active && active.length ? active[0] : null;
        if (bubble) log.append(bubble);
        busy(Boolean(runId) || Boolean(bubble));
      } catch (err) {
        clear(log).append(h("p", { class: "error", text: `chat.history failed: ${OCS.dom.errorText(err)}` }));
        busy(false);
      }
    }

    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const text = input.value.trim();
      if (!text || send.disabled) return;
      input.value = "";
      const placeholder = log.querySelector("p.muted");
      if (placeholder) placeholder.remove();
      message("user", text);
      bubble = message("assistant", "");
      bubble.classList.add("streaming");
      busy(true);
      try {
        const res = await ctx.gw.request("chat.send", { sessionKey: key(), message: text,
          idempotencyKey: OCS.dom.newId() });
        runId = res.runId;
      } catch (err) {
        bubble.querySelector(".text").textContent = `chat.send failed: ${OCS.dom.errorText(err)}`;
        bubble.classList.add("failed");
        busy(false);
      }
    });
    input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); form.requestSubmit(); }
    });
    abort.addEventListener("click", async () => {
      try {
        await ctx.gw.request("chat.abort", { sessionKey: key(), ...(runId ? { runId } : {}) });
      } catch (err) {
        ctx.toast(OCS.dom.errorText(err), "error");
      }
    });
    session.addEventListener("change", load);

    return {
      el,
      onConnected: load,
      onEvent(name, payload) {
        if (name !== "chat" || !payload || payload.sessionKey !== key()) return;
        if (runId && payload.runId !== runId) return;
        if (!bubble) {
          bubble = message("assistant", "");
          bubble.classList.add("streaming");
        }
        const text = bubble.querySelector(".text");
        if (payload.state === "delta") {
          text.textContent += payload.deltaText || "";
          log.scrollTop = log.scrollHeight;
          return;
        }
        bubble.classList.remove("streaming");
        if (payload.state === "final") {
          if (payload.message) text.textContent = textOf(payload.message);
        } else if (payload.state === "aborted") {
          bubble.classList.add("aborted");
          bubble.append(h("div", { class: "meta", text: "aborted" }));
        } else if (payload.state === "error") {
          bubble.classList.add("failed");
          bubble.append(h("div", { class: "meta error", text: payload.errorMessage || "the run failed" }));
        }
        bubble = null;
        runId = null;
        busy(false);
      },
    };
  }

  OCS.views.chat = { title: "Chat", create };
})();
