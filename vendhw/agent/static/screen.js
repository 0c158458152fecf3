// The customer's screen: one page that never reloads. It follows the sale through the
// agent's JSON API (/api/state, /api/orders/<id>) and swaps views in place; the QR image
// is set once per order, so it never blinks while the order is polled.
"use strict";

const CONFIG = JSON.parse(document.body.dataset.config);

const TEXT = {
  en: {
    brand: "Vending machine",
    choose: "Choose a product",
    have_code: "I have a code",
    use_code_instead: "Use a pickup code instead",
    return_change: "Return my change",
    credit: "Credit: {amount}",
    sold_out: "Sold out",
    pay_cash: "Pay with cash",
    pay_card: "Pay by card",
    tap_card: "Tap your card on the reader",
    tap_card_text: "Hold your card or phone on the card reader below the screen.",
    card_approved_title: "Card approved",
    card_refunded_text: "Your card was not charged.",
    denied_title: "Your card was declined",
    denied_text: "Nothing was charged. Please try another card or pay another way.",
    no_card_title: "The time to tap your card ran out",
    no_card_text: "Nothing was charged.",
    err_card_busy: "The card reader is busy. Please try again in a moment.",
    scan_to_pay: "Scan to pay",
    pay_with: "Pay with",
    cancel: "Cancel",
    reconnecting: "Connection lost, still trying... Your order is kept.",
    paid_title: "Paid, thank you!",
    paid_text: "Getting your product ready...",
    dispensing_title: "Dispensing...",
    dispensing_text: "Please take your product from the tray below.",
    refunding_title: "Sorry, the product could not be delivered",
    refunding_text: "We are refunding {amount} to the account you paid with.",
    delivered_title: "Enjoy!",
    delivered_text: "Please take your product from the tray below.",
    refunded_title: "Sorry, the product could not be delivered",
    refunded_text: "{amount} has been refunded to the account you paid with.",
    refunded_code_text: "Your code was not used up. Please ask staff for help.",
    needs_review_title: "Sorry, something went wrong",
    needs_review_text: "Staff have been notified and will sort it out. Please keep the order reference.",
    expired_title: "The time to pay ran out",
    expired_text: "Nothing was charged.",
    cancelled_title: "The order was cancelled",
    cancelled_text: "Nothing was charged.",
    cash_refunded_text: "Your credit was returned.",
    change_title: "Please take your change",
    change_text: "{amount} returned.",
    no_change: "There was no change to return.",
    reference: "Order reference: {ref}",
    back: "Back to the products",
    idle: "Back to the products in {s} s",
    enter_code: "Enter your pickup code",
    ok: "OK",
    delete: "Delete",
    error_title: "Sorry",
    out_of_service: "Out of service",
    out_of_service_text: "This machine is not selling right now. It will be back by itself shortly.",
    err_code_invalid: "This code is not valid. Please check it and try again.",
    err_code_malformed: "This code is not valid. Please check it and try again.",
    err_code_used: "This code has already been used.",
    err_code_expired: "This code has expired.",
    err_code_revoked: "This code is no longer valid.",
    err_code_in_use: "This code is being used right now. Please wait a moment.",
    err_code_locked: "Too many wrong codes. Please try again in {s} s.",
    err_bad_request: "This code does not have the right number of digits.",
    err_unavailable: "The machine cannot reach its service right now. Please try again shortly.",
    err_unknown_order: "This order could not be found.",
    err_unknown_slot: "This product is not available right now.",
    err_refused: "This did not work. Please try again.",
    err_change_failed: "Sorry, your change could not be paid out. Staff have been notified; please ask them for help.",
    provider_sandbox: "Sandbox (test payment)",
    provider_wechat: "WeChat Pay",
    provider_alipay: "Alipay",
    provider_code: "Pickup code",
    language_name: "English",
  },
  "zh-CN": {
    brand: "自助售货机",
    choose: "请选择商品",
    have_code: "我有取货码",
    use_code_instead: "改用取货码",
    return_change: "退还零钱",
    credit: "余额：{amount}",
    sold_out: "已售罄",
    pay_cash: "现金支付",
    pay_card: "刷卡支付",
    tap_card: "请在读卡器上刷卡",
    tap_card_text: "请将银行卡或手机靠近屏幕下方的读卡器。",
    card_approved_title: "支付已批准",
    card_refunded_text: "您的卡未被扣款。",
    denied_title: "您的卡被拒绝",
    denied_text: "未扣任何费用。请换一张卡或使用其他方式支付。",
    no_card_title: "刷卡时间已到",
    no_card_text: "未扣任何费用。",
    err_card_busy: "读卡器正忙，请稍后再试。",
    scan_to_pay: "请扫码支付",
    pay_with: "支付方式",
    cancel: "取消",
    reconnecting: "网络连接中断，正在重试……您的订单仍然有效。",
    paid_title: "支付成功，谢谢！",
    paid_text: "正在为您准备商品……",
    dispensing_title: "正在出货……",
    dispensing_text: "请从下方取货口取走您的商品。",
    refunding_title: "抱歉，商品未能出货",
    refunding_text: "正在将 {amount} 退回您的付款账户。",
    delivered_title: "请慢用！",
    delivered_text: "请从下方取货口取走您的商品。",
    refunded_title: "抱歉，商品未能出货",
    refunded_text: "{amount} 已退回您的付款账户。",
    refunded_code_text: "您的取货码未被使用，请联系工作人员。",
    needs_review_title: "抱歉，出现了问题",
    needs_review_text: "已通知工作人员处理，请保留订单号。",
    expired_title: "支付已超时",
    expired_text: "未产生任何扣款。",
    cancelled_title: "订单已取消",
    cancelled_text: "未产生任何扣款。",
    cash_refunded_text: "您的余额已退回。",
    change_title: "请取走您的零钱",
    change_text: "已退还 {amount}。",
    no_change: "没有需要退还的零钱。",
    reference: "订单号：{ref}",
    back: "返回商品列表",
    idle: "{s} 秒后返回商品列表",
    enter_code: "请输入取货码",
    ok: "确定",
    delete: "删除",
    error_title: "抱歉",
    out_of_service: "暂停服务",
    out_of_service_text: "本机暂时无法售货，稍后将自动恢复。",
    err_code_invalid: "取货码无效，请核对后重试。",
    err_code_malformed: "取货码无效，请核对后重试。",
    err_code_used: "该取货码已被使用。",
    err_code_expired: "该取货码已过期。",
    err_code_revoked: "该取货码已失效。",
    err_code_in_use: "该取货码正在使用中，请稍候。",
    err_code_locked: "错误次数过多，请 {s} 秒后再试。",
    err_bad_request: "取货码位数不正确。",
    err_unavailable: "暂时无法连接服务，请稍后再试。",
    err_unknown_order: "找不到该订单。",
    err_unknown_slot: "该商品暂时无法购买。",
    err_refused: "操作未成功，请重试。",
    err_change_failed: "抱歉，零钱未能退出，已通知工作人员，请联系工作人员处理。",
    provider_sandbox: "沙盒测试支付",
    provider_wechat: "微信支付",
    provider_alipay: "支付宝",
    provider_code: "取货码",
    language_name: "中文",
  },
};

