// sim2pi teleop page. No build step, no dependencies.
//
// Inputs (highest priority first): the on-screen joystick (pointer events: touch, mouse, pen),
// a gamepad (Gamepad API, left stick), the keyboard (WASD / arrows). They become a
// (throttle, turn) pair, mixed into (left, right) wheel duty and sent as a `drive` message every
// 50 ms while the page is visible: the robot stops when these stop arriving (deadman), when the
// socket closes, or when the tab is hidden.
"use strict";

(() => {
  const SEND_MS = 50;          // drive message period (the server's deadman is 0.3 s)
  const PING_MS = 1000;
  const DEADZONE = 0.08;       // gamepad stick dead zone
  const $ = (id) => document.getElementById(id);

  // --- token: from the URL fragment (never sent to the server), kept for reloads -------------
  let token = null;
  const m = /(?:^|[#&])token=([A-Za-z0-9_-]+)/.exec(location.hash);
  if (m) {
    token = m[1];
    try { sessionStorage.setItem("sim2pi.token", token); } catch (e) { /* private mode */ }
    history.replaceState(null, "", location.pathname + location.search);
  } else {
    try { token = sessionStorage.getItem("sim2pi.token"); } catch (e) { token = null; }
  }

  // --- state --------------------------------------------------------------------------------
  const keys = new Set();
  const stick = { active: false, id: null, x: 0, y: 0 };
  let pad = { x: 0, y: 0, active: false };
  let speed = 0.6;
  let ws = null;
  let seq = 0;
  let retry = 500;
  let frames = 0;
  let fps = 0;
  let lastUrl = null;
  let pingId = 0;
  const pings = new Map();
  let lastCmd = [0, 0];

  // --- websocket ----------------------------------------------------------------------------
  function connect() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const protocols = ["sim2pi.v1"];
    if (token) protocols.push("sim2pi.token." + token);
    const sock = new WebSocket(`${proto}://${location.host}/ws`, protocols);
    sock.binaryType = "blob";
    ws = sock;
    sock.onopen = () => {
      retry = 500;
      setConn(true);
      send({ type: "visibility", visible: !document.hidden });
    };
    sock.onmessage = (ev) => {
      if (typeof ev.data !== "string") { showFrame(ev.data); return; }
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      if (msg.type === "telemetry") telemetry(msg);
      else if (msg.type === "pong") pong(msg);
      else if (msg.type === "error") notice("refused: " + msg.error);
      else if (msg.type === "hello") notice("");
    };
    sock.onclose = (ev) => {
      if (ws === sock) ws = null;
      setConn(false);
      if (ev.code === 1008 || ev.code === 1006 && !token && location.hostname !== "localhost" &&
          location.hostname !== "127.0.0.1") {
        notice("connection refused: open the URL printed by `sim2pi teleop` (it carries the token)");
      }
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 5000);
    };
  }

  function send(obj) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
  }

  function setConn(on) {
    const el = $("conn");
    el.textContent = on ? "online" : "offline";
    el.className = "pill " + (on ? "on" : "off");
  }

  function notice(text) {
    const el = $("notice");
    el.textContent = text;
    el.classList.toggle("hidden", !text);
  }

  // --- live view ----------------------------------------------------------------------------
  function showFrame(blob) {
    const url = URL.createObjectURL(blob);
    const img = $("view");
    const old = lastUrl;
    lastUrl = url;
    img.onload = () => { if (old) URL.revokeObjectURL(old); };
    img.src = url;
    frames += 1;
  }
  setInterval(() => { fps = frames; frames = 0; $("t-fps").textContent = fps + " fps"; }, 1000);

  // --- telemetry ----------------------------------------------------------------------------
  const fmt = (x, d = 2) => (typeof x === "number" && isFinite(x) ? x.toFixed(d) : "–");
  function telemetry(t) {
    $("t-range").textContent = t.range_valid === false ? "no echo" :
      (typeof t.range === "number" ? fmt(t.range) + " m" : "–");
    $("t-wheels").textContent = Array.isArray(t.wheel_speed) ?
      fmt(t.wheel_speed[0], 1) + " / " + fmt(t.wheel_speed[1], 1) : "–";
    $("t-applied").textContent = Array.isArray(t.applied) ?
      fmt(t.applied[0]) + " / " + fmt(t.applied[1]) : "–";
    $("t-loop").textContent = typeof t.loop_hz === "number" ? fmt(t.loop_hz, 1) + " Hz" : "–";
    $("t-episodes").textContent = t.episodes ?? "–";
    $("t-safety").textContent = Array.isArray(t.safety) && t.safety.length ? t.safety.join(", ") : "ok";
    $("mode-pill").textContent = "mode " + (t.mode ?? "?");
    for (const b of document.querySelectorAll("button.mode")) {
      b.classList.toggle("selected", b.dataset.mode === t.mode);
    }
    const rec = $("rec-pill");
    rec.textContent = t.recording ? `REC ${t.frames ?? 0}` : "not recording";
    rec.className = "pill" + (t.recording ? " rec" : "");
    $("rec-start").disabled = !!t.recording;
    $("rec-stop").disabled = !t.recording;
    $("rec-discard").disabled = !t.recording;
    const latched = !!t.estop;
    $("estop-banner").classList.toggle("hidden", !latched);
    $("estop").classList.toggle("latched", latched);
    if (t.driver === false) notice("another page is driving; this one only watches (e-stop works)");
  }

  function pong(msg) {
    const t0 = pings.get(msg.id);
    if (t0 === undefined) return;
    pings.delete(msg.id);
    $("t-rtt").textContent = (performance.now() - t0).toFixed(0) + " ms";
  }
  setInterval(() => {
    pingId += 1;
    pings.set(pingId, performance.now());
    if (pings.size > 20) pings.delete(pings.keys().next().value);
    send({ type: "ping", id: pingId });
  }, PING_MS);

  // --- inputs -------------------------------------------------------------------------------
  const clamp = (x) => Math.max(-1, Math.min(1, x));

  // Joystick: pointer events cover touch, mouse and pen; capture keeps the drag when the finger
  // leaves the pad.
  const pad_el = $("stick");
  const knob = $("knob");
  function stickMove(ev) {
    const r = pad_el.getBoundingClientRect();
    const rad = r.width / 2;
    let dx = (ev.clientX - (r.left + rad)) / rad;
    let dy = (ev.clientY - (r.top + rad)) / rad;
    const n = Math.hypot(dx, dy);
    if (n > 1) { dx /= n; dy /= n; }
    stick.x = dx;
    stick.y = -dy;
    knob.style.left = (50 + dx * 50) + "%";
    knob.style.top = (50 + dy * 50) + "%";
  }
  function stickEnd() {
    stick.active = false;
    stick.id = null;
    stick.x = 0;
    stick.y = 0;
    knob.style.left = "50%";
    knob.style.top = "50%";
    pad_el.classList.remove("active");
  }
  pad_el.addEventListener("pointerdown", (ev) => {
    ev.preventDefault();
    stick.active = true;
    stick.id = ev.pointerId;
    pad_el.setPointerCapture(ev.pointerId);
    pad_el.classList.add("active");
    stickMove(ev);
  });
  pad_el.addEventListener("pointermove", (ev) => {
    if (stick.active && ev.pointerId === stick.id) stickMove(ev);
  });
  for (const t of ["pointerup", "pointercancel", "lostpointercapture"]) {
    pad_el.addEventListener(t, (ev) => { if (ev.pointerId === stick.id) stickEnd(); });
  }
  // Older mobile browsers without pointer events: touch events as a fallback.
  if (!window.PointerEvent) {
    pad_el.addEventListener("touchstart", (ev) => {
      ev.preventDefault(); stick.active = true; stickMove(ev.touches[0]);
    }, { passive: false });
    pad_el.addEventListener("touchmove", (ev) => {
      ev.preventDefault(); if (stick.active) stickMove(ev.touches[0]);
    }, { passive: false });
    pad_el.addEventListener("touchend", stickEnd);
    pad_el.addEventListener("touchcancel", stickEnd);
  }

  const DRIVE_KEYS = {
    KeyW: "up", ArrowUp: "up", KeyS: "down", ArrowDown: "down",
    KeyA: "left", ArrowLeft: "left", KeyD: "right", ArrowRight: "right",
  };
  window.addEventListener("keydown", (ev) => {
    if (ev.target instanceof HTMLInputElement && ev.target.type !== "range") return;
    if (ev.code === "Space") { ev.preventDefault(); estop(); return; }
    const k = DRIVE_KEYS[ev.code];
    if (k) { ev.preventDefault(); keys.add(k); }
  });
  window.addEventListener("keyup", (ev) => {
    const k = DRIVE_KEYS[ev.code];
    if (k) keys.delete(k);
  });
  // A key released while the window had no focus would stick: drop them all.
  window.addEventListener("blur", () => { keys.clear(); stickEnd(); });

  function pollGamepad() {
    pad = { x: 0, y: 0, active: false };
    const list = navigator.getGamepads ? navigator.getGamepads() : [];
    for (const g of list) {
      if (!g || !g.connected) continue;
      const ax = Math.abs(g.axes[0] || 0) > DEADZONE ? g.axes[0] : 0;
      const ay = Math.abs(g.axes[1] || 0) > DEADZONE ? g.axes[1] : 0;
      if (g.buttons[1] && g.buttons[1].pressed) estop();  // B / circle = e-stop
      if (ax || ay) { pad = { x: clamp(ax), y: clamp(-ay), active: true }; break; }
    }
  }

  // (throttle, turn) → (left, right) wheel duty; scaled so no wheel exceeds 1.
  function mix(v, w) {
    let l = v + w;
    let r = v - w;
    const s = Math.max(1, Math.abs(l), Math.abs(r));
    return [clamp((l / s) * speed), clamp((r / s) * speed)];
  }

  function currentCommand() {
    pollGamepad();
    if (stick.active) { $("input-src").textContent = "joystick"; return mix(stick.y, stick.x); }
    if (pad.active) { $("input-src").textContent = "gamepad"; return mix(pad.y, pad.x); }
    const v = (keys.has("up") ? 1 : 0) - (keys.has("down") ? 1 : 0);
    const w = (keys.has("right") ? 1 : 0) - (keys.has("left") ? 1 : 0);
    if (v || w) $("input-src").textContent = "keyboard";
    // Turning in place with the keys uses half the duty; with throttle it is a gentle curve.
    return mix(v, v ? 0.5 * w : 0.6 * w);
  }

  setInterval(() => {
    if (document.hidden) return;
    const [l, r] = currentCommand();
    lastCmd = [l, r];
    seq += 1;
    send({ type: "drive", left: Math.round(l * 1000) / 1000, right: Math.round(r * 1000) / 1000, seq });
  }, SEND_MS);

  // Hidden tab → tell the robot to stop now (and stop sending: the deadman would stop it anyway).
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) { keys.clear(); stickEnd(); }
    send({ type: "visibility", visible: !document.hidden });
  });
  window.addEventListener("pagehide", () => { if (ws) ws.close(1000); });

  // --- buttons ------------------------------------------------------------------------------
  function estop() { send({ type: "estop" }); }
  $("estop").addEventListener("click", estop);
  $("reset").addEventListener("click", () => send({ type: "reset" }));
  $("episode").addEventListener("click", () => send({ type: "episode" }));
  $("success").addEventListener("click", () => send({ type: "success" }));
  $("rec-start").addEventListener("click", () => send({ type: "record", op: "start" }));
  $("rec-stop").addEventListener("click", () => send({ type: "record", op: "stop" }));
  $("rec-discard").addEventListener("click", () => {
    if (confirm("Discard the episode being recorded?")) send({ type: "record", op: "discard" });
  });
  for (const b of document.querySelectorAll("button.mode")) {
    b.addEventListener("click", () => send({ type: "mode", mode: b.dataset.mode }));
  }
  const sp = $("speed");
  const spOut = $("speed-out");
  sp.addEventListener("input", () => { speed = Number(sp.value) / 100; spOut.textContent = sp.value + "%"; });
  speed = Number(sp.value) / 100;

  window.sim2pi = { get command() { return lastCmd; }, get fps() { return fps; } };
  connect();
})();
