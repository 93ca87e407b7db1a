// Tickets (工单) in the agent console (docs/tickets.md): a department's queue in the left column,
// the conversation's customer's tickets and a "new ticket" form beside the chat, and a ticket's
// page — move it along the status flow, to another department, assign, comment or note.
// Everything is text from the API put in with textContent.
"use strict";
window.PDTickets = (() => {
  const {el, api, LANG} = PD;
  const T = {
    zh: {tickets: "工单", queue: "部门工单", new_ticket: "新建工单", title: "标题", department: "部门", priority: "优先级",
         type: "类型", order: "订单号", description: "描述", create: "创建工单", none: "暂无工单", status: "状态",
         assignee: "处理人", due: "截止", comments: "处理记录", comment: "回复客户", note: "内部备注", add: "添加",
         move: "转部门", mine: "分配给我", back: "返回", escalated: "已升级", reminded: "即将超时", overdue: "已超时",
         transcript: "会话记录", history: "变更记录", low: "低", normal: "普通", high: "高", urgent: "紧急",
         created: "已创建", unassigned: "未分配", show: "查看"},
    en: {tickets: "Tickets", queue: "Department tickets", new_ticket: "New ticket", title: "Title", department: "Department",
         priority: "Priority", type: "Type", order: "Order no.", description: "Description", create: "Create ticket",
         none: "No tickets", status: "Status", assignee: "Assignee", due: "Due", comments: "Updates",
         comment: "Reply to customer", note: "Internal note", add: "Add", move: "Move to", mine: "Assign to me",
         back: "Back", escalated: "Escalated", reminded: "Due soon", overdue: "Overdue", transcript: "Conversation",
         history: "History", low: "Low", normal: "Normal", high: "High", urgent: "Urgent", created: "created",
         unassigned: "unassigned", show: "Open"},
  };
  const t = (k) => (T[LANG] && T[LANG][k]) || k;
  const PRIORITIES = ["low", "normal", "high", "urgent"];
  let ctx = null, config = null, current = null, names = {};

  const call = (path, opts = {}) => api("/api/v1/tickets" + path, {...opts, token: ctx.token()});
  const named = (list, id) => ((list || []).find((x) => x.id === id) || {name: id}).name;

  function badge(tk) {
    const now = Date.now(), s = tk.sla || {};
    if (tk.escalated) return el("span", {class: "badge escalated", text: t("escalated")});
    if (s.due_at && s.due_at < now && !config.done.includes(tk.status)) return el("span", {class: "badge overdue", text: t("overdue")});
    if (s.reminded) return el("span", {class: "badge reminded", text: t("reminded")});
    return "";
  }

  function row(tk) {
    return el("div", {class: "conv ticket-row", tabindex: "0", "data-ticket": tk.ticket_id, onclick: () => open(tk.ticket_id),
      onkeydown: (e) => { if (e.key === "Enter") open(tk.ticket_id); }},
      el("div", {}, el("b", {text: tk.number + " "}), el("span", {text: tk.title}), " ", badge(tk)),
      el("small", {text: `${named(config.statuses, tk.status)} · ${t(tk.priority)} · ${named(config.departments, tk.department)}`}));
  }

  async function attach(context) {
    ctx = context;
    try { config = await call("/config"); } catch (err) { return; }   // no tickets here: the panes stay empty
    api("/api/v1/agents", {token: ctx.token()}).then((r) => { names = Object.fromEntries((r.items || []).map((a) => [a.agent_id, a.name])); })
      .catch(() => {});
    const nav = document.getElementById("ticket-queue"); if (!nav) return;
    const dept = el("select", {id: "ticket-dept", "aria-label": t("department"), onchange: refreshQueue},
      ...config.departments.map((d) => el("option", {value: d.id, text: d.name})));
    nav.replaceChildren(el("h2", {text: t("queue")}), dept, el("div", {id: "ticket-list"}));
    refreshQueue(); setInterval(refreshQueue, 5000);
  }

  async function refreshQueue() {
    const dept = document.getElementById("ticket-dept"), list = document.getElementById("ticket-list");
    if (!dept || !list) return;
    const res = await call("?department=" + encodeURIComponent(dept.value)).catch(() => ({items: []}));
    list.replaceChildren(...(res.items.length ? res.items.map(row) : [el("div", {class: "conv", text: t("none")})]));
  }

  // Beside a conversation: the customer's tickets and a form to open one from this conversation.
  async function select(c) {
    const pane = document.getElementById("tickets"); if (!pane || !config) return;
    pane.replaceChildren(el("h2", {text: t("tickets")}));
    const customer = c.customer && !c.customer.startsWith("v_") ? c.customer : "";
    if (customer) {
      const res = await call("?customer=" + encodeURIComponent(customer)).catch(() => ({items: []}));
      pane.append(el("div", {id: "customer-tickets"}, ...res.items.map(row)));
    }
    pane.append(form(c, customer));
  }

  const who = (by) => (by.kind === "agent" && names[by.id]) || (by.kind === "system" ? "SLA" : by.id);

  function field(label, input) { return el("label", {class: "field"}, el("span", {text: label}), input); }

  function form(c, customer) {
    const title = el("input", {id: "ticket-title", maxlength: "200"});
    const dept = el("select", {id: "ticket-department"}, ...config.departments.map((d) => el("option", {value: d.id, text: d.name})));
    const prio = el("select", {id: "ticket-priority"}, ...PRIORITIES.map((p) => el("option", {value: p, text: t(p)})));
    prio.value = "normal";
    const type = el("select", {id: "ticket-type"}, el("option", {value: "", text: "—"}), ...config.types.map((x) => el("option", {value: x, text: x})));
    const order = el("input", {id: "ticket-order", maxlength: "128"});
    const desc = el("textarea", {id: "ticket-description", maxlength: "10000", rows: "3"});
    const custom = config.fields.map((f) => {
      const input = f.type === "choice" ? el("select", {"data-field": f.name}, el("option", {value: "", text: "—"}),
        ...f.options.map((o) => el("option", {value: o, text: o}))) : el("input", {"data-field": f.name, type: f.type === "number" ? "number" : "text"});
      return field(f.label + (f.required ? " *" : ""), input);
    });
    const error = el("div", {class: "error", role: "alert"});
    const submit = async (e) => {
      e.preventDefault(); error.textContent = "";
      const fields = {};
      for (const input of formNode.querySelectorAll("[data-field]")) {
        if (input.value !== "") fields[input.dataset.field] = input.type === "number" ? Number(input.value) : input.value;
      }
      const body = {title: title.value, department: dept.value, priority: prio.value, type: type.value, description: desc.value,
        session_id: c.session, ...(customer ? {customer_id: customer} : {}), ...(order.value.trim() ? {order_id: order.value.trim()} : {}), fields};
      try { const tk = await call("", {method: "POST", body}); select(c); open(tk.ticket_id); }
      catch (err) { error.textContent = err.message; }
    };
    const formNode = el("form", {id: "ticket-form", class: "ticket-form", onsubmit: submit},
      el("h3", {text: t("new_ticket")}), field(t("title"), title), field(t("department"), dept), field(t("priority"), prio),
      field(t("type"), type), field(t("order"), order), field(t("description"), desc), ...custom, error,
      el("button", {type: "submit", id: "ticket-create", text: t("create")}));
    return formNode;
  }

  // A ticket's page, over the chat: status moves along the flow, department, assignee, comments.
  async function open(id) {
    let tk;
    try { tk = await call("/" + encodeURIComponent(id)); } catch (err) { return; }
    current = tk.ticket_id;
    let view = document.getElementById("ticket-view");
    if (!view) { view = el("section", {id: "ticket-view", class: "ticket-view"}); document.body.append(view); }
    view.hidden = false;
    const patch = (body) => call("/" + tk.ticket_id, {method: "PATCH", body}).then(() => { open(tk.ticket_id); refreshQueue(); })
      .catch((err) => { view.querySelector(".error").textContent = err.message; });
    const moves = (config.flow[tk.status] || []).map((s) => el("button", {class: "move", "data-status": s,
      text: "→ " + named(config.statuses, s), onclick: () => patch({status: s})}));
    const dept = el("select", {id: "ticket-move"}, ...config.departments.map((d) => el("option", {value: d.id, text: d.name})));
    dept.value = tk.department;
    const prio = el("select", {id: "ticket-reprioritise"}, ...PRIORITIES.map((p) => el("option", {value: p, text: t(p)})));
    prio.value = tk.priority;
    const text = el("textarea", {id: "ticket-comment", rows: "2", maxlength: "10000"});
    const internal = el("input", {type: "checkbox", id: "ticket-internal"});
    const due = tk.sla && tk.sla.due_at ? new Date(tk.sla.due_at).toLocaleString() : "—";
    view.replaceChildren(
      el("header", {}, el("button", {id: "ticket-back", text: t("back"), onclick: () => { view.hidden = true; current = null; }}),
        el("h2", {id: "ticket-head", text: `${tk.number} · ${tk.title}`}), badge(tk)),
      el("dl", {class: "ticket-facts"},
        el("dt", {text: t("status")}), el("dd", {id: "ticket-status", "data-status": tk.status, text: named(config.statuses, tk.status)}),
        el("dt", {text: t("department")}), el("dd", {id: "ticket-department-now", text: named(config.departments, tk.department)}),
        el("dt", {text: t("priority")}), el("dd", {id: "ticket-priority-now", text: t(tk.priority)}),
        el("dt", {text: t("assignee")}), el("dd", {id: "ticket-assignee", text: tk.assignee ? who({kind: "agent", id: tk.assignee}) : t("unassigned")}),
        el("dt", {text: t("due")}), el("dd", {text: due}),
        el("dt", {text: t("order")}), el("dd", {text: tk.order_id || "—"}),
        ...Object.entries(tk.fields || {}).flatMap(([k, v]) => [el("dt", {text: named(config.fields.map((f) => ({id: f.name, name: f.label})), k)}), el("dd", {text: String(v)})])),
      el("p", {class: "ticket-description", text: tk.description || ""}),
      el("div", {class: "tools"}, ...moves,
        dept, el("button", {id: "ticket-move-go", text: t("move"), onclick: () => patch({department: dept.value})}),
        prio, el("button", {text: t("priority"), onclick: () => patch({priority: prio.value})}),
        el("button", {id: "ticket-take", text: t("mine"), onclick: () => patch({assignee: ctx.me().agent_id})})),
      el("div", {class: "error", role: "alert"}),
      el("h3", {text: t("comments")}),
      el("div", {id: "ticket-comments"}, ...tk.comments.map((c) => el("div", {class: "msg" + (c.internal ? " internal" : "")},
        el("small", {text: `${new Date(c.at).toLocaleString()} · ${who(c.by)}${c.internal ? " · " + t("note") : ""}`}), el("div", {text: c.text})))),
      el("div", {class: "composer"}, text, el("label", {}, internal, " " + t("note")),
        el("button", {id: "ticket-comment-add", text: t("add"), onclick: async () => {
          if (!text.value.trim()) return;
          await call(`/${tk.ticket_id}/comments`, {method: "POST", body: {text: text.value.trim(), internal: internal.checked}})
            .then(() => open(tk.ticket_id)).catch((err) => { view.querySelector(".error").textContent = err.message; });
        }})),
      el("details", {}, el("summary", {text: t("history")}), el("ul", {}, ...tk.history.map((h) =>
        el("li", {text: `${new Date(h.at).toLocaleString()} · ${who(h.by)} · ${Object.keys(h.changes).join(", ")}`})))),
      tk.session_id ? el("details", {id: "ticket-transcript", ontoggle: (e) => loadTranscript(e.target, tk.ticket_id)},
        el("summary", {text: t("transcript")}), el("div", {class: "messages"})) : "");
  }

  async function loadTranscript(details, id) {
    if (!details.open) return;
    const res = await call(`/${id}/transcript`).catch(() => ({items: []}));
    details.querySelector(".messages").replaceChildren(...res.items.map((m) => el("div", {class: "msg" + (m.internal ? " internal" : "")},
      el("small", {text: `${(m.from || {}).kind || ""} `}), el("span", {text: (m.content || {}).text || `[${m.kind}]`}))));
  }

  // A ticket's notice in a conversation: refresh what is on screen.
  function frame(f) {
    const tk = f.t === "msg" && f.content && f.content.ticket;
    if (!tk) return;
    refreshQueue();
    if (current === tk.ticket_id) open(tk.ticket_id);
  }

  return {attach, select, frame, open};
})();