const PROGRESS = new Set(["paid", "dispensing", "refunding"]);
// Icons as SVG paths (24x24, stroked): no font on the kiosk needs to have the glyphs.
const ICON_PATHS = {
  tick: "M5 12.5l4.5 4.5L19 7.5",
  back: "M9 7L4.5 11.5 9 16M5 11.5h9a5 5 0 0 1 0 10h-2",
  bang: "M12 5v9M12 18.5v.5",
  clock: "M12 3.5a8.5 8.5 0 1 0 0 17 8.5 8.5 0 0 0 0-17zM12 7.5V12l3 2",
  cross: "M6.5 6.5l11 11M17.5 6.5l-11 11",
};
const ICONS = {delivered: "tick", change: "tick", refunded: "back", needs_review: "bang",
               error: "bang", expired: "clock", cancelled: "cross", denied: "cross",
               no_card: "clock"};
const $ = (id) => document.getElementById(id);

let lang = CONFIG.language;
let view = "loading";
let products = [];
let credit = null;
let cardReader = false;      // the machine has a card reader: "Pay by card" is offered
let card = null;             // the running card sale's view from the agent
let order = null;            // the last order view from the agent
let orderId = null;
let pollTimer = null;
let stateTimer = null;
let idleTimer = null;
let idleEnd = 0;
let langTimer = null;        // a language switched on the product list falls back, untouched
let deadline = null;         // performance.now() when the payment window closes
let tickTimer = null;
let code = "";
let result = null;           // what the result page shows: {kind, title, text, ref}
let generation = 0;          // bumps on every navigation: late answers are dropped

