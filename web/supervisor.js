// Supervisor live view: every agent's status and load, every group's queue length and longest
// wait, flagged customers, response times and alerts — pushed over the websocket every 2 seconds
// (`{"t": "monitor", "on": true}` → `live` and `alert` frames; supervisors, admins, owners).
"use strict";
(() => {
  const {t, el, api, toggleLang, Connection} = PD;
  const app = document.getElementById("app");
  let token = sessionStorage.getItem("pd:token");

  function loginForm(error) {
    const merchant = el("input", {id: "merchant", value: "demo"}), username = el("input", {id: "username"});
    const password = el("input", {id: "password", type: "password"});
    app.replaceChildren(el("form", {class: "login", onsubmit: async (e) => {
      e.preventDefault();
      try {
        token = (await api("/api/v1/auth/login", {method: "POST", body: {merchant: merchant.value, username: username.value, password: password.value}})).token;
        sessionStorage.setItem("pd:token", token); start();
      } catch (err) { loginForm(err.message); }
    }}, el("h2", {text: "peakdesk"}), merchant, username, password, el("button", {id: "login", type: "submit", text: t("login")}),
      error ? el("div", {class: "error", role: "alert", text: error}) : ""));
  }

  function start() {
    app.replaceChildren(
      el("header", {}, el("h1", {text: "peakdesk · live"}), el("span", {id: "updated"}), el("button", {onclick: toggleLang, text: t("lang")})),
      el("main", {style: "padding:16px;display:grid;gap:16px"},
        el("section", {id: "alerts", class: "alerts"}),
        el("section", {}, el("h2", {text: t("now")}), el("table", {id: "numbers"})),
        el("section", {}, el("h2", {text: t("agents")}), el("table", {id: "agents"})),
        el("section", {}, el("h2", {text: t("queues")}), el("table", {id: "queues"})),
        el("section", {}, el("h2", {text: t("flagged")}), el("table", {id: "flagged"}))));
    const conn = new Connection(token, onFrame, (state) => {
      if (state === "open") conn.send({t: "monitor", on: true});  // again after every reconnect
      else document.getElementById("updated").textContent = "⚠ " + t("reconnecting");
    });
  }

  function onFrame(f) {
    if (f.t === "live") render(f);
    else if (f.t === "error" && f.code === "forbidden") document.getElementById("updated").textContent = "⚠ " + f.message;
  }

  function render(live) {
    document.getElementById("updated").textContent = new Date(live.at).toLocaleTimeString();
    document.getElementById("alerts").replaceChildren(...(live.alerts || []).map((a) =>
      el("div", {class: "alert", role: "alert", "data-rule": a.rule}, `⚠ ${a.rule}: ${a.metric} = ${a.value} (${t("threshold")} ${a.threshold})`)));
    const r = live.recent || {}, n = live.totals || {};
    const show = (v, unit = "") => (v === null || v === undefined ? "—" : `${v}${unit}`);
    document.getElementById("numbers").replaceChildren(
      ...[["waiting", show(n.waiting)], ["longest", show(n.longest_wait_s, "s")], ["online", show(n.agents_online)],
          ["response_5m", `${show(r.response_p50_5m_s, "s")} / p90 ${show(r.response_p90_5m_s, "s")}`],
          ["response_15m", `${show(r.response_p50_15m_s, "s")} / p90 ${show(r.response_p90_15m_s, "s")}`],
          ["incoming", show(r.incoming_per_min, "/min")], ["csat_1h", show(r.csat_1h)]]
        .map(([k, v]) => el("tr", {"data-metric": k}, el("th", {text: t(k)}), el("td", {text: v}))));
    document.getElementById("agents").replaceChildren(
      el("tr", {}, ...["agents", "status", "load", "group"].map((k) => el("th", {text: t(k)}))),
      ...live.agents.map((a) => el("tr", {"data-agent": a.agent_id},
        el("td", {text: a.name}), el("td", {}, el("span", {class: "badge " + a.status, text: t(a.status)})),
        el("td", {text: a.capacity ? `${a.load} / ${a.capacity}` : "—"}), el("td", {text: (a.groups || []).join(", ")}))));
    document.getElementById("queues").replaceChildren(
      el("tr", {}, ...["group", "waiting", "longest"].map((k) => el("th", {text: t(k)}))),
      ...live.queues.map((q) => el("tr", {"data-group": q.group_id},
        el("td", {text: q.name}), el("td", {class: "waiting", text: String(q.waiting)}), el("td", {text: `${q.longest_wait_s}s`}))));
    // customers the bot handed over as angry: waiting ahead of others, shown until an agent takes them
    const flagged = live.queues.flatMap((q) => (q.flagged || []).map((f) => ({...f, group: q.name})));
    document.getElementById("flagged").replaceChildren(
      el("tr", {}, ...["customer", "group", "waiting"].map((k) => el("th", {text: t(k)}))),
      ...flagged.map((f) => el("tr", {class: "flagged", "data-session": f.session_id},
        el("td", {text: `${f.customer_id} · ${t(f.flag)}`}), el("td", {text: f.group}), el("td", {text: `${f.waiting_s}s`}))));
  }

  if (token) start(); else loginForm();
})();
