// peakdesk web pages: a small protocol client (docs/protocol.md), safe rendering, i18n.
// Every text from customers and agents goes into the page with textContent, never innerHTML.
"use strict";

const PD = (() => {
  const LANG = (localStorage.getItem("pd:lang") || (navigator.language || "zh").slice(0, 2)) === "en" ? "en" : "zh";
  const T = {
    zh: {login: "登录", merchant: "商户", username: "用户名", password: "密码", mine: "我的会话", none: "暂无会话",
         online: "在线", busy: "忙碌", away: "离开", offline: "离线", send: "发送", note: "内部备注", close: "结束会话",
         transfer: "转接", to_agent: "转给客服", to_group: "转给分组", customer: "客户信息", attributes: "属性",
         visits: "访问次数", quick: "常用语", new_conv: "新会话", agents: "客服", queues: "排队", waiting: "等待",
         longest: "最长等待", load: "负载", status: "状态", group: "分组", lang: "English", placeholder: "输入消息，/ 打开常用语",
         closed: "会话已结束", transferred: "已转接", internal: "备注（客户不可见）", visitor: "访客", refresh: "刷新",
         queued: "排队中", all: "全部会话", attach: "附件", takeover: "接管", history: "历史会话", messages: "条消息", team: "同事聊天",
         suggestions: "推荐答案", use: "发送", edit: "编辑", flagged: "需关注", angry: "情绪激动", bot: "智能助手",
         now: "实时数据", online: "在线客服", response_5m: "响应时间（5分钟）", response_15m: "响应时间（15分钟）",
         incoming: "进线量", csat_1h: "近1小时满意度", threshold: "阈值", reconnecting: "重新连接中",
         not_delivered: "未送达", delivery_sent: "已发出", delivery_delivered: "已送达", delivery_read: "已读"},
    en: {login: "Log in", merchant: "Merchant", username: "Username", password: "Password", mine: "My conversations",
         none: "No conversations", online: "Online", busy: "Busy", away: "Away", offline: "Offline", send: "Send",
         note: "Internal note", close: "Close", transfer: "Transfer", to_agent: "To agent", to_group: "To group",
         customer: "Customer", attributes: "Attributes", visits: "Visits", quick: "Quick replies",
         new_conv: "New conversation", agents: "Agents", queues: "Queues", waiting: "Waiting", longest: "Longest wait",
         load: "Load", status: "Status", group: "Group", lang: "中文", placeholder: "Type a message; / for quick replies",
         closed: "Conversation closed", transferred: "Transferred", internal: "Note (customer can't see)",
         visitor: "Visitor", refresh: "Refresh", queued: "Queued", all: "All conversations", attach: "Attachment",
         takeover: "Take over", history: "Past conversations", messages: "messages", team: "Team chat",
         suggestions: "Suggested answers", use: "Send", edit: "Edit", flagged: "Needs attention", angry: "angry", bot: "Assistant",
         now: "Right now", online: "Agents online", response_5m: "Response (5 min)", response_15m: "Response (15 min)",
         incoming: "Incoming", csat_1h: "CSAT, last hour", threshold: "threshold", reconnecting: "reconnecting",
         not_delivered: "Not delivered", delivery_sent: "Sent", delivery_delivered: "Delivered", delivery_read: "Read"},
  };
  const t = (key) => (T[LANG] && T[LANG][key]) || key;

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  }

  async function api(path, {method = "GET", body, token} = {}) {
    const headers = {"Content-Type": "application/json"};
    if (token) headers.Authorization = "Bearer " + token;
    const res = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
    const data = res.status === 204 ? {} : await res.json().catch(() => ({}));
    if (!res.ok) throw new Error((data.message || res.statusText) + (data.field ? ` (${data.field})` : ""));
    return data;
  }

  // A websocket that says hello, resumes what it saw, and reconnects with back-off.
  class Connection {
    constructor(token, onFrame, onState) {
      this.token = token; this.onFrame = onFrame; this.onState = onState || (() => {});
      this.lastSeq = {}; this.pending = new Map(); this.outbox = []; this.stopped = false; this.delay = 500; this.ws = null;
      this.welcomed = false;
      this.open();
    }
    url() { return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws"; }
    open() {
      const ws = this.ws = new WebSocket(this.url());
      ws.onopen = () => ws.send(JSON.stringify({t: "hello", token: this.token, resume: this.lastSeq}));
      ws.onmessage = (e) => {
        const f = JSON.parse(e.data);
        if (f.t === "welcome") { this.delay = 500; this.welcomed = true; this.onState("open"); this.flush(); }
        if (f.t === "msg") {
          if (f.seq <= (this.lastSeq[f.session] || 0)) return;  // seen already
          this.lastSeq[f.session] = f.seq;
        }
        if (f.t === "ack") { this.pending.delete(f.cid); this.lastSeq[f.session] = Math.max(this.lastSeq[f.session] || 0, f.seq); }
        this.onFrame(f);
      };
      ws.onclose = () => {
        this.welcomed = false;
        this.onState("closed");
        if (this.stopped) return;
        setTimeout(() => this.open(), this.delay);
        this.delay = Math.min(this.delay * 2, 10000);
      };
    }
    ready() { return this.welcomed && this.ws && this.ws.readyState === WebSocket.OPEN; }
    // Frames sent before the connection is ready (a status switch at once after login) wait for it.
    send(frame) { if (this.ready()) this.ws.send(JSON.stringify(frame)); else this.outbox.push(frame); }
    // Messages wait for their ack; unacknowledged ones are re-sent after a reconnect (same cid: never twice).
    sendMessage(frame) { this.pending.set(frame.cid, frame); if (this.ready()) this.ws.send(JSON.stringify(frame)); }
    flush() {
      const waiting = this.outbox; this.outbox = [];
      for (const f of waiting) this.ws.send(JSON.stringify(f));
      for (const f of this.pending.values()) this.ws.send(JSON.stringify(f));
    }
    close() { this.stopped = true; if (this.ws) this.ws.close(); }
  }

  const cid = () => Math.random().toString(36).slice(2) + Date.now().toString(36);

  // One message as DOM: text stays text whatever it contains.
  function renderContent(m, attachmentUrl) {
    const c = m.content || {};
    if (m.kind === "text" || m.kind === "note") return el("span", {text: c.text || ""});
    if (m.kind === "emoji") return el("span", {text: c.emoji || ""});
    if (m.kind === "rich") {  // sanitised by the server; still shown as text here, tags stripped
      const doc = new DOMParser().parseFromString(c.html || "", "text/html");
      return el("span", {text: doc.body.textContent || ""});
    }
    if (m.kind === "image") {
      const img = el("img", {alt: c.name || "image", class: "pd-image"});
      attachmentUrl(c.attachment_id).then((u) => { img.src = u; });
      return img;
    }
    if (["audio", "video", "file"].includes(m.kind)) return el("span", {text: `📎 ${c.name || m.kind}`});
    if (m.kind === "product") return el("span", {text: `🛍 ${c.title || ""} ${c.price ? "¥" + c.price : ""}`});
    if (m.kind === "order") return el("span", {text: `📦 ${c.order_id || ""} · ${c.status || ""}`});
    return el("span", {text: JSON.stringify(c)});
  }

  function attachmentLoader(token) {
    const cache = new Map();
    return (id) => {
      if (!cache.has(id)) {
        cache.set(id, fetch(`/api/v1/attachments/${id}`, {headers: {Authorization: "Bearer " + token}})
          .then((r) => r.blob()).then((b) => URL.createObjectURL(b)));
      }
      return cache.get(id);
    };
  }

  function beep() {
    try {
      const ctx = new (window.AudioContext || window.webkitAudioContext)();
      const osc = ctx.createOscillator(); osc.frequency.value = 880; osc.connect(ctx.destination);
      osc.start(); osc.stop(ctx.currentTime + 0.15);
    } catch (e) { /* no audio: the title still flashes */ }
  }

  function toggleLang() { localStorage.setItem("pd:lang", LANG === "en" ? "zh" : "en"); location.reload(); }

  return {t, el, api, Connection, cid, renderContent, attachmentLoader, beep, toggleLang, LANG};
})();