function t(key, vars) {
  let text = (TEXT[lang] && TEXT[lang][key]) || TEXT.en[key] || key;
  for (const [name, value] of Object.entries(vars || {})) text = text.replace(`{${name}}`, value);
  return text;
}

function money(amount, currency) {
  try {
    return new Intl.NumberFormat(lang, {style: "currency", currency,
      currencyDisplay: "narrowSymbol"}).format(amount / 100);
  } catch (e) {
    return `${(amount / 100).toFixed(2)} ${currency}`;
  }
}

function providerName(provider) {
  const key = `provider_${provider}`;
  return TEXT.en[key] ? t(key) : provider;
}

function announce(text) {
  $("live").textContent = text;
}

// --- views ----------------------------------------------------------------------------------

function show(name, state) {
  view = name;
  document.body.dataset.view = name;
  document.body.dataset.state = state || name;
  for (const section of document.querySelectorAll("main > .view")) {
    section.hidden = section.id !== `view-${name}`;
  }
  const heading = document.querySelector(`#view-${name} h1`);
  if (heading) announce(heading.textContent);
}

function translate() {
  document.documentElement.lang = lang;
  for (const node of document.querySelectorAll("[data-t]")) node.textContent = t(node.dataset.t);
  for (const node of document.querySelectorAll("[data-t-label]")) {
    node.setAttribute("aria-label", t(node.dataset.tLabel));
  }
  const other = CONFIG.languages.find((l) => l !== lang) || lang;
  $("lang").textContent = TEXT[other].language_name;
  $("lang").setAttribute("lang", other);
  $("qr").alt = t("scan_to_pay");
  renderCredit();
  if (view === "products") renderTiles();
  if (order && (view === "pay" || view === "progress")) renderOrder(order);
  if (view === "result" && result) renderResult();
  if (view === "card" && card) renderCard(card);
  if (view === "code") renderSlots();
}

function setPath(path) {
  if (location.pathname !== path) history.replaceState(null, "", path);
}

function stopTimers() {
  for (const timer of [pollTimer, stateTimer, idleTimer, tickTimer]) clearTimeout(timer);
  pollTimer = stateTimer = idleTimer = tickTimer = null;
}

async function api(method, path, body) {
  const options = {method, headers: {Accept: "application/json"}, cache: "no-store"};
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    return {ok: false, status: 0, data: {error: "unavailable"}};
  }
  let data = {};
  try { data = await response.json(); } catch (e) { data = {error: "unavailable"}; }
  return {ok: response.ok, status: response.status, data};
}

// --- idle return ----------------------------------------------------------------------------

function startIdle(noteId) {
  clearTimeout(idleTimer);
  idleEnd = performance.now() + CONFIG.idle_seconds * 1000;
  const step = () => {
    const left = Math.max(0, Math.ceil((idleEnd - performance.now()) / 1000));
    $(noteId).textContent = t("idle", {s: left});
    if (left <= 0) { home(); return; }
    idleTimer = setTimeout(step, 250);
  };
  step();
}

// --- products -------------------------------------------------------------------------------

async function home(keepLanguage) {
  // keepLanguage: the customer is still there (Back, Cancel); else a new customer is next.
  generation++;
  stopTimers();
  order = orderId = null;
  card = null;
  result = null;
  code = "";
  if (keepLanguage === true) armLanguageReset();
  else if (lang !== CONFIG.language) { lang = CONFIG.language; translate(); }
  setPath("/");
  await refreshState(true);
}

async function refreshState(first) {
  const mine = generation;
  const answer = await api("GET", "/api/state");
  if (mine !== generation) return;
  if (answer.ok && answer.data.ok) {
    products = answer.data.products;
    credit = answer.data.cash;
    cardReader = answer.data.card === true;
    if (Number.isInteger(answer.data.code_length)) CONFIG.code_length = answer.data.code_length;
    renderCredit();
    if (view !== "products" || first) { renderTiles(); show("products"); } else renderTiles();
  } else if (view !== "service") {
    show("service");
  }
  stateTimer = setTimeout(() => refreshState(false), view === "service" ? 2000 : 4000);
}

