// The agent console: log in, go online, take conversations, answer (quick replies with "/"),
// internal notes, transfer, close; the customer's attributes beside the chat.
// Keyboard: Enter sends, Shift+Enter is a new line, Alt+↑/↓ moves between conversations,
// "/" at the start of the composer opens quick replies (↑/↓ and Enter pick one).
"use strict";
(() => {
  const {t, el, api, Connection, cid, renderContent, attachmentLoader, beep, toggleLang} = PD;
  const app = document.getElementById("app");
  const state = {token: sessionStorage.getItem("pd:token"), me: null, convs: new Map(), active: null, conn: null};
  let LEAD = false;
  const shop = typeof PDCommerce === "undefined" ? null : PDCommerce;  // web/commerce.js: orders and products, the cards
  const desk = window.PDTickets || null;    // web/tickets.js: departments' tickets, a ticket from the conversation

  function loginForm(error) {
    const merchant = el("input", {id: "merchant", value: "demo", "aria-label": t("merchant")});
    const username = el("input", {id: "username", autocomplete: "username", "aria-label": t("username")});
    const password = el("input", {id: "password", type: "password", autocomplete: "current-password", "aria-label": t("password")});
    const form = el("form", {class: "login", onsubmit: async (e) => {
      e.preventDefault();
      try {
        const res = await api("/api/v1/auth/login", {method: "POST", body: {merchant: merchant.value, username: username.value, password: password.value}});
        sessionStorage.setItem("pd:token", res.token);
        state.token = res.token; start();
      } catch (err) { loginForm(err.message); }
    }}, el("h2", {text: "peakdesk"}), el("label", {text: t("merchant")}), merchant, el("label", {text: t("username")}), username,
      el("label", {text: t("password")}), password, el("button", {type: "submit", id: "login", text: t("login")}),
      error ? el("div", {class: "error", role: "alert", text: error}) : "");
    app.replaceChildren(form);
    username.focus();
  }

  async function start() {
    try { state.me = await api("/api/v1/agents/me", {token: state.token}); }
    catch (err) { sessionStorage.removeItem("pd:token"); return loginForm(err.message); }
    state.load = attachmentLoader(state.token);
    LEAD = ["owner", "admin", "supervisor"].includes(state.me.role);
    if (shop) shop.attach({token: () => state.token, send: sendContent, customerOf: (s) => (state.convs.get(s) || {}).customer || ""});
    render();
    state.conn = new Connection(state.token, onFrame, (s) => { document.getElementById("link").textContent = s === "open" ? "●" : "○"; });
  }

  function render() {
    const status = el("select", {id: "status", "aria-label": t("status"), onchange: () => state.conn.send({t: "status", status: status.value})},
      ...["offline", "online", "busy", "away"].map((s) => el("option", {value: s, text: t(s)})));
    app.replaceChildren(
      el("header", {}, el("h1", {text: `peakdesk · ${state.me.name}`}), el("span", {id: "link", text: "○"}), status,
        el("button", {onclick: toggleLang, text: t("lang")})),
      el("div", {class: "layout"},
        el("nav", {class: "list"}, el("h2", {text: t("mine")}), el("div", {id: "convs"}),
          el("h2", {text: t("queued")}), el("div", {id: "queued"}), el("div", {id: "ticket-queue"}),
          ...(LEAD ? [el("h2", {text: t("all")}), el("div", {id: "all"})] : [])),
        el("main", {class: "chat", id: "chat"}, el("div", {class: "messages", id: "messages"})),
        el("div", {class: "side"}, el("aside", {id: "side"}), el("aside", {id: "commerce", class: "commerce"}),
          el("aside", {id: "tickets", class: "tickets"}), teamPane())));
    if (desk) desk.attach({token: () => state.token, me: () => state.me});
    renderList();
    poll(); setInterval(poll, 3000);
  }

  // Queued conversations of my groups (pick one), and for supervisors everyone's conversations.
  async function poll() {
    const queued = document.getElementById("queued"); if (!queued) return;
    const lists = await Promise.all((state.me.groups || []).map((g) =>
      api("/api/v1/queues/" + encodeURIComponent(g), {token: state.token}).then((r) => r.items.map((w) => ({...w, group: g}))).catch(() => [])));
    const waiting = lists.flat();
    queued.replaceChildren(...(waiting.length ? waiting.map((w) => el("div", {class: "conv", tabindex: "0", "data-queued": w.session_id,
      onclick: () => state.conn.send({t: "pick", session: w.session_id, group: w.group}),
      onkeydown: (e) => { if (e.key === "Enter") state.conn.send({t: "pick", session: w.session_id, group: w.group}); }},
      el("div", {text: `#${w.position} ${w.customer_id}`}), el("small", {text: `${w.group} · ${Math.round(w.waiting_s)}s`})))
      : [el("div", {class: "conv", text: t("none")})]));
    if (!LEAD) return;
    const live = await api("/api/v1/live", {token: state.token}).catch(() => null); if (!live) return;
    const all = live.agents.flatMap((a) => (a.sessions || []).map((s) => ({session: s, agent: a.name})));
    document.getElementById("all").replaceChildren(...(all.length ? all.map((x) => el("div", {class: "conv", tabindex: "0",
      "data-watch": x.session, onclick: () => { conv(x.session).watching = true; select(x.session); }},
      el("div", {text: x.agent}), el("small", {text: x.session.slice(0, 8)}))) : [el("div", {class: "conv", text: t("none")})]));
  }

  // Agents among themselves: a private chat with a colleague or the chat of one of my groups.
  function teamPane() {
    const to = el("select", {id: "team-to", "aria-label": t("team")});
    const box = el("div", {class: "messages", id: "team", style: "max-height:220px"});
    const input = el("input", {id: "team-input", placeholder: t("team"), "aria-label": t("team"), style: "width:100%"});
    input.addEventListener("keydown", (e) => {
      if (e.key !== "Enter" || !input.value.trim() || !to.value) return;
      const [kind, id] = to.value.split(":");
      state.conn.sendMessage({t: "chat", cid: cid(), text: input.value.trim(), ...(kind === "a" ? {to_agent: id} : {group: id})});
      teamLine({me: true, text: input.value.trim(), room: to.value});
      input.value = "";
    });
    api("/api/v1/agents", {token: state.token}).then((r) => {
      state.names = Object.fromEntries((r.items || []).map((a) => [a.agent_id, a.name]));
      to.replaceChildren(...(state.me.groups || []).map((g) => el("option", {value: "g:" + g, text: `# ${g}`})),
        ...(r.items || []).filter((a) => a.agent_id !== state.me.agent_id)
          .map((a) => el("option", {value: "a:" + a.agent_id, text: `@ ${a.name}`})));
    }).catch(() => {});
    return el("section", {}, el("h2", {text: t("team")}), to, box, input);
  }

  function teamLine({me, text, who, room}) {
    const box = document.getElementById("team"); if (!box) return;
    box.append(el("div", {class: "msg" + (me ? " mine" : ""), "data-room": room || ""},
      el("b", {text: me ? "" : `${who}: `}), el("span", {text})));
    box.scrollTop = box.scrollHeight;
  }

  function conv(session) {
    if (!state.convs.has(session)) state.convs.set(session, {session, customer: "", messages: [], unread: false, subscribed: false, closed: false});
    return state.convs.get(session);
  }

  function onFrame(f) {
    handleFrame(f);
    if (shop) shop.frame(f);
    if (desk) desk.frame(f);
  }

  function handleFrame(f) {
    if (f.t === "agent") {
      document.getElementById("status").value = f.status;
      for (const s of f.sessions) conv(s);
      renderList();
    } else if (f.t === "assigned") {
      const c = conv(f.session); c.customer = f.customer_id; c.unread = true; c.closed = false;
      beep(); document.title = "● " + t("new_conv"); renderList();
      if (!state.active) select(f.session);
    } else if (f.t === "released") {
      const c = conv(f.session); c.closed = true; addSystem(c, f.reason === "closed" ? t("closed") : t("transferred")); renderList();
    } else if (f.t === "msg") {
      const c = conv(f.session);
      if (f.cid && c.messages.some((m) => m.cid === f.cid)) return;  // our own, shown when sent
      c.messages.push(f);
      if (f.session === state.active) appendMessage(f); else { c.unread = true; renderList(); }
    } else if (f.t === "ack" && f.session && f.cid) {  // our message got its number: delivery reports use it
      const m = conv(f.session).messages.find((x) => x.cid === f.cid);
      if (m) m.seq = f.seq;
      const node = document.querySelector(`#messages .msg[data-cid="${CSS.escape(f.cid)}"]`);
      if (node) node.dataset.seq = f.seq;
    } else if (f.t === "delivery") {  // a channel conversation: what the platform did with our message
      const c = conv(f.session), m = c.messages.find((x) => x.seq === f.seq);
      if (m) { m.delivery = f.status; m.deliveryError = f.error || ""; }
      if (f.session === state.active) markDelivery(f);
      if (f.status === "failed") addSystem(c, `⚠ ${t("not_delivered")}: ${f.error || ""}`);
    } else if (f.t === "suggestions") {  // the bot's best knowledge-base answers to the customer's last message
      const c = conv(f.session); c.suggestions = f.items;
      if (f.session === state.active) renderSuggestions(c);
    } else if (f.t === "event" && f.session) {
      addSystem(conv(f.session), f.event + (f.by ? ` (${f.by})` : ""));
    } else if (f.t === "chat") {
      if ((f.from || {}).id === state.me.agent_id) return;  // ours, shown when sent
      teamLine({who: (state.names || {})[f.from.id] || f.from.id, text: f.text, room: f.room});
      if (!document.hasFocus()) beep();
    } else if (f.t === "error") {
      addSystem(conv(state.active || "_"), "⚠ " + f.message);
    }
  }

  function markDelivery(f) {
    const node = document.querySelector(`#messages .msg[data-seq="${Number(f.seq)}"]`); if (!node) return;
    node.dataset.delivery = f.status;
    node.title = f.status === "failed" ? `${t("not_delivered")}: ${f.error || ""}` : t("delivery_" + f.status);
  }

  function addSystem(c, text) {
    const m = {t: "sys", text}; c.messages.push(m);
    if (c.session === state.active) appendMessage(m);
  }

  function renderList() {
    const list = document.getElementById("convs"); if (!list) return;
    const items = [...state.convs.values()].filter((c) => c.session !== "_");
    list.replaceChildren(...(items.length ? items.map((c) => el("div", {
      class: "conv" + (c.session === state.active ? " active" : "") + (c.unread ? " unread" : ""), tabindex: "0",
      "data-session": c.session, onclick: () => select(c.session), onkeydown: (e) => { if (e.key === "Enter") select(c.session); },
    }, el("div", {text: c.customer || c.session.slice(0, 8)}), el("small", {text: c.closed ? t("closed") : c.session.slice(0, 8)})))
      : [el("div", {class: "conv", text: t("none")})]));
  }

  function select(session) {
    const c = conv(session); state.active = session; c.unread = false; document.title = "peakdesk";
    if (!c.subscribed) { c.subscribed = true; state.conn.send({t: "subscribe", session, after: state.conn.lastSeq[session] || 0}); }
    renderList(); renderChat(c); renderSide(c);
    if (shop) shop.select(c);  // loads on its own: never holds up the chat
    if (desk) desk.select(c);
  }

  function renderChat(c) {
    const messages = el("div", {class: "messages", id: "messages"});
    const input = el("textarea", {id: "composer", placeholder: t("placeholder"), "aria-label": t("send")});
    const note = el("input", {type: "checkbox", id: "as-note"});
    const quick = el("div", {class: "quick", id: "quick", hidden: ""});
    const send = () => {
      const text = input.value.trim(); if (!text) return;
      const id = cid();
      if (note.checked) state.conn.sendMessage({t: "note", cid: id, session: c.session, text});
      else state.conn.sendMessage({t: "msg", cid: id, session: c.session, kind: "text", content: {text}});
      const local = {t: "msg", mine: true, cid: id, kind: note.checked ? "note" : "text", internal: note.checked, content: {text}};
      c.messages.push(local); appendMessage(local);
      input.value = ""; quick.hidden = true;
    };
    input.addEventListener("keydown", (e) => {
      if (!quick.hidden && ["ArrowDown", "ArrowUp", "Enter"].includes(e.key)) return quickKey(e, quick, input);
      if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send(); }
      if (e.altKey && (e.key === "ArrowDown" || e.key === "ArrowUp")) { e.preventDefault(); move(e.key === "ArrowDown" ? 1 : -1); }
    });
    input.addEventListener("input", () => { if (input.value.startsWith("/")) showQuick(quick, input); else quick.hidden = true; });
    const transferTo = el("select", {id: "transfer-to", "aria-label": t("transfer")});
    loadTargets(transferTo);
    const tools = el("div", {class: "tools"},
      el("label", {}, note, " " + t("internal")),
      transferTo,
      el("button", {id: "transfer", text: t("transfer"), onclick: () => {
        const [kind, id] = transferTo.value.split(":");
        if (id) state.conn.send({t: "transfer", session: c.session, [kind === "a" ? "to_agent" : "to_group"]: id, note: input.value.trim()});
      }}),
      el("button", {id: "close", text: t("close"), onclick: () => state.conn.send({t: "close", session: c.session})}),
      el("input", {type: "file", id: "attach", "aria-label": t("attach"), onchange: (e) => upload(c, e.target)}),
      LEAD ? el("button", {id: "takeover", text: t("takeover"), onclick: () => state.conn.send({t: "takeover", session: c.session})}) : "");
    const chat = document.getElementById("chat");
    const suggestions = el("div", {class: "suggestions", id: "suggestions", hidden: ""});
    chat.replaceChildren(messages, suggestions, tools, el("div", {class: "composer"}, quick, input, el("button", {id: "send", text: t("send"), onclick: send})));
    c.sendText = (text) => { input.value = text; send(); };
    c.editText = (text) => { input.value = text; input.focus(); };
    for (const m of c.messages) appendMessage(m);
    renderSuggestions(c);
    input.focus();
  }

  function renderSuggestions(c) {
    const box = document.getElementById("suggestions"); if (!box) return;
    const items = c.suggestions || [];
    box.hidden = !items.length;
    box.replaceChildren(el("b", {text: t("suggestions")}), ...items.map((s) => el("div", {class: "suggestion", "data-entry": s.id},
      el("div", {class: "q", text: s.question}), el("div", {class: "a", text: s.answer}),
      el("button", {class: "use", text: t("use"), onclick: () => { c.suggestions = []; renderSuggestions(c); c.sendText(s.answer); }}),
      el("button", {class: "edit", text: t("edit"), onclick: () => c.editText(s.answer)}))));
  }

  async function upload(c, input) {
    const f = input.files[0]; if (!f) return;
    const res = await fetch("/api/v1/attachments?name=" + encodeURIComponent(f.name),
      {method: "POST", headers: {Authorization: "Bearer " + state.token, "Content-Type": f.type || "application/octet-stream"}, body: f});
    const meta = await res.json().catch(() => ({}));
    input.value = "";
    if (!res.ok) { addSystem(c, "⚠ " + (meta.message || res.statusText)); return; }
    const kind = ["image", "audio", "video"].find((k) => meta.mime.startsWith(k + "/")) || "file";
    sendContent(c, kind, {attachment_id: meta.attachment_id, name: meta.name, mime: meta.mime, size: meta.size});
  }

  // A message of any kind to the customer (attachments, product and order cards), shown at once.
  function sendContent(c, kind, content) {
    const id = cid();
    state.conn.sendMessage({t: "msg", cid: id, session: c.session, kind, content});
    const local = {t: "msg", mine: true, cid: id, kind, content}; c.messages.push(local);
    if (c.session === state.active) appendMessage(local);
  }

  function appendMessage(m) {
    const box = document.getElementById("messages"); if (!box) return;
    if (m.t === "sys") { box.append(el("div", {class: "msg system", text: m.text})); }
    else {
      const mine = m.mine || (m.from && m.from.kind === "agent" && m.from.id === state.me.agent_id);
      const bot = m.from && m.from.kind === "bot";  // what the bot told the customer before the handover
      const node = el("div", {class: "msg" + (mine ? " mine" : "") + (m.internal ? " internal" : "") + (bot ? " bot" : "")},
        bot ? el("small", {class: "who", text: t("bot")}) : "", (shop && shop.render(m)) || renderContent(m, state.load));
      for (const ch of (bot && m.content && m.content.choices) || []) node.append(el("div", {class: "choice", text: "• " + ch.question}));
      if (m.seq) node.dataset.seq = m.seq;
      if (m.delivery) node.dataset.delivery = m.delivery;
      if (m.cid) node.dataset.cid = m.cid;
      box.append(node);
    }
    box.scrollTop = box.scrollHeight;
  }

  async function showQuick(quick, input) {
    const q = input.value.slice(1);
    const res = await api("/api/v1/quick-replies" + (q ? "?q=" + encodeURIComponent(q) : ""), {token: state.token}).catch(() => ({items: []}));
    quick.replaceChildren(...(res.items || []).map((r, i) => el("div", {class: i === 0 ? "sel" : "", "data-text": r.text,
      onclick: () => { input.value = r.text; quick.hidden = true; input.focus(); }}, el("b", {text: r.shortcut + " "}), el("span", {text: r.text}))));
    quick.hidden = !(res.items || []).length;
  }

  function quickKey(e, quick, input) {
    const items = [...quick.children]; let i = items.findIndex((x) => x.classList.contains("sel"));
    e.preventDefault();
    if (e.key === "Enter") { if (items[i]) { input.value = items[i].dataset.text; quick.hidden = true; } return; }
    items[i] && items[i].classList.remove("sel");
    i = (i + (e.key === "ArrowDown" ? 1 : -1) + items.length) % items.length;
    items[i].classList.add("sel");
  }

  async function loadTargets(select) {
    const [agents, groups] = await Promise.all([
      api("/api/v1/agents", {token: state.token}).catch(() => ({items: []})),
      api("/api/v1/groups", {token: state.token}).catch(() => ({items: []}))]);
    select.replaceChildren(el("option", {value: "", text: "—"}),
      ...(agents.items || []).filter((a) => a.agent_id !== state.me.agent_id).map((a) => el("option", {value: "a:" + a.agent_id, text: `${t("to_agent")}: ${a.name}`})),
      ...(groups.items || []).map((g) => el("option", {value: "g:" + g.group_id, text: `${t("to_group")}: ${g.name}`})));
  }

  async function renderSide(c) {
    const side = document.getElementById("side");
    side.replaceChildren(el("h2", {text: t("customer")}));
    if (!c.customer || c.customer.startsWith("v_")) { side.append(el("p", {style: "margin:0 12px", text: t("visitor")})); return; }
    try {
      const cust = await api("/api/v1/customers/" + encodeURIComponent(c.customer), {token: state.token});
      const dl = el("dl", {id: "attributes"}, el("dt", {text: "ID"}), el("dd", {text: cust.customer_id}),
        el("dt", {text: t("visits")}), el("dd", {text: String(cust.visit_count)}));
      for (const [k, v] of Object.entries(cust.attributes || {})) dl.append(el("dt", {text: k}), el("dd", {text: String(v)}));
      side.append(dl);
      const past = await api(`/api/v1/customers/${encodeURIComponent(c.customer)}/conversations`, {token: state.token}).catch(() => ({items: []}));
      side.append(el("h2", {text: t("history")}), el("ul", {id: "history"}, ...past.items.map((p) =>
        el("li", {text: `${p.started.slice(0, 16)} · ${p.messages} ${t("messages")}${p.csat ? " · ★" + p.csat : ""}`}))));
    } catch (err) { side.append(el("p", {class: "error", text: err.message})); }
  }

  function move(step) {
    const keys = [...state.convs.keys()].filter((k) => k !== "_"); if (!keys.length) return;
    const i = Math.max(0, keys.indexOf(state.active));
    select(keys[(i + step + keys.length) % keys.length]);
  }

  if (state.token) start(); else loginForm();
})();
