// The peakdesk customer widget. Embed with one tag:
//   <script src="https://YOUR-PEAKDESK/widget.js" data-merchant="SHOP_ID" defer></script>
// (optional data-group="presales": the group this page's conversations start in, unless a
// diversion rule says otherwise)
// It draws a chat button in the merchant's theme, talks docs/protocol.md over a websocket,
// keeps the conversation across page loads and reconnects (resume by sequence number: nothing
// lost, nothing twice), uploads images, shows the queue position, and asks for a rating.
// Customer and agent text is put in the page with textContent only.
(() => {
  "use strict";
  const script = document.currentScript;
  const merchant = script.dataset.merchant || "demo";
  const base = new URL(script.src, location.href);
  const origin = base.origin;
  const wsUrl = (base.protocol === "https:" ? "wss://" : "ws://") + base.host + "/ws";
  const key = (k) => `pd:${merchant}:${k}`;
  const zh = !(navigator.language || "zh").startsWith("en");
  const T = zh ? {title: "在线客服", send: "发送", ph: "请输入…", queue: (p, m) => `排队中：第 ${p} 位，预计 ${m} 分钟`,
                  assigned: "客服已接入", closed: "会话已结束", rate: "请为本次服务评分", thanks: "感谢您的评价！",
                  image: "图片", hours: "非工作时间", bot: "智能助手"}
               : {title: "Chat with us", send: "Send", ph: "Type a message…", queue: (p, m) => `In queue: #${p}, about ${m} min`,
                  assigned: "An agent has joined", closed: "Conversation closed", rate: "How did we do?",
                  thanks: "Thank you for your rating!", image: "Image", hours: "Outside business hours", bot: "Assistant"};

  const host = document.createElement("div");
  host.id = "peakdesk-widget";
  document.body.appendChild(host);
  const root = host.attachShadow({mode: "open"});
  const el = (tag, attrs = {}, ...kids) => {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") n.textContent = v; else if (k.startsWith("on")) n.addEventListener(k.slice(2), v); else n.setAttribute(k, v);
    }
    n.append(...kids); return n;
  };

  // lastSeq starts at 0 on every page load, so the conversation's history is shown again; within
  // a page it is what reconnects resume from.
  const state = {token: localStorage.getItem(key("token")), session: localStorage.getItem(key("session")),
                 lastSeq: 0, pending: new Map(), ws: null, delay: 500, shown: new Set(), opening: null,
                 welcomed: false, outbox: []};
  // Frames wait for the connection's welcome (a customer may type before it is up).
  const wsSend = (frame) => {
    if (state.welcomed && state.ws.readyState === 1) state.ws.send(JSON.stringify(frame)); else state.outbox.push(frame);
  };

  function style(theme) {
    const primary = theme.primary_color || "#1f3a5f";
    return el("style", {text: `
      .btn{position:fixed;right:20px;bottom:20px;width:56px;height:56px;border-radius:50%;border:0;background:${primary};color:#fff;font-size:24px;cursor:pointer;box-shadow:0 2px 8px #0004}
      .panel{position:fixed;right:20px;bottom:86px;width:340px;height:480px;background:#fff;border-radius:10px;box-shadow:0 4px 16px #0003;display:flex;flex-direction:column;font:14px system-ui,"PingFang SC",sans-serif;overflow:hidden}
      .panel[hidden]{display:none}
      .top{background:${primary};color:#fff;padding:10px;display:flex;gap:8px;align-items:center}
      .top img{width:28px;height:28px;border-radius:50%}
      .msgs{flex:1;overflow-y:auto;padding:10px;display:flex;flex-direction:column;gap:6px;background:#f6f7f9}
      .m{max-width:78%;padding:6px 10px;border-radius:8px;background:#fff;white-space:pre-wrap;word-break:break-word}
      .m.me{align-self:flex-end;background:${theme.accent_color || "#d1e7ff"}}
      .sys{align-self:center;color:#7b8794;font-size:12px}
      .m.bot{border:1px solid #e4e7eb}
      .who{display:block;font-size:11px;color:#7b8794;margin-bottom:2px}
      .choices{display:flex;flex-direction:column;gap:4px;margin-top:6px}
      .choices button{text-align:left;border:1px solid ${primary};color:${primary};background:#fff;border-radius:6px;padding:4px 8px;cursor:pointer}
      .card{display:block;margin-top:6px;padding:6px;border:1px solid #e4e7eb;border-radius:6px;color:${primary}}
      .bar{display:flex;gap:6px;padding:8px;border-top:1px solid #e4e7eb}
      .bar input[type=text]{flex:1;padding:6px}
      .stars button{font-size:20px;border:0;background:none;cursor:pointer}
      img.att{max-width:200px;border-radius:6px}`});
  }

  async function call(path, method = "GET", body) {
    const headers = {"Content-Type": "application/json"};
    if (state.token) headers.Authorization = "Bearer " + state.token;
    const res = await fetch(origin + path, {method, headers, body: body && JSON.stringify(body)});
    if (!res.ok) throw new Error(`${path}: ${res.status}`);
    return res.json();
  }

  let msgs, input, panel, title;

  function build(settings) {
    const theme = settings.theme || {};
    title = el("span", {text: theme.nickname || settings.name || T.title});
    msgs = el("div", {class: "msgs", part: "messages"});
    input = el("input", {type: "text", placeholder: T.ph, "aria-label": T.ph, id: "pd-input"});
    input.addEventListener("keydown", (e) => { if (e.key === "Enter") sendText(); });
    const file = el("input", {type: "file", accept: "image/*", hidden: "", id: "pd-file", onchange: () => sendImage(file)});
    panel = el("div", {class: "panel", hidden: ""},
      el("div", {class: "top"}, theme.avatar_url ? el("img", {src: theme.avatar_url, alt: ""}) : "", title),
      msgs,
      el("div", {class: "bar"}, input, file, el("button", {text: "🖼", title: T.image, "aria-label": T.image, onclick: () => file.click()}),
        el("button", {id: "pd-send", text: T.send, onclick: sendText})));
    // With the merchant's bot, opening the panel opens the conversation: the bot greets first.
    const btn = el("button", {class: "btn", id: "pd-open", "aria-label": T.title, text: "💬", onclick: () => {
      panel.hidden = !panel.hidden;
      if (!panel.hidden) { input.focus(); if (settings.bot) ensureSession(); }
    }});
    if (theme.icon_url) btn.replaceChildren(el("img", {src: theme.icon_url, alt: "", width: "28"}));
    root.append(style(theme), panel, btn);
    if (settings.welcome_message && !state.session && !settings.bot) system(settings.welcome_message);
  }

  function system(text) { msgs.append(el("div", {class: "m sys", text})); msgs.scrollTop = msgs.scrollHeight; }

  function show(f, mine) {
    const c = f.content || {};
    let body;
    if (f.kind === "image") {
      body = el("img", {class: "att", alt: c.name || T.image});
      fetch(`${origin}/api/v1/attachments/${c.attachment_id}`, {headers: {Authorization: "Bearer " + state.token}})
        .then((r) => r.blob()).then((b) => { body.src = URL.createObjectURL(b); });
    } else if (f.kind === "rich") {
      body = el("span", {text: new DOMParser().parseFromString(c.html || "", "text/html").body.textContent});
    } else {
      body = el("span", {text: c.text || c.emoji || c.title || c.name || c.order_id || ""});
    }
    const bot = (f.from || {}).kind === "bot";
    const box = el("div", {class: "m" + (mine ? " me" : "") + (bot ? " bot" : "")}, bot ? el("span", {class: "who", text: T.bot}) : "", body);
    if (bot && c.choices && c.choices.length) {  // the bot's "did you mean": one tap picks an entry
      box.append(el("div", {class: "choices"}, ...c.choices.map((ch) => el("button", {text: ch.question, "data-choice": ch.id,
        onclick: () => submit("text", {text: ch.question, choice: ch.id})}))));
    }
    for (const card of (bot && c.cards) || []) {
      if (/^https?:\/\//.test(card.url || "")) box.append(el("a", {class: "card", href: card.url, target: "_blank", rel: "noopener noreferrer", text: card.title}));
      else box.append(el("span", {class: "card", text: card.title}));
    }
    msgs.append(box);
    msgs.scrollTop = msgs.scrollHeight;
  }

  function connect() {
    const ws = state.ws = new WebSocket(wsUrl);
    ws.onopen = () => ws.send(JSON.stringify({t: "hello", token: state.token,
                                              resume: state.session ? {[state.session]: state.lastSeq} : {}}));
    ws.onmessage = (e) => onFrame(JSON.parse(e.data));
    ws.onclose = (e) => {
      state.welcomed = false;
      if (e.code === 4401) { localStorage.removeItem(key("token")); state.token = null; return boot(); }
      setTimeout(connect, state.delay); state.delay = Math.min(state.delay * 2, 10000);
    };
  }

  function onFrame(f) {
    if (f.t === "welcome") {
      state.delay = 500; state.welcomed = true;
      const waiting = state.outbox; state.outbox = [];
      for (const w of waiting) state.ws.send(JSON.stringify(w));
      for (const p of state.pending.values()) state.ws.send(JSON.stringify(p));
    }
    else if (f.t === "opened") { state.session = f.session; localStorage.setItem(key("session"), f.session); flushQueued(); }
    else if (f.t === "msg") {
      if (f.seq <= state.lastSeq || state.shown.has(f.cid)) { remember(f.seq); return; }
      remember(f.seq); show(f, ["customer", "visitor"].includes((f.from || {}).kind));
    } else if (f.t === "ack") { state.pending.delete(f.cid); remember(f.seq); }
    else if (f.t === "queue") { system(T.queue(f.position, Math.max(1, Math.round(f.eta_s / 60)))); }
    else if (f.t === "event") {
      if (f.event === "session.assigned") system(T.assigned);
      if (f.event === "outside_hours") system(f.message || T.hours);
      if (f.event === "session.closed") { system(T.closed); }
      if (f.event === "csat.invite") askRating();
      if (f.event === "csat.rated") system(T.thanks);
    } else if (f.t === "error" && f.code === "session_closed") {  // closed long ago: start a new one
      const frame = state.pending.get(f.ref);
      forget();
      if (frame) { state.pending.delete(f.ref); queued.push(frame); ensureSession(); }
    }
  }

  function remember(seq) { if (seq > state.lastSeq) state.lastSeq = seq; }
  function forget() { state.session = null; state.lastSeq = 0; localStorage.removeItem(key("session")); }

  const queued = [];
  function ensureSession() {
    if (state.session || state.opening) return;
    state.opening = Math.random().toString(36).slice(2);
    wsSend({t: "open", id: state.opening, channel: "web", entry: {page: location.href.slice(0, 2000)},
            ...(script.dataset.group ? {group: script.dataset.group} : {})});
  }
  function flushQueued() { state.opening = null; while (queued.length) post(queued.shift()); }

  function post(msg) {
    const frame = {t: "msg", cid: msg.cid, session: state.session, kind: msg.kind, content: msg.content};
    state.pending.set(msg.cid, frame);  // sent now if connected, else at the welcome; kept until acked
    if (state.welcomed && state.ws.readyState === 1) state.ws.send(JSON.stringify(frame));
  }

  function submit(kind, content) {
    const msg = {cid: Math.random().toString(36).slice(2) + Date.now().toString(36), kind, content};
    state.shown.add(msg.cid);
    show(msg, true);
    if (state.session) post(msg); else { queued.push(msg); ensureSession(); }
  }

  function sendText() { const text = input.value.trim(); if (text) { input.value = ""; submit("text", {text}); } }

  async function sendImage(file) {
    const f = file.files[0]; if (!f) return;
    const res = await fetch(`${origin}/api/v1/attachments?name=${encodeURIComponent(f.name)}`,
      {method: "POST", headers: {Authorization: "Bearer " + state.token, "Content-Type": f.type}, body: f});
    if (!res.ok) { system((await res.json().catch(() => ({}))).message || "upload failed"); return; }
    const meta = await res.json();
    submit("image", {attachment_id: meta.attachment_id, name: meta.name, mime: meta.mime, size: meta.size});
    file.value = "";
  }

  function askRating() {
    const comment = el("input", {type: "text", placeholder: "…", id: "pd-comment"});
    const box = el("div", {class: "m sys", id: "pd-csat"}, el("div", {text: T.rate}),
      el("div", {class: "stars"}, ...[1, 2, 3, 4, 5].map((n) => el("button", {text: "★", "data-score": String(n), "aria-label": String(n),
        onclick: () => { wsSend({t: "csat", session: state.session, score: n, comment: comment.value}); box.remove(); }}))),
      comment);
    msgs.append(box); msgs.scrollTop = msgs.scrollHeight;
  }

  async function boot() {
    if (!state.token) {
      const res = await call("/api/v1/auth/visitor", "POST", {merchant});
      state.token = res.token; localStorage.setItem(key("token"), res.token);
      forget();
    }
    connect();
  }

  call(`/api/v1/widget/${encodeURIComponent(merchant)}`).then((s) => { build(s); boot(); })
    .catch(() => { build({}); boot(); });
})();