function renderCredit() {
  const box = $("credit");
  box.hidden = credit === null || credit === undefined;
  $("change").hidden = box.hidden;
  if (!box.hidden) {
    const currency = (products[0] && products[0].currency) || "CNY";
    box.textContent = t("credit", {amount: money(credit, currency)});
  }
}

function renderTiles() {
  const tiles = $("tiles");
  const fresh = products.map((p) => JSON.stringify(p)).join("|") + lang + credit;
  if (tiles.dataset.fresh === fresh) return;   // unchanged: keep the DOM (no flicker)
  tiles.dataset.fresh = fresh;
  tiles.replaceChildren(...products.map((p) => {
    const tile = document.createElement("button");
    tile.type = "button";
    tile.className = "tile";
    tile.dataset.slot = p.slot;
    tile.disabled = p.sold_out;
    const art = document.createElement("div");
    art.className = "art";
    if (p.image) {
      const img = document.createElement("img");
      img.src = p.image;
      img.alt = "";
      art.append(img);
    } else {
      art.textContent = p.name.slice(0, 1);
      art.classList.add("letter");
    }
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = p.name;
    const price = document.createElement("span");
    price.className = "price";
    price.textContent = money(p.price, p.currency);
    tile.append(art, name, price);
    const cash = credit !== null && credit !== undefined && credit >= p.price;
    if (p.sold_out || cash) {
      const badge = document.createElement("span");
      badge.className = p.sold_out ? "badge out" : "badge cash";
      badge.textContent = p.sold_out ? t("sold_out") : t("pay_cash");
      tile.append(badge);
    }
    tile.setAttribute("aria-label", `${p.name}, ${price.textContent}` +
      (p.sold_out ? `, ${t("sold_out")}` : ""));
    tile.addEventListener("click", () => (cash ? buyCash(p) : buy(p)));
    return tile;
  }));
}

async function buy(product) {
  generation++;
  const mine = generation;
  stopTimers();
  show("loading");
  const answer = await api("POST", "/api/orders", {slot: product.slot});
  if (mine !== generation) return;
  if (!answer.ok) { showError(answer.data); return; }
  follow(answer.data);
}

async function buyCash(product) {
  generation++;
  stopTimers();
  result = null;
  order = {state: "dispensing", amount: product.price, currency: product.currency, kind: "cash"};
  renderOrder(order);
  const answer = await api("POST", "/api/cash/buy", {slot: product.slot});
  if (!answer.ok) { showError(answer.data); return; }
  const state = answer.data.state;
  const kind = ["delivered", "refunded"].includes(state) ? state : "needs_review";
  const textKey = kind === "refunded" ? "cash_refunded_text" : `${kind}_text`;
  showResult({kind, titleKey: `${kind}_title`, textKey, ref: answer.data.ref});
}

async function returnChange() {
  generation++;
  stopTimers();
  const answer = await api("POST", "/api/cash/change", {});
  if (!answer.ok) { showError(answer.data); return; }
  const paid = answer.data.paid;
  const currency = (products[0] && products[0].currency) || "CNY";
  showResult({kind: "change", titleKey: paid ? "change_title" : "back",
              textKey: paid ? "change_text" : "no_change",
              vars: {amount: money(paid, currency)}});
}

// --- an order -------------------------------------------------------------------------------

function follow(first) {
  orderId = first.id;
  setPath(`/order/${orderId}`);
  deadline = null;
  renderOrder(first);
  if (!first.final) pollTimer = setTimeout(poll, CONFIG.poll_ms);
}

async function poll() {
  const mine = generation;
  const answer = await api("GET", `/api/orders/${orderId}`);
  if (mine !== generation) return;
  if (answer.ok) {
    setReconnecting(false);
    renderOrder(answer.data);
    if (answer.data.final) return;
  } else if (answer.status === 404) {
    showError(answer.data);
    return;
  } else {
    setReconnecting(true);   // the order is still there: keep the QR and keep asking
  }
  pollTimer = setTimeout(poll, CONFIG.poll_ms);
}

function setReconnecting(on) {
  $("reconnecting").hidden = !on;
  $("progress-note").hidden = !on;
}

