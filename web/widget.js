// The peakdesk customer widget. Embed with one tag:
//   <script src="https://YOUR-PEAKDESK/widget.js" data-merchant="SHOP_ID" defer></script>
// Optional (docs/web.md): data-group="presales" (the group this page's conversations start in,
// unless a diversion rule says otherwise); data-product="rc-3l" (the product of this page: the
// customer can send it as a product card, and it is the conversation's entry.product_id; a
// single-page shop calls window.peakdesk.setProduct("rc-5l") instead); data-customer-id,
// data-ts and data-signature (a logged-in customer, signed by the merchant's server —
// docs/widget-identity.md: they can pick one of their own recent orders and send it).
// It draws a chat button in the merchant's theme, talks docs/protocol.md over a websocket,
// keeps the conversation across page loads and reconnects (resume by sequence number: nothing
// lost, nothing twice), uploads images, shows the queue position, and asks for a rating.
// Product and order cards and comparison tables are shown as cards.
// Customer and agent text is put in the page with textContent only.
(() => {
  "use strict";
  const script = document.currentScript;
  const merchant = script.dataset.merchant || "demo";
  const base = new URL(script.src, location.href);
  const origin = base.origin;
  const wsUrl = (base.protocol === "https:" ? "wss://" : "ws://") + base.host + "/ws";
  const data = script.dataset;
  // A signed customer keeps their own token and conversation, apart from the browser's visitor.
  const identity = data.customerId && data.ts && data.signature
    ? {customer_id: data.customerId, ts: Number(data.ts), signature: data.signature} : null;
  let scope = identity ? `c:${identity.customer_id}:` : "";
  const key = (k) => `pd:${merchant}:${scope}${k}`;
  const zh = !(navigator.language || "zh").startsWith("en");
  const T = zh ? {title: "在线客服", send: "发送", ph: "请输入…", queue: (p, m) => `排队中：第 ${p} 位，预计 ${m} 分钟`,
                  assigned: "客服已接入", closed: "会话已结束", rate: "请为本次服务评分", thanks: "感谢您的评价！",
                  image: "图片", hours: "非工作时间", bot: "智能助手", product: "发送商品", orders: "我的订单",
                  pick_order: "选择要发送的订单", no_orders: "暂无订单", unavailable: "订单系统暂不可用，请稍后再试",
                  order: "订单", total: "合计", send_order: "发送", close: "收起"}
               : {title: "Chat with us", send: "Send", ph: "Type a message…", queue: (p, m) => `In queue: #${p}, about ${m} min`,
                  assigned: "An agent has joined", closed: "Conversation closed", rate: "How did we do?",
                  thanks: "Thank you for your rating!", image: "Image", hours: "Outside business hours", bot: "Assistant",
                  product: "Send this product", orders: "My orders", pick_order: "Pick an order to send",
                  no_orders: "No orders yet", unavailable: "Orders can't be looked up right now; please try again later",
                  order: "Order", total: "Total", send_order: "Send", close: "Close"};
  const STATUS = {pending_payment: ["待付款", "Awaiting payment"], paid: ["已付款", "Paid"], processing: ["备货中", "Processing"],
                  shipped: ["已发货", "Shipped"], delivered: ["已签收", "Delivered"], completed: ["已完成", "Completed"],
                  cancelled: ["已取消", "Cancelled"], refunding: ["退款中", "Refunding"], refunded: ["已退款", "Refunded"]};
  const statusText = (s) => (STATUS[s] || [s, s])[zh ? 0 : 1];
  const HTTP = /^https?:\/\/\S+$/;
  const line = (s, n) => String(s || "").replace(/[\x00-\x1f\x7f]+/g, " ").trim().slice(0, n);
  const money = (price, currency) => !price ? "" : (!currency || currency === "CNY" ? "¥" + price : `${price} ${currency}`);

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
                 welcomed: false, outbox: [], customer: null, product: data.product || null, productInfo: null};
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
      .m.ticket{border-left:3px solid #f0a020;background:#fff8eb}
      .who{display:block;font-size:11px;color:#7b8794;margin-bottom:2px}
      .choices{display:flex;flex-direction:column;gap:4px;margin-top:6px}
      .choices button{text-align:left;border:1px solid ${primary};color:${primary};background:#fff;border-radius:6px;padding:4px 8px;cursor:pointer}
      .card{display:block;margin-top:6px;padding:6px;border:1px solid #e4e7eb;border-radius:6px;color:${primary}}
      .bar{display:flex;gap:6px;padding:8px;border-top:1px solid #e4e7eb}
      .bar input[type=text]{flex:1;padding:6px}
      .stars button{font-size:20px;border:0;background:none;cursor:pointer}
      img.att{max-width:200px;border-radius:6px}
      .pcard{display:flex;gap:8px;align-items:flex-start;margin-top:2px;white-space:normal}
      .pcard img{width:56px;height:56px;object-fit:cover;border-radius:4px;flex:none}
      .pcard .b{display:flex;flex-direction:column;gap:2px;min-width:0}
      .pcard .t{font-weight:600;color:${primary};overflow-wrap:anywhere;text-decoration:none}
      .price{color:#c2410c;font-weight:600}
      .st{font-size:12px;padding:0 6px;border-radius:8px;background:#e4e7eb;color:#1f2933}
      .items{color:#52606d;font-size:13px}
      table.cmp{border-collapse:collapse;font-size:12px;margin-top:6px;background:#fff;white-space:normal}
      table.cmp th,table.cmp td{border:1px solid #e4e7eb;padding:3px 6px;text-align:left;vertical-align:top}
      table.cmp thead th{background:#f4f6f8}
      .shop{display:flex;gap:6px;padding:6px 8px;border-top:1px solid #e4e7eb;align-items:center;flex-wrap:wrap}
      .shop[hidden],.olist[hidden]{display:none}
      .shop .here{flex:1;min-width:0;display:flex;gap:6px;align-items:center;font-size:12px;color:#52606d;overflow:hidden}
      .shop .here img{width:28px;height:28px;object-fit:cover;border-radius:4px}
      .shop .here span{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
      .shop button,.olist button{border:1px solid ${primary};color:${primary};background:#fff;border-radius:6px;padding:2px 8px;cursor:pointer;font-size:12px}
      .olist{max-height:190px;overflow-y:auto;border-top:1px solid #e4e7eb;padding:6px 8px;background:#fff;font-size:13px}
      .olist .o{display:flex;gap:6px;align-items:center;justify-content:space-between;padding:4px 0;border-bottom:1px dashed #e4e7eb}
      .olist .o div{min-width:0;overflow:hidden}
      .olist .hint{color:#7b8794;font-size:12px}
      .m:has(table.cmp){max-width:95%}
      .m .pcard+.pcard{margin-top:6px}`});
  }

  async function call(path, method = "GET", body) {
    const headers = {"Content-Type": "application/json"};
    if (state.token) headers.Authorization = "Bearer " + state.token;
    const res = await fetch(origin + path, {method, headers, body: body && JSON.stringify(body)});
    if (!res.ok) throw new Error(`${path}: ${res.status}`);
    return res.json();
  }

  // GET with the customer's token: {ok, status, data, message} — a failure never throws.
  async function get(path) {
    try {
      const res = await fetch(origin + path, {headers: {Authorization: "Bearer " + state.token}});
      const body = await res.json().catch(() => ({}));
      return {ok: res.ok, status: res.status, data: body, message: body.message || res.statusText};
    } catch (err) { return {ok: false, status: 0, data: {}, message: err.message}; }
  }

  let msgs, input, panel, title, shopBar, here, ordersBtn, productBtn, orderList;

  function build(settings) {
    const theme = settings.theme || {};
    title = el("span", {text: theme.nickname || settings.name || T.title});
    msgs = el("div", {class: "msgs", part: "messages"});
    input = el("input", {type: "text", placeholder: T.ph, "aria-label": T.ph, id: "pd-input"});
    input.addEventListener("keydown", (e) => { if (e.key === "Enter") sendText(); });
    const file = el("input", {type: "file", accept: "image/*", hidden: "", id: "pd-file", onchange: () => sendImage(file)});
    // The page's product and the customer's own orders, to send as cards (shown when there are any).
    here = el("div", {class: "here"});
    productBtn = el("button", {id: "pd-send-product", hidden: "", text: "🛍 " + T.product, onclick: sendProduct});
    ordersBtn = el("button", {id: "pd-orders", hidden: "", text: "📦 " + T.orders, "aria-expanded": "false", onclick: toggleOrders});
    shopBar = el("div", {class: "shop", hidden: ""}, here, productBtn, ordersBtn);
    orderList = el("div", {class: "olist", id: "pd-order-list", hidden: ""});
    panel = el("div", {class: "panel", hidden: ""},
      el("div", {class: "top"}, theme.avatar_url ? el("img", {src: theme.avatar_url, alt: ""}) : "", title),
      msgs, orderList, shopBar,
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
    } else if (f.kind === "product") {
      body = productCard(c);
    } else if (f.kind === "order") {
      body = orderCard(c);
    } else {
      // a drawn comparison replaces the plain-text table under its first line (channels without tables keep it)
      let text = c.comparison && c.text ? c.text.split("\n")[0] : c.text;
      if (c.ticket && text) text = text.replace(/^【[^】]*】/, "");   // the label above says which ticket
      body = el("span", {text: text || c.emoji || c.title || c.name || c.order_id || ""});
    }
    const bot = (f.from || {}).kind === "bot";
    const ticket = (f.from || {}).kind === "system" && c.ticket;  // a ticket of this conversation moved on
    const who = bot ? T.bot : ticket ? "工单 Ticket " + (c.ticket.number || "") : "";
    const box = el("div", {class: "m" + (mine ? " me" : "") + (bot ? " bot" : "") + (ticket ? " ticket" : ""),
      ...(ticket ? {"data-ticket": c.ticket.ticket_id} : {})}, who ? el("span", {class: "who", text: who}) : "", body);
    if (bot && c.choices && c.choices.length) {  // the bot's "did you mean": one tap picks an entry
      box.append(el("div", {class: "choices"}, ...c.choices.map((ch) => el("button", {text: ch.question, "data-choice": ch.id,
        onclick: () => submit("text", {text: ch.question, choice: ch.id})}))));
    }
    if (c.comparison && typeof c.comparison === "object") box.append(comparisonTable(c.comparison));
    for (const card of (bot && c.cards) || []) {
      if (card.type === "product" && card.product_id) box.append(productCard(card));  // e.g. the two of a comparison
      else if (/^https?:\/\//.test(card.url || "")) box.append(el("a", {class: "card", href: card.url, target: "_blank", rel: "noopener noreferrer", text: card.title}));
      else box.append(el("span", {class: "card", text: card.title}));
    }
    msgs.append(box);
    msgs.scrollTop = msgs.scrollHeight;
  }

  // -- cards --------------------------------------------------------------------------------------
  function productCard(p) {
    const name = HTTP.test(p.url || "") ? el("a", {class: "t", href: p.url, target: "_blank", rel: "noopener noreferrer", text: p.title || ""})
                                        : el("span", {class: "t", text: p.title || ""});
    return el("div", {class: "pcard product", "data-product-id": p.product_id || ""},
      HTTP.test(p.image_url || "") ? el("img", {src: p.image_url, alt: "", referrerpolicy: "no-referrer"}) : "",
      el("div", {class: "b"}, name, p.price ? el("span", {class: "price", text: money(p.price, p.currency)}) : ""));
  }

  function orderCard(o) {
    const items = (o.items || []).map((i) => `${i.title} ×${i.qty || 1}`).join(zh ? "，" : ", ");
    return el("div", {class: "pcard order", "data-order-id": o.order_id || ""},
      el("div", {class: "b"}, el("div", {}, el("b", {text: `${T.order} ${o.order_id || ""}`}), " ",
        el("span", {class: "st", "data-status": o.status || "", text: statusText(o.status || "")})),
        items ? el("span", {class: "items", text: items}) : "",
        o.total ? el("span", {class: "price", text: `${T.total} ${money(o.total, o.currency)}`}) : ""));
  }

  // {"products": [a, b], "rows": [{"name", "a", "b"}]} (rows as [name, a, b] also do)
  function comparisonTable(cmp) {
    const [a, b] = cmp.products || [];
    const name = (p) => (p && (p.title || p.product_id)) || "";
    const cell = (v) => el("td", {text: v === undefined || v === null ? "—" : String(v)});
    return el("table", {class: "cmp"},
      el("thead", {}, el("tr", {}, el("th", {text: ""}), el("th", {text: name(a)}), el("th", {text: name(b)}))),
      el("tbody", {}, ...(cmp.rows || []).map((r) => Array.isArray(r)
        ? el("tr", {}, el("th", {text: String(r[0])}), cell(r[1]), cell(r[2]))
        : el("tr", {}, el("th", {text: String(r.name || "")}), cell(r.a), cell(r.b)))));
  }

  // -- the page's product and the customer's orders -----------------------------------------------
  async function loadProduct() {
    const id = state.product;
    state.productInfo = null; productBtn.hidden = true; here.replaceChildren();
    if (id) {
      const res = await get("/api/v1/me/products/" + encodeURIComponent(id));
      if (id !== state.product) return;  // the page moved on meanwhile
      if (res.ok && res.data.product_id && res.data.product_id.length <= 64) {
        state.productInfo = res.data;
        here.replaceChildren(HTTP.test(res.data.image_url || "") ? el("img", {src: res.data.image_url, alt: "", referrerpolicy: "no-referrer"}) : "",
          el("span", {text: `${res.data.title} ${money(res.data.price, res.data.currency)}`}));
        productBtn.hidden = false;
      }
    }
    shopBar.hidden = productBtn.hidden && ordersBtn.hidden;
  }

  function sendProduct() {
    const p = state.productInfo; if (!p) return;
    const content = {product_id: p.product_id, title: line(p.title, 200) || p.product_id};
    if (p.price) content.price = p.price;
    if (p.currency) content.currency = p.currency;
    for (const k of ["image_url", "url"]) if (HTTP.test(p[k] || "") && p[k].length <= 2048) content[k] = p[k];
    submit("product", content);
  }

  async function toggleOrders() {
    if (!orderList.hidden) { orderList.hidden = true; ordersBtn.setAttribute("aria-expanded", "false"); return; }
    orderList.hidden = false; ordersBtn.setAttribute("aria-expanded", "true");
    orderList.replaceChildren(el("div", {class: "hint", text: "…"}));
    const res = await get("/api/v1/me/orders");
    if (!res.ok) {
      orderList.replaceChildren(el("div", {class: "hint", "data-state": res.status === 503 ? "unavailable" : "error",
                                           text: res.status === 503 || !res.status ? T.unavailable : res.message}));
      return;
    }
    const items = res.data.items || [];
    orderList.replaceChildren(el("div", {class: "hint", text: items.length ? T.pick_order : T.no_orders}),
      ...items.map((o) => el("div", {class: "o", "data-order": o.order_id},
        el("div", {}, el("b", {text: o.order_id}), " ", el("span", {class: "st", text: statusText(o.status)}),
          el("div", {class: "items", text: `${(o.items || []).map((i) => i.title).join(zh ? "，" : ", ")} ${money(o.total, o.currency)}`})),
        o.order_id.length <= 64 ? el("button", {class: "pd-send-order", "data-order": o.order_id, text: T.send_order, onclick: () => {
          orderList.hidden = true; ordersBtn.setAttribute("aria-expanded", "false");
          const content = {order_id: o.order_id, status: line(o.status, 32),
                           items: (o.items || []).slice(0, 50).map((i) => ({title: line(i.title, 200) || "—", qty: i.qty || 1}))};
          if (o.total) content.total = o.total;
          if (o.currency) content.currency = o.currency;
          submit("order", content);
        }}) : "")));
  }

  function connect() {
    const ws = state.ws = new WebSocket(wsUrl);
    ws.onopen = () => ws.send(JSON.stringify({t: "hello", token: state.token,
                                              resume: state.session ? {[state.session]: state.lastSeq} : {}}));
    ws.onmessage = (e) => onFrame(JSON.parse(e.data));
    ws.onclose = (e) => {
      state.welcomed = false;
      if (e.code === 4401) {  // an expired token: a new one (a signed customer's while the page's signature is fresh)
        localStorage.removeItem(key("token")); state.token = null; state.customer = null;
        return boot();
      }
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
    } else if (f.t === "error" && f.ref && f.ref === state.opening
               && (f.code === "too_many_sessions" || f.code === "unavailable")) {  // not now: open again later
      state.opening = null;
      setTimeout(ensureSession, 1000 * (f.retry_after_s || 2));
    } else if (f.t === "error" && f.code === "unavailable" && state.pending.has(f.ref)) {  // same cid: never twice
      const frame = state.pending.get(f.ref);
      setTimeout(() => {
        if (state.pending.get(f.ref) === frame && state.welcomed && state.ws.readyState === 1) state.ws.send(JSON.stringify(frame));
      }, 2000);
    }
  }

  function remember(seq) { if (seq > state.lastSeq) state.lastSeq = seq; }
  function forget() { state.session = null; state.lastSeq = 0; localStorage.removeItem(key("session")); }

  const queued = [];
  function ensureSession() {
    if (state.session || state.opening) return;
    state.opening = Math.random().toString(36).slice(2);
    wsSend({t: "open", id: state.opening, channel: "web",
            entry: {page: location.href.slice(0, 2000), ...(state.product ? {product_id: state.product} : {})},
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

  // The signature couldn't be used (stale, forged) and no token of the customer is left: carry on as the visitor.
  function asVisitor() {
    scope = ""; state.customer = null; ordersBtn.hidden = true; orderList.hidden = true;
    state.token = localStorage.getItem(key("token")); state.session = localStorage.getItem(key("session")); state.lastSeq = 0;
  }

  async function boot() {
    if (identity && scope && !state.customer) {  // a fresh signature from the page: a token of the customer
      try {
        const res = await call("/api/v1/auth/customer", "POST", {merchant, ...identity});
        state.token = res.token; localStorage.setItem(key("token"), res.token);
        state.customer = identity.customer_id;
      } catch (err) {
        if (state.token) state.customer = identity.customer_id; else asVisitor();
      }
    }
    if (!state.token) {
      let res;
      try { res = await call("/api/v1/auth/visitor", "POST", {merchant}); }
      catch (err) { setTimeout(boot, 30000); return; }  // e.g. 429: too many new visitors from this address
      state.token = res.token; localStorage.setItem(key("token"), res.token);
      forget();
    }
    ordersBtn.hidden = !state.customer;
    loadProduct();
    connect();
  }

  // For the host page (docs/web.md): a single-page shop tells the widget which product is shown.
  window.peakdesk = Object.assign(window.peakdesk || {}, {
    setProduct(productId) {
      const id = productId ? String(productId) : null;
      if (id === state.product) return;
      state.product = id;
      if (state.token && productBtn) loadProduct();
    },
  });

  call(`/api/v1/widget/${encodeURIComponent(merchant)}`).then((s) => { build(s); boot(); })
    .catch(() => { build({}); boot(); });
})();
