// The console's commerce side panel (docs/commerce.md, docs/web.md) and the product, order and
// comparison cards in the chat. Beside a conversation: the product the customer asked about
// (the widget's entry page, or the last product card the customer sent), the customer's recent
// orders with status, items, total and tracking (expand one), a product search whose results go
// to the customer as a product card in one click, and a side-by-side comparison of two products
// that can be sent too. Everything loads on its own after the chat is shown and never holds it
// up; a merchant's system that is down shows "系统暂不可用 / unavailable" with the reason.
// Text from customers and merchants goes into the page with textContent only.
"use strict";
const PDCommerce = (() => {
  const {el, LANG} = PD;
  const T = {
    zh: {panel: "商品与订单", asked: "咨询的商品", from_entry: "来自进入页面", from_card: "客户发送的商品", orders: "最近订单",
         search: "搜索商品", search_ph: "商品名称或类目", find: "搜索", compare: "商品对比", pick: "对比", picked: "已选",
         send: "发送", send_card: "发送给客户", send_compare: "发送对比", loading: "加载中…", none: "无",
         no_orders: "暂无订单", visitor: "访客未登录，没有订单", unavailable: "系统暂不可用", retry: "重试", items: "商品",
         total: "合计", carrier: "承运", tracking_no: "运单号", no_tracking: "暂无物流信息", pick_two: "选择两件商品进行对比",
         no_results: "没有找到商品", verified: "已核实", not_verified: "未找到该客户的此订单", stock: "库存", price: "价格",
         order: "订单", comparison: "商品对比", sent: "已发送"},
    en: {panel: "Orders & products", asked: "Product asked about", from_entry: "from the entry page",
         from_card: "sent by the customer", orders: "Recent orders", search: "Search products", search_ph: "Product or category",
         find: "Search", compare: "Compare", pick: "Compare", picked: "Picked", send: "Send", send_card: "Send to customer",
         send_compare: "Send comparison", loading: "Loading…", none: "None", no_orders: "No orders yet",
         visitor: "Anonymous visitor: no orders", unavailable: "Unavailable", retry: "Retry", items: "Items", total: "Total",
         carrier: "Carrier", tracking_no: "Tracking no.", no_tracking: "No tracking yet", pick_two: "Pick two products to compare",
         no_results: "No products found", verified: "verified", not_verified: "not an order of this customer", stock: "Stock",
         price: "Price", order: "Order", comparison: "Comparison", sent: "Sent"},
  };
  const t = (k) => T[LANG][k] || T.zh[k] || k;
  const STATUS = {pending_payment: ["待付款", "Awaiting payment"], paid: ["已付款", "Paid"], processing: ["备货中", "Processing"],
                  shipped: ["已发货", "Shipped"], delivered: ["已签收", "Delivered"], completed: ["已完成", "Completed"],
                  cancelled: ["已取消", "Cancelled"], refunding: ["退款中", "Refunding"], refunded: ["已退款", "Refunded"]};
  const statusText = (s) => (STATUS[s] || [s, s])[LANG === "en" ? 1 : 0];
  const HTTP = /^https?:\/\/\S+$/;
  const line = (s, n) => String(s || "").replace(/[\x00-\x1f\x7f]+/g, " ").trim().slice(0, n);
  const money = (price, currency) => !price ? "" : (!currency || currency === "CNY" ? "¥" + price : `${price} ${currency}`);

  // -- the cards: what the protocol's `product` and `order` messages carry ------------------------
  function productContent(p) {
    const c = {product_id: p.product_id, title: line(p.title, 200) || p.product_id};
    if (p.price) c.price = p.price;
    if (p.currency) c.currency = p.currency;
    for (const k of ["image_url", "url"]) if (HTTP.test(p[k] || "") && p[k].length <= 2048) c[k] = p[k];
    return c;
  }

  function orderContent(o) {
    const c = {order_id: o.order_id, status: line(o.status, 32),
               items: (o.items || []).slice(0, 50).map((i) => ({title: line(i.title, 200) || "—", qty: i.qty || 1}))};
    if (o.total) c.total = o.total;
    if (o.currency) c.currency = o.currency;
    return c;
  }

  function productCard(p) {
    const title = HTTP.test(p.url || "") ? el("a", {class: "pd-title", href: p.url, target: "_blank", rel: "noopener noreferrer", text: p.title || p.product_id})
                                         : el("span", {class: "pd-title", text: p.title || p.product_id});
    return el("div", {class: "pd-card pd-product", "data-product-id": p.product_id || ""},
      HTTP.test(p.image_url || "") ? el("img", {src: p.image_url, alt: "", referrerpolicy: "no-referrer", loading: "lazy"}) : "",
      el("div", {class: "pd-body"}, title, el("span", {class: "pd-price", text: money(p.price, p.currency)}),
        typeof p.stock === "number" ? el("small", {text: `${t("stock")} ${p.stock}`}) : ""));
  }

  function orderCard(o) {
    const items = (o.items || []).map((i) => `${i.title} ×${i.qty || 1}`).join("，");
    return el("div", {class: "pd-card pd-order", "data-order-id": o.order_id || ""},
      el("div", {class: "pd-body"},
        el("div", {}, el("b", {text: `${t("order")} ${o.order_id || ""}`}), " ",
          el("span", {class: "pd-status", "data-status": o.status || "", text: statusText(o.status || "")})),
        items ? el("div", {class: "pd-items", text: items}) : "",
        o.total ? el("div", {class: "pd-price", text: `${t("total")} ${money(o.total, o.currency)}`}) : ""));
  }

  // {"products": [a, b], "rows": [{"name", "a", "b"}]} from the bot, or the REST answer's rows [name, a, b]
  function comparisonTable(cmp) {
    const [a, b] = cmp.products || [];
    const title = (p) => (p && (p.title || p.product_id)) || "";
    const cell = (v) => el("td", {text: v === undefined || v === null ? "—" : String(v)});
    return el("table", {class: "pd-compare"},
      el("thead", {}, el("tr", {}, el("th", {text: ""}), el("th", {text: title(a)}), el("th", {text: title(b)}))),
      el("tbody", {}, ...(cmp.rows || []).map((r) => Array.isArray(r)
        ? el("tr", {}, el("th", {text: String(r[0])}), cell(r[1]), cell(r[2]))
        : el("tr", {}, el("th", {text: String(r.name || "")}), cell(r.a), cell(r.b)))));
  }

  // A message's body when it is a card or carries a comparison; null: the console's plain rendering.
  function render(m) {
    const c = m.content || {};
    if (m.kind === "product") return productCard(c);
    if (m.kind === "order") {
      const card = orderCard(c);
      if (panel.host && m.from && ["customer", "visitor"].includes(m.from.kind)) verify(card, m);
      return card;
    }
    const products = (Array.isArray(c.cards) ? c.cards : []).filter((x) => x && x.type === "product" && x.product_id);
    if ((c.comparison && typeof c.comparison === "object") || products.length) {  // the bot's comparison, its product cards
      return el("div", {}, c.text ? el("div", {text: c.text}) : "",
        c.comparison && typeof c.comparison === "object" ? comparisonTable(c.comparison) : "", ...products.map(productCard));
    }
    return null;
  }

  // A customer can type anything into an order card: the console checks it against the merchant's system.
  const checked = new Map();
  function verify(card, m) {
    const customer = panel.host.customerOf(m.session) || (m.from && m.from.id);
    const order = (m.content || {}).order_id;
    if (!customer || !order || customer.startsWith("v_")) return;
    const k = customer + "\n" + order;
    if (!checked.has(k)) checked.set(k, get(`/api/v1/commerce/customers/${encodeURIComponent(customer)}/orders/${encodeURIComponent(order)}`));
    checked.get(k).then((res) => {
      if (res.status !== 200 && res.status !== 404) { checked.delete(k); return; }  // unavailable: ask again next time
      card.dataset.verified = res.ok ? "yes" : "no";
      card.querySelector(".pd-body").append(el("small", {class: "pd-verify " + (res.ok ? "ok" : "bad"), text: res.ok ? "✓ " + t("verified") : "⚠ " + t("not_verified")}));
    });
  }

  // -- the panel ------------------------------------------------------------------------------
  const panel = {host: null, gen: 0, conv: null, picks: [], entries: new Map()};

  async function get(path) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 15000);
    try {
      const res = await fetch(path, {headers: {Authorization: "Bearer " + panel.host.token()}, signal: ctl.signal});
      const data = await res.json().catch(() => ({}));
      return {ok: res.ok, status: res.status, data, message: data.message || res.statusText};
    } catch (err) {  // the gateway itself unreachable, or no answer in 15 s
      return {ok: false, status: 0, data: {}, message: err.name === "AbortError" ? "no answer within 15 s" : err.message};
    } finally { clearTimeout(timer); }
  }

  // A failed call: "unavailable" (503, or no answer) with the reason and a retry, or the error as it is.
  function problem(res, retry) {
    if (res.status === 503 || res.status === 0) {
      document.getElementById("commerce").dataset.state = "unavailable";
      return el("div", {class: "pd-unavailable", role: "status", "data-state": "unavailable"},
        el("b", {text: "⚠ " + t("unavailable") + (LANG === "en" ? " · 系统暂不可用" : " · unavailable")}),
        el("div", {class: "pd-reason", text: res.message}),
        retry ? el("button", {class: "pd-retry", text: t("retry"), onclick: retry}) : "");
    }
    return el("div", {class: "error", text: res.message});
  }

  const loading = () => el("div", {class: "pd-loading", text: t("loading")});
  const current = (gen) => gen === panel.gen;

  function attach(host) { panel.host = host; }

  // A conversation was opened in the chat: the panel starts over for it, without waiting for anything.
  function select(c) {
    const root = document.getElementById("commerce"); if (!root || !panel.host) return;
    const gen = ++panel.gen;
    if (panel.conv !== c) panel.picks = [];  // picks are for one conversation's comparison
    panel.conv = c;
    delete root.dataset.state;
    const asked = el("div", {id: "pd-asked"}), orders = el("div", {id: "pd-orders"}), results = el("div", {id: "pd-results"});
    const query = el("input", {id: "pd-search-q", type: "search", placeholder: t("search_ph"), "aria-label": t("search")});
    const go = () => search(gen, query.value.trim(), results);
    query.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); go(); } });
    root.replaceChildren(el("h2", {text: t("panel")}),
      el("section", {}, el("h3", {text: t("asked")}), asked),
      el("section", {}, el("h3", {text: t("orders")}), orders),
      el("section", {}, el("h3", {text: t("search")}), el("div", {class: "pd-row"}, query, el("button", {id: "pd-search", text: t("find"), onclick: go})), results),
      el("section", {}, el("h3", {text: t("compare")}), el("div", {id: "pd-compare"})));
    renderCompare(gen);
    showAsked(gen, c);
    loadOrders(gen, c, orders);
  }

  // Frames the console gets: a product card from the customer changes what they asked about;
  // an `assigned`/`subscribed` frame that carries the conversation's entry saves asking for it.
  function frame(f) {
    if ((f.t === "assigned" || f.t === "subscribed") && f.entry && typeof f.entry === "object") panel.entries.set(f.session, f.entry);
    if (f.t === "msg" && f.kind === "product" && panel.conv && f.session === panel.conv.session && f.from
        && ["customer", "visitor"].includes(f.from.kind)) showAsked(panel.gen, panel.conv);
  }

  // Where the conversation started (its entry: page, product_id) and whose it is, from its first
  // event (GET /api/v1/conversations/{session}/entry), which lands a moment after it opened.
  const infos = new Map();
  function info(c) {
    if (panel.entries.has(c.session)) return Promise.resolve({entry: panel.entries.get(c.session), customer_id: c.customer});
    if (!infos.has(c.session)) {
      infos.set(c.session, (async () => {
        for (let tries = 0; ; tries++) {
          const res = await get(`/api/v1/conversations/${encodeURIComponent(c.session)}/entry`);
          if (res.ok) return {entry: res.data.entry || {}, customer_id: res.data.customer_id || ""};
          if (res.status !== 404 || tries >= 6) { infos.delete(c.session); return {entry: {}, customer_id: ""}; }
          await new Promise((ok) => setTimeout(ok, 1500));
        }
      })());
    }
    return infos.get(c.session);
  }

  async function showAsked(gen, c) {
    const box = document.getElementById("pd-asked"); if (!box || !current(gen)) return;
    const card = [...c.messages].reverse().find((m) => m.kind === "product" && m.from && ["customer", "visitor"].includes(m.from.kind));
    if (card) { box.replaceChildren(productBlock(card.content, t("from_card"))); return; }
    box.replaceChildren(loading());
    const {entry} = await info(c);
    if (!current(gen) || box.querySelector(".pd-product")) return;
    if (!entry.product_id) { box.replaceChildren(el("div", {class: "pd-none", text: t("none")})); return; }
    const res = await get("/api/v1/commerce/products/" + encodeURIComponent(entry.product_id));
    if (!current(gen) || box.querySelector(".pd-product")) return;
    box.replaceChildren(res.ok ? productBlock(res.data, t("from_entry")) : problem(res, () => showAsked(gen, c)));
  }

  function productBlock(p, note) {
    return el("div", {class: "pd-asked"}, productCard(p), note ? el("small", {class: "pd-note", text: note}) : "", productActions(p));
  }

  function productActions(p) {
    const picked = panel.picks.some((x) => x.product_id === p.product_id);
    const sendable = p.product_id && p.product_id.length <= 64;
    return el("div", {class: "pd-actions"},
      sendable ? el("button", {class: "pd-send-product", "data-product": p.product_id, text: t("send_card"), onclick: (e) => {
        panel.host.send(panel.conv, "product", productContent(p)); done(e.target);
      }}) : "",
      el("button", {class: "pd-pick" + (picked ? " on" : ""), "data-product": p.product_id, "aria-pressed": String(picked),
        text: picked ? "✓ " + t("picked") : t("pick"), onclick: () => pick(p)}));
  }

  function done(button) { button.textContent = "✓ " + t("sent"); setTimeout(() => { button.textContent = t("send_card"); }, 1500); }

  async function loadOrders(gen, c, box) {
    box.replaceChildren(loading());
    const customer = c.customer || (await info(c)).customer_id;  // a conversation a supervisor watches: not told
    if (!current(gen)) return;
    if (!customer || customer.startsWith("v_")) { box.replaceChildren(el("div", {class: "pd-none", text: t("visitor")})); return; }
    const res = await get(`/api/v1/commerce/customers/${encodeURIComponent(customer)}/orders`);
    if (!current(gen)) return;
    if (!res.ok) { box.replaceChildren(problem(res, () => loadOrders(gen, c, box))); return; }
    const items = res.data.items || [];
    box.replaceChildren(...(items.length ? items.map((o) => orderRow(gen, customer, o)) : [el("div", {class: "pd-none", text: t("no_orders")})]));
  }

  function orderRow(gen, customer, o) {
    const latest = o.tracking && o.tracking.events && o.tracking.events[0];
    const details = el("div", {class: "pd-details", hidden: ""});
    const head = el("button", {class: "pd-order-head", "aria-expanded": "false", onclick: () => {
      const open = details.hidden;
      details.hidden = !open; head.setAttribute("aria-expanded", String(open));
      if (open && !details.childElementCount) orderDetails(gen, customer, o, details);
    }}, el("b", {text: o.order_id}), " ", el("span", {class: "pd-status", "data-status": o.status, text: statusText(o.status)}),
      el("span", {class: "pd-price", text: money(o.total, o.currency)}),
      latest ? el("small", {class: "pd-latest", text: `${latest.at} ${latest.text}`}) : "");
    return el("div", {class: "pd-order-row", "data-order": o.order_id}, head, details);
  }

  async function orderDetails(gen, customer, o, box) {
    const items = el("ul", {class: "pd-items"}, ...(o.items || []).map((i) =>
      el("li", {text: `${i.title} ×${i.qty}${i.price ? " · " + money(i.price, o.currency) : ""}`})));
    const tracking = el("div", {class: "pd-tracking"});
    box.replaceChildren(el("div", {text: `${t("items")}:`}), items,
      el("div", {text: `${t("total")}: ${money(o.total, o.currency) || "—"}${o.created_at ? " · " + o.created_at : ""}`}), tracking,
      o.order_id.length <= 64 ? el("button", {class: "pd-send-order", "data-order": o.order_id, text: t("send_card"), onclick: (e) => {
        panel.host.send(panel.conv, "order", orderContent(o)); done(e.target);
      }}) : "");
    let track = o.tracking;
    if (!track || !(track.events || []).length) {  // the list may come without it: ask for the order with its tracking
      tracking.replaceChildren(loading());
      const res = await get(`/api/v1/commerce/customers/${encodeURIComponent(customer)}/orders/${encodeURIComponent(o.order_id)}`);
      if (!current(gen)) return;
      if (!res.ok) { tracking.replaceChildren(problem(res, () => orderDetails(gen, customer, o, box))); return; }
      track = res.data.tracking;
    }
    if (!track || (!track.carrier && !track.tracking_no && !(track.events || []).length)) {
      tracking.replaceChildren(el("div", {class: "pd-none", text: t("no_tracking")})); return;
    }
    tracking.replaceChildren(
      el("div", {class: "pd-carrier", text: `${t("carrier")}: ${track.carrier || "—"} · ${t("tracking_no")}: ${track.tracking_no || "—"}`}),
      el("ol", {class: "pd-events"}, ...(track.events || []).slice(0, 5).map((e) =>
        el("li", {}, el("small", {text: e.at}), " ", el("span", {text: e.text + (e.location ? ` · ${e.location}` : "")})))));
  }

  async function search(gen, q, box) {
    if (!q) return;
    box.replaceChildren(loading());
    const res = await get("/api/v1/commerce/products?q=" + encodeURIComponent(q.slice(0, 100)));
    if (!current(gen)) return;
    if (!res.ok) { box.replaceChildren(problem(res, () => search(gen, q, box))); return; }
    const items = res.data.items || [];
    box.replaceChildren(...(items.length ? items.map((p) => el("div", {class: "pd-result", "data-product": p.product_id}, productCard(p), productActions(p)))
                                          : [el("div", {class: "pd-none", text: t("no_results")})]));
  }

  // Two products picked (a third replaces the first): the comparison table, to read or send.
  function pick(p) {
    const i = panel.picks.findIndex((x) => x.product_id === p.product_id);
    if (i >= 0) panel.picks.splice(i, 1); else { panel.picks.push(p); if (panel.picks.length > 2) panel.picks.shift(); }
    for (const b of document.querySelectorAll("#commerce .pd-pick")) {
      const on = panel.picks.some((x) => x.product_id === b.dataset.product);
      b.classList.toggle("on", on); b.setAttribute("aria-pressed", String(on)); b.textContent = on ? "✓ " + t("picked") : t("pick");
    }
    renderCompare(panel.gen);
  }

  async function renderCompare(gen) {
    const box = document.getElementById("pd-compare"); if (!box) return;
    const [a, b] = panel.picks;
    if (!b) { box.replaceChildren(el("div", {class: "pd-none", text: t("pick_two") + (a ? `: ${a.title}` : "")})); return; }
    box.replaceChildren(loading());
    const res = await get(`/api/v1/commerce/compare?a=${encodeURIComponent(a.product_id)}&b=${encodeURIComponent(b.product_id)}`);
    if (!current(gen) || panel.picks[0] !== a || panel.picks[1] !== b) return;
    if (!res.ok) { box.replaceChildren(problem(res, () => renderCompare(gen))); return; }
    box.replaceChildren(comparisonTable(res.data), el("button", {id: "pd-send-compare", text: t("send_compare"), onclick: (e) => {
      panel.host.send(panel.conv, "text", {text: comparisonText(res.data), comparison: comparisonContent(res.data)});
      e.target.textContent = "✓ " + t("sent");
    }}));
  }

  // The table as the protocol's `comparison` (the widget draws it) and as text, laid out like the
  // bot's (docs/bot.md, "Comparing two products"), for channels that draw no tables.
  function comparisonContent(cmp) {
    const cut = (v) => line(v === undefined || v === null ? "" : String(v), 300);
    return {products: cmp.products.map(productContent),
            rows: (cmp.rows || []).slice(0, 60).map((r) => Array.isArray(r) ? {name: line(String(r[0]), 100) || "—", a: cut(r[1]), b: cut(r[2])}
              : {name: line(String(r.name || ""), 100) || "—", a: cut(r.a), b: cut(r.b)})};
  }

  function comparisonText(cmp) {
    const [a, b] = cmp.products;
    const rows = (cmp.rows || []).map((r) => Array.isArray(r) ? r : [r.name, r.a, r.b]);
    const differ = rows.filter(([, x, y]) => x !== y).map(([name]) => name);
    return ["商品对比 Comparison：", `A：${a.title}`, `B：${b.title}`, ...rows.map(([name, x, y]) => `${name}：${x} ｜ ${y}`),
            ...(differ.length ? [`主要区别 Differs in：${differ.join("、")}`] : [])].join("\n").slice(0, 4000);
  }

  return {attach, select, frame, render, productCard, orderCard, comparisonTable, productContent, orderContent};
})();