function renderOrder(o) {
  order = o;
  if (o.state === "awaiting_payment" && o.pay_url) {
    const qr = $("qr");
    if (qr.dataset.order !== o.id) {       // set once per order: the image never blinks
      qr.dataset.order = o.id;
      qr.src = `/qr/${encodeURIComponent(o.id)}.svg`;
    }
    $("pay-product").textContent = o.product_name;
    $("pay-amount").textContent = money(o.amount, o.currency);
    $("pay-provider").textContent = providerName(o.provider);
    $("pay-card").hidden = !cardReader;
    if (o.seconds_left !== null && o.seconds_left !== undefined) {
      const end = performance.now() + o.seconds_left * 1000;
      if (deadline === null || Math.abs(end - deadline) > 1500) deadline = end;
    }
    if (view !== "pay") { show("pay", o.state); tick(); } else document.body.dataset.state = o.state;
    return;
  }
  clearTimeout(tickTimer);
  if (PROGRESS.has(o.state)) {
    $("progress-title").textContent = t(`${o.state}_title`);
    $("progress-text").textContent = o.state === "refunding"
      ? t("refunding_text", {amount: money(o.amount, o.currency)}) : t(`${o.state}_text`);
    const changed = document.body.dataset.state !== o.state;
    show("progress", o.state);
    if (!changed) return;
    announce(`${$("progress-title").textContent} ${$("progress-text").textContent}`);
    return;
  }
  if (o.final) {
    const byCode = o.kind === "code" || o.amount === 0;
    const textKey = o.state === "refunded" && byCode ? "refunded_code_text" : `${o.state}_text`;
    const ref = ["refunded", "needs_review", "delivered"].includes(o.state) ? o.ref : null;
    showResult({kind: o.state, titleKey: `${o.state}_title`, textKey,
                vars: {amount: money(o.amount, o.currency)}, ref});
  }
}

function tick() {
  clearTimeout(tickTimer);
  if (view !== "pay") return;
  if (deadline !== null) {
    const left = Math.max(0, (deadline - performance.now()) / 1000);
    const whole = Math.ceil(left);
    $("left").textContent = `${String(Math.floor(whole / 60)).padStart(2, "0")}:` +
      String(whole % 60).padStart(2, "0");
    const total = (order && order.seconds_total) || 120;
    $("ring").style.strokeDashoffset = String(100 - Math.min(100, (left / total) * 100));
    $("ring").classList.toggle("late", left < Math.min(20, total / 4));
  }
  tickTimer = setTimeout(tick, 250);
}

async function cancelOrder(thenKeypad) {
  if (!orderId) { home(); return; }
  const id = orderId;
  generation++;
  const mine = generation;
  stopTimers();
  const answer = await api("POST", `/api/orders/${id}/cancel`, {});
  if (mine !== generation) return;
  if (answer.ok && answer.data.state === "cancelled") {
    if (thenKeypad) keypad(); else home(true);
    return;
  }
  if (answer.ok) { follow(answer.data); return; }  // paid meanwhile: follow it to the end
  orderId = id;                                     // no answer: keep showing the order
  setReconnecting(true);
  tick();
  pollTimer = setTimeout(poll, CONFIG.poll_ms);
}

// --- a card sale (the machine's own reader) -------------------------------------------------

async function payByCard() {
  // The QR order is cancelled first (as "use a code" does); then the reader waits for a card.
  if (!order || !orderId) { home(); return; }
  const slot = order.slot;
  const id = orderId;
  generation++;
  const mine = generation;
  stopTimers();
  const cancelled = await api("POST", `/api/orders/${id}/cancel`, {});
  if (mine !== generation) return;
  if (cancelled.ok && cancelled.data.state !== "cancelled") { follow(cancelled.data); return; }
  if (!cancelled.ok) { orderId = id; setReconnecting(true); tick(); pollTimer = setTimeout(poll, CONFIG.poll_ms); return; }
  order = orderId = null;
  setPath("/");
  show("loading");
  const answer = await api("POST", "/api/card", {slot});
  if (mine !== generation) return;
  if (!answer.ok) { showError(answer.data); return; }
  deadline = null;
  renderCard(answer.data);
  pollTimer = setTimeout(pollCard, CONFIG.poll_ms);
}

async function pollCard() {
  const mine = generation;
  const answer = await api("GET", `/api/card/${card.id}`);
  if (mine !== generation) return;
  if (answer.ok) {
    renderCard(answer.data);
    if (answer.data.final) return;
  } else if (answer.status === 404) {
    showError(answer.data);
    return;
  }
  pollTimer = setTimeout(pollCard, CONFIG.poll_ms);
}

function renderCard(c) {
  card = c;
  if (c.state === "tap") {
    $("card-product").textContent = c.product_name;
    $("card-amount").textContent = money(c.amount, c.currency);
    if (c.seconds_left !== null && c.seconds_left !== undefined) {
      const end = performance.now() + c.seconds_left * 1000;
      if (deadline === null || Math.abs(end - deadline) > 1500) deadline = end;
    }
    if (view !== "card") { show("card", "tap"); cardTick(); }
    return;
  }
  clearTimeout(tickTimer);
  if (c.state === "dispensing") {
    $("progress-title").textContent = t("dispensing_title");
    $("progress-text").textContent = t("dispensing_text");
    const changed = document.body.dataset.state !== "dispensing";
    show("progress", "dispensing");
    if (changed) announce(`${t("card_approved_title")} ${t("dispensing_title")}`);
    return;
  }
  if (c.state === "cancelled") { home(true); return; }
  if (c.state === "error") { showError({error: c.error}); return; }
  const kind = ["delivered", "refunded", "needs_review", "denied", "no_card"].includes(c.state)
    ? c.state : "needs_review";
  const textKey = kind === "refunded" ? "card_refunded_text" : `${kind}_text`;
  const ref = ["delivered", "refunded", "needs_review"].includes(kind) ? c.ref : null;
  showResult({kind, titleKey: `${kind}_title`, textKey,
              vars: {amount: money(c.amount, c.currency)}, ref});
}

function cardTick() {
  clearTimeout(tickTimer);
  if (view !== "card") return;
  if (deadline !== null) {
    const left = Math.max(0, (deadline - performance.now()) / 1000);
    const whole = Math.ceil(left);
    $("card-left").textContent = `${String(Math.floor(whole / 60)).padStart(2, "0")}:` +
      String(whole % 60).padStart(2, "0");
    const total = (card && card.seconds_total) || 60;
    $("card-ring").style.strokeDashoffset = String(100 - Math.min(100, (left / total) * 100));
    $("card-ring").classList.toggle("late", left < Math.min(10, total / 4));
  }
  tickTimer = setTimeout(cardTick, 250);
}

async function cancelCard() {
  // Asks the agent to stop waiting; the page follows until it says so (a card tapped just
  // now still gets its answer from the reader, and the page shows it).
  if (!card) { home(true); return; }
  const answer = await api("POST", `/api/card/${card.id}/cancel`, {});
  if (answer.ok) renderCard(answer.data);
}

// --- results and errors ---------------------------------------------------------------------

function showResult(r) {
  result = r;
  stopTimers();
  renderResult();
  show("result", r.kind);
  announce(`${$("result-title").textContent} ${$("result-text").textContent}`);
  startIdle("idle");
}

function renderResult() {
  $("result-icon").innerHTML = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="' +
    ICON_PATHS[ICONS[result.kind] || "bang"] + '"/></svg>';
  $("result-icon").className = `icon ${result.kind}`;
  $("result-title").textContent = t(result.titleKey);
  $("result-text").textContent = t(result.textKey, result.vars);
  $("result-ref").hidden = !result.ref;
  $("result-ref").textContent = result.ref ? t("reference", {ref: result.ref}) : "";
}

function errorKey(data) {
  const key = `err_${(data && data.error) || "refused"}`;
  return TEXT.en[key] ? key : "err_refused";   // a word this page does not know: general
}

function showError(data) {
  const word = (data && data.error) || "refused";
  if (word === "unavailable") { show("service"); stateTimer = setTimeout(() => home(true), 2000); return; }
  showResult({kind: "error", titleKey: "error_title", textKey: errorKey(data),
              vars: {s: Math.ceil((data && data.retry_after) || 0)}});
}

// --- the code keypad ------------------------------------------------------------------------

function keypad() {
  generation++;
  stopTimers();
  order = orderId = null;
  code = "";
  $("code-error").textContent = "";
  setPath("/code");
  renderSlots();
  show("code");
  startIdle("code-idle");
}

function renderSlots() {
  const slots = $("slots");
  if (slots.children.length !== CONFIG.code_length) {
    slots.replaceChildren(...Array.from({length: CONFIG.code_length}, () => {
      const slot = document.createElement("span");
      slot.className = "slot";
      return slot;
    }));
  }
  [...slots.children].forEach((slot, i) => {
    slot.textContent = code[i] || "";
    slot.classList.toggle("filled", i < code.length);
    slot.classList.toggle("next", i === code.length);
  });
  $("key-ok").disabled = code.length !== CONFIG.code_length;
  $("slots").setAttribute("aria-label", `${code.length}/${CONFIG.code_length}`);
}

function press(key) {
  if (view !== "code") return;
  startIdle("code-idle");
  if (key === "del") code = code.slice(0, -1);
  else if (code.length < CONFIG.code_length) code += key;
  if (key !== "del" || code.length) $("code-error").textContent = "";
  renderSlots();
}

async function sendCode() {
  if (code.length !== CONFIG.code_length) return;
  const sent = code;
  generation++;
  const mine = generation;
  clearTimeout(idleTimer);
  $("key-ok").disabled = true;
  const answer = await api("POST", "/api/codes", {code: sent});
  if (mine !== generation) return;
  if (answer.ok) { follow(answer.data); return; }
  code = "";
  renderSlots();
  $("code-error").textContent = t(errorKey(answer.data),
                                  {s: Math.ceil(answer.data.retry_after || 0)});
  startIdle("code-idle");
}

// --- start ----------------------------------------------------------------------------------

function bind() {
  $("qr").addEventListener("error", () => {   // the agent was busy or away: load it again
    const qr = $("qr");
    const id = qr.dataset.order;
    setTimeout(() => {
      if (qr.dataset.order === id && view === "pay") {
        qr.src = `/qr/${encodeURIComponent(id)}.svg?again=${Date.now()}`;
      }
    }, 1000);
  });
  $("lang").addEventListener("click", () => {
    lang = CONFIG.languages[(CONFIG.languages.indexOf(lang) + 1) % CONFIG.languages.length];
    translate();
    armLanguageReset();
    if (view === "code" || view === "result") startIdle(view === "code" ? "code-idle" : "idle");
  });
  $("to-code").addEventListener("click", keypad);
  $("change").addEventListener("click", returnChange);
  $("cancel").addEventListener("click", () => cancelOrder(false));
  $("pay-to-code").addEventListener("click", () => cancelOrder(true));
  $("pay-card").addEventListener("click", payByCard);
  $("card-cancel").addEventListener("click", cancelCard);
  $("home").addEventListener("click", () => home(true));
  $("code-back").addEventListener("click", () => home(true));
  $("key-del").addEventListener("click", () => press("del"));
  $("key-ok").addEventListener("click", sendCode);
  for (const key of document.querySelectorAll("[data-key]")) {
    key.addEventListener("click", () => press(key.dataset.key));
  }
  document.addEventListener("pointerdown", () => { if (langTimer) armLanguageReset(); });
  document.addEventListener("keydown", (event) => {   // a USB keypad works too
    if (view !== "code") return;
    if (/^[0-9]$/.test(event.key)) press(event.key);
    else if (event.key === "Backspace") press("del");
    else if (event.key === "Enter") sendCode();
  });
}

async function resume(id) {
  // A reload on an order's address (kiosk browser restarted): follow the order again; while
  // the agent or backend cannot say how it stands, show "out of service" and keep asking.
  orderId = id;
  const answer = await api("GET", `/api/orders/${id}`);
  if (answer.ok) { follow(answer.data); return; }
  if (answer.status === 404) { showError(answer.data); return; }
  if (view !== "service") show("service");
  pollTimer = setTimeout(() => resume(id), 2000);
}

function armLanguageReset() {
  // The next customer meets the machine's language: a switch left on the product list
  // untouched for twice the idle time goes back (result pages go back through home()).
  clearTimeout(langTimer);
  if (lang === CONFIG.language) return;
  langTimer = setTimeout(() => {
    if (view === "products" || view === "service") { lang = CONFIG.language; translate(); }
    else armLanguageReset();
  }, CONFIG.idle_seconds * 2000);
}

async function start() {
  bind();
  translate();
  const path = location.pathname;
  const match = path.match(/^\/order\/([\w-]+)$/);
  if (match) {
    resume(match[1]);
  } else if (path === "/code") {
    keypad();
  } else {
    home();
  }
}

start();
