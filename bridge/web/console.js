/* The producer's console. Everything shown comes from the daemon (state keys and the take sheet);
   an action shows "pending" until the daemon answers that the fact is confirmed (or why not). */
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const S = {
    ws: null, state: {}, sheet: null, verbs: [], transport: true, room: "", offset: 0,
    nextId: 1, pending: new Map(), view: "song", retry: 500, talkHeld: false, connected: false, replies: 0, trail: [], renders: [], liveAt: null,
  };
  window.console_state = S; // for tests, the benchmark and the curious

  // ------------------------------------------------------------------ connection
  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/ws`);
    S.ws = ws;
    ws.onopen = () => { S.retry = 500; };
    ws.onmessage = (ev) => {
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      onMessage(m);
    };
    ws.onclose = () => {
      if (S.ws !== ws) return;
      S.connected = false;
      S.ws = null;
      setLink(false);
      // talkback: the daemon releases it for a lost connection; show it released here too
      releaseTalk(false);
      for (const [id, p] of S.pending) {
        finish(p, "connection lost: not confirmed (the list will show what happened)");
      }
      S.pending.clear();
      setTimeout(connect, S.retry);
      S.retry = Math.min(5000, S.retry * 2);
    };
  }

  function setLink(up) {
    const el = $("link");
    el.className = "link " + (up ? "up" : "down");
    el.textContent = up ? "live" : "reconnecting…";
    document.body.dataset.live = up ? "1" : "0";
  }

  function onMessage(m) {
    switch (m.t) {
      case "hello":
        S.verbs = m.verbs || []; S.transport = !!m.transport; S.room = m.room || "";
        S.roles = m.roles || {};
        S.offset = (m.server_time || Date.now() / 1000) - Date.now() / 1000;
        $("room").textContent = S.room;
        $("transportbtns").style.display = S.transport ? "" : "none";
        break;
      case "snapshot":
        S.state = m.state || {}; S.sheet = m.sheet; S.connected = true;
        setLink(true); renderAll();
        if (S.liveAt === null) S.liveAt = performance.now();
        break;
      case "state":
        for (const [k, v] of Object.entries(m.set || {})) {
          if (v === null) delete S.state[k]; else S.state[k] = v;
        }
        renderState();
        if (Object.keys(m.set || {}).some((k) => k === "song" || (k.startsWith("take") && k !== "take/elapsed"))) {
          renderTakes();
        }
        break;
      case "sheet":
      case "delta":
        if (m.t === "sheet" || !S.sheet) S.sheet = m.sheet || S.sheet;
        else mergeDelta(m);
        renderTakes(); renderState();
        // when each change was on screen (wall clock, ms), for the benchmark
        S.renders.push([performance.timeOrigin + performance.now(), (S.sheet.log || {}).last_seq]);
        if (S.renders.length > 1000) S.renders.splice(0, 500);
        break;
      case "reply": {
        const p = S.pending.get(m.id);
        if (p) { S.pending.delete(m.id); finish(p, m.ok ? null : (m.error || "failed")); }
        else if (!m.ok) showStatus(m.error || "error", true);
        break;
      }
    }
  }

  // takes, cues and notes never go away within a session: a delta upserts them by seq
  function mergeDelta(m) {
    for (const kind of ["takes", "talkback", "notes"]) {
      const list = S.sheet[kind];
      for (const item of m[kind] || []) {
        const i = list.findIndex((x) => x.seq === item.seq);
        if (i >= 0) list[i] = item;
        else { list.push(item); list.sort((a, b) => a.seq - b.seq); }
      }
    }
    for (const key of ["songs", "log", "session"]) if (key in m) S.sheet[key] = m[key];
  }

  // ------------------------------------------------------------------ actions
  function act(verb, args, el, what) {
    if (!S.ws || S.ws.readyState !== WebSocket.OPEN) {
      showStatus(`${what || verb}: not connected`, true);
      return null;
    }
    const id = S.nextId++;
    const p = { id, verb, el, what: what || verb, t0: performance.now() };
    S.pending.set(id, p);
    if (el) { el.classList.add("pending"); el.classList.remove("failed"); el.dataset.state = "pending"; }
    showStatus(`${p.what}…`, false);
    S.trail.push([id, verb, "pending", performance.now()]);
    S.ws.send(JSON.stringify({ id, verb, args: args || {} }));
    return id;
  }

  function finish(p, error) {
    S.trail.push([p.id, p.verb, error ? "error" : "done", performance.now()]);
    if (S.trail.length > 2000) S.trail.splice(0, 1000);
    const el = p.el;
    if (el) {
      el.classList.remove("pending");
      el.dataset.state = error ? "error" : "done";
      if (error) el.classList.add("failed");
    }
    if (error) showStatus(`${p.what}: ${error}`, true);
    else showStatus(`${p.what}: done`, false, true);
    document.body.dataset.lastReply = error ? "error" : "done";
    document.body.dataset.lastError = error || "";
    document.body.dataset.replies = String(++S.replies);
    if (S.onreply) S.onreply(p, error);
  }

  let statusTimer = null;
  function showStatus(text, err, ok) {
    const el = $("status");
    el.textContent = text;
    el.className = "status" + (err ? " err" : ok ? " ok" : "");
    clearTimeout(statusTimer);
    if (!err) statusTimer = setTimeout(() => { el.textContent = ""; }, 4000);
  }

  // ------------------------------------------------------------------ rendering
  const fmtDur = (s) => {
    if (s === null || s === undefined) return "";
    s = Math.max(0, s);
    const m = Math.floor(s / 60), sec = Math.floor(s % 60);
    return `${m}:${String(sec).padStart(2, "0")}`;
  };
  const pad2 = (n) => String(n).padStart(2, "0");
  const fmtClock = (iso) => {  // local wall clock, 24 h (toLocaleTimeString is ~50 µs a call)
    if (!iso) return "";
    const d = new Date(iso);
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  };
  const esc = (t) => String(t).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

  function currentSong() { return typeof S.state.song === "string" ? S.state.song : ""; }

  function currentTake() {
    if (!S.sheet) return null;
    const song = currentSong(), n = S.state.take;
    for (let i = S.sheet.takes.length - 1; i >= 0; i--) {
      const t = S.sheet.takes[i];
      if (t.song === song && t.take === n) return t;
    }
    return null;
  }

  function renderAll() { renderState(); renderTakes(); }

  function renderState() {
    const st = S.state;
    const onAir = st["transport/on_air"] === true;
    const oa = $("onair");
    oa.className = "onair" + (onAir ? " on" : "");
    oa.textContent = onAir ? "ON AIR" : "OFF AIR";
    $("session").textContent = st.session || "—";
    const playing = st["transport/playing"] === true, rec = st["transport/recording"] === true;
    $("transport").textContent = (playing ? (rec ? "recording" : "playing") : (rec ? "record armed, stopped" : "stopped"))
      + (st["transport/assumed"] ? " (assumed)" : "");
    $("play").classList.toggle("on", playing);
    $("rec").classList.toggle("on", rec);
    const talk = $("talk");
    talk.classList.toggle("on", st.talkback === true);
    talk.setAttribute("aria-pressed", st.talkback === true ? "true" : "false");
    talk.textContent = st.talkback === true ? "TALKING" : "Hold to talk";
    const take = st.take;
    $("takeno").textContent = take ? String(take) : "—";
    $("takelabel").textContent = (currentTake() || {}).label || st["take/label"] || "";
    renderSongs();
    renderHealth();
    tick();
  }

  function renderSongs() {
    const sel = $("song");
    const songs = [...((S.sheet && S.sheet.songs) || [])];
    let list = null;  // the session's song list: a JSON array in the state key "songs"
    try { list = typeof S.state.songs === "string" ? JSON.parse(S.state.songs) : null; } catch (e) { list = null; }
    if (!Array.isArray(list)) list = null;
    if (list) for (const s of list) if (!songs.includes(s)) songs.push(s);
    const cur = currentSong();
    if (cur && !songs.includes(cur)) songs.push(cur);
    const want = JSON.stringify([songs, cur]);
    if (sel.dataset.key === want) return;
    sel.dataset.key = want;
    sel.innerHTML = (cur ? "" : '<option value="">(no song)</option>')
      + songs.map((s) => `<option${s === cur ? " selected" : ""}>${esc(s)}</option>`).join("");
  }

  const ROLE_NAMES = { daw: "DAW", mixer: "Mixer", talkback: "Talkback" };
  function renderHealth() {
    const el = $("health");
    const byDevice = {};
    for (const [role, name] of Object.entries(S.roles || {})) byDevice[name] = ROLE_NAMES[role] || role;
    const devices = [];
    for (const [k, v] of Object.entries(S.state)) {
      const m = /^device\/(.+)\/status$/.exec(k);
      if (!m || m[1] === "web") continue;
      devices.push([m[1], v]);
    }
    // the devices with a role first (DAW, mixer, talkback), then the others
    devices.sort((a, b) => (byDevice[a[0]] ? 0 : 1) - (byDevice[b[0]] ? 0 : 1) || a[0].localeCompare(b[0]));
    const chips = [];
    for (const [name, v] of devices) {
      const cls = v === "ok" ? "ok" : (v === "connecting" ? "warn" : "bad");
      const label = byDevice[name] ? `${byDevice[name]} · ${name}` : name;
      chips.push(`<span class="chip ${cls}" data-device="${esc(name)}" title="${esc(name)}: ${esc(v)}">${esc(label)}</span>`);
    }
    const lg = (S.sheet && S.sheet.log) || {};
    chips.push(`<span class="chip ${lg.ok === false ? "bad" : "ok"}" data-device="log" title="session log${lg.detail ? ": " + esc(lg.detail) : ""}">log</span>`);
    const html = chips.join("");
    if (el.innerHTML !== html) el.innerHTML = html;
  }

  function tick() {
    const t = currentTake(), el = $("elapsed");
    const open = !!(t && t.duration === null);
    if (open && typeof S.state["take/elapsed"] === "number") {
      el.textContent = fmtDur(S.state["take/elapsed"]);  // the daemon's: DAW position - take start
    } else if (open) {
      el.textContent = fmtDur(Date.now() / 1000 + S.offset - Date.parse(t.start) / 1000);
    } else if (t) {
      el.textContent = fmtDur(t.duration);
    } else {
      el.textContent = "0:00";
    }
    el.classList.toggle("running", open && S.state["transport/playing"] === true);
  }
  setInterval(tick, 250);

  function takeRow(t, isCurrent) {
    const cls = ["take"];
    if (t.circled) cls.push("circled");
    if (t.false_start) cls.push("false");
    if (isCurrent) cls.push("current");
    if (t.song === currentSong() && t.take === S.state["take/selected"]) cls.push("selected");
    const badges = (t.circled ? '<span class="badge c">CIRCLED</span>' : "")
      + (t.false_start ? '<span class="badge f">FALSE START</span>' : "");
    const notes = (t.notes || []).map((n) => `<div>${esc(n)}</div>`).join("");
    const dur = t.duration === null ? "running" : fmtDur(t.duration);
    const key = `${esc(t.song)}|${t.take}`;
    return `<div class="${cls.join(" ")}" data-seq="${t.seq}" data-song="${esc(t.song)}" data-take="${t.take}">
      <button class="num" type="button" data-act="select" data-key="${key}" aria-label="select take ${t.take}">${t.take ?? "?"}</button>
      <div class="meta"><div class="label">${esc(t.label || "Take " + t.take)}<span class="badges">${badges}</span></div>
        <div class="times">${fmtClock(t.start)} · ${dur}</div></div>
      <div class="acts">
        <button class="btn circle${t.circled ? " on" : ""}" type="button" data-act="circle" data-key="${key}" aria-label="circle take ${t.take}">${t.circled ? "◉ Circled" : "○ Circle"}</button>
        <button class="btn fs${t.false_start ? " on" : ""}" type="button" data-act="falsestart" data-key="${key}">FS</button>
        <button class="btn" type="button" data-act="rename" data-key="${key}">Rename</button>
        <button class="btn" type="button" data-act="note" data-key="${key}">Note</button>
      </div>
      ${notes ? `<div class="notes">${notes}</div>` : ""}
    </div>`;
  }

  function cueRow(c) {
    const dur = c.duration === null ? "talking…" : `${c.duration.toFixed(1)} s`;
    const audio = c.audio ? ` · <a href="#" title="${esc(c.audio)}">audio</a>` : "";
    return `<div class="cue" data-cue="${c.seq}">◆ talkback ${fmtClock(c.start)} · ${dur}${audio}</div>`;
  }

  // the list is a sequence of keyed pieces of HTML; only the pieces that changed are replaced
  let shownKeys = [], shownHtml = [];
  function renderTakes() {
    const box = $("takes");
    if (!S.sheet) { box.innerHTML = '<div class="empty">loading…</div>'; shownKeys = []; shownHtml = []; return; }
    const song = currentSong(), cur = currentTake();
    const items = [];
    for (const t of S.sheet.takes) items.push({ seq: t.seq, t });
    for (const c of S.sheet.talkback) items.push({ seq: c.seq, c });
    for (const n of S.sheet.notes) items.push({ seq: n.seq, n });
    items.sort((a, b) => a.seq - b.seq);
    const keys = [], parts = [];
    let lastSong = null, count = 0;
    for (const it of items) {
      const itemSong = it.t ? it.t.song : it.c ? it.c.song : it.n.song;
      if (S.view === "song" && itemSong !== song) continue;
      if (S.view === "session" && it.t && it.t.song !== lastSong) {
        keys.push("h" + it.seq); parts.push(`<div class="songhead">${esc(it.t.song || "(no song)")}</div>`);
        lastSong = it.t.song;
      }
      if (it.t) { keys.push("t" + it.seq); parts.push(takeRow(it.t, cur && it.t.seq === cur.seq)); count++; }
      else if (it.c) { keys.push("c" + it.seq); parts.push(cueRow(it.c)); }
      else { keys.push("n" + it.seq); parts.push(`<div class="cue">✎ ${esc(it.n.text)}</div>`); }
    }
    if (!count) {
      keys.unshift("empty");
      parts.unshift(`<div class="empty">No takes ${S.view === "song" ? "of this song " : ""}yet.</div>`);
    }
    const sameShape = keys.length === shownKeys.length && keys.every((k, i) => k === shownKeys[i])
      && box.children.length === keys.length;
    if (sameShape) {
      const tmp = document.createElement("template");
      for (let i = 0; i < parts.length; i++) {
        if (parts[i] === shownHtml[i]) continue;
        tmp.innerHTML = parts[i];
        box.replaceChild(tmp.content.firstElementChild, box.children[i]);
      }
    } else {
      box.innerHTML = parts.join("");
    }
    shownKeys = keys; shownHtml = parts;
    // keep pending marks on buttons across re-renders
    for (const p of S.pending.values()) {
      if (!p.el || !p.el.dataset.act || p.el.isConnected) continue;
      const b = box.querySelector(`button[data-act="${p.el.dataset.act}"][data-key="${CSS.escape(p.el.dataset.key)}"]`);
      if (b) { p.el = b; b.classList.add("pending"); b.dataset.state = "pending"; }
    }
    document.body.dataset.takes = String(S.sheet.takes.length);
  }

  // ------------------------------------------------------------------ dialogs
  function ask(label, value) {
    return new Promise((resolve) => {
      const dlg = $("ask");
      $("asklabel").textContent = label;
      const input = $("askinput");
      input.value = value || "";
      dlg.returnValue = "";
      dlg.onclose = () => resolve(dlg.returnValue === "ok" ? input.value : null);
      dlg.showModal();
      input.focus();
      input.select();
    });
  }

  // ------------------------------------------------------------------ wiring
  function findTake(key) {
    const [song, n] = [key.slice(0, key.lastIndexOf("|")), Number(key.slice(key.lastIndexOf("|") + 1))];
    return (S.sheet.takes || []).find((t) => t.song === song && t.take === n);
  }

  $("takes").addEventListener("click", async (ev) => {
    const b = ev.target.closest("button[data-act]");
    if (!b) return;
    const t = findTake(b.dataset.key);
    if (!t) return;
    const args = { take: t.take, song: t.song };
    const name = `take ${t.take}`;
    switch (b.dataset.act) {
      case "select":
        act("take.select", args, b, `select ${name}`);
        break;
      case "circle":
        act("take.circle", { ...args, on: !t.circled }, b, `${t.circled ? "un-circle" : "circle"} ${name}`);
        break;
      case "falsestart":
        act("take.falsestart", { ...args, on: !t.false_start }, b, `false start ${t.false_start ? "off" : "on"} ${name}`);
        break;
      case "rename": {
        const text = await ask(`New name for ${name}`, t.label);
        if (text !== null) act("take.rename", { ...args, label: text }, b, `rename ${name}`);
        break;
      }
      case "note": {
        const text = await ask(`Note on ${name}`, "");
        if (text) act("note", { ...args, text }, b, `note on ${name}`);
        break;
      }
    }
  });

  $("mark").addEventListener("click", (ev) => act("take.mark", {}, ev.currentTarget, "mark take"));
  for (const id of ["play", "stop"]) {
    $(id).addEventListener("click", (ev) => act(ev.currentTarget.dataset.verb, {}, ev.currentTarget, id));
  }
  $("rec").addEventListener("click", (ev) => {
    const on = S.state["transport/recording"] !== true;
    act("transport.record", { on }, ev.currentTarget, on ? "record on" : "record off");
  });
  $("song").addEventListener("change", (ev) => {
    const name = ev.target.value;
    if (name) act("song", { name }, ev.target, `song ${name}`);
  });
  $("newsong").addEventListener("click", async (ev) => {
    const btn = ev.currentTarget;
    const name = await ask("Song name", "");
    if (name && name.trim()) act("song", { name: name.trim() }, btn, `song ${name.trim()}`);
  });
  for (const [id, view] of [["tab-song", "song"], ["tab-session", "session"]]) {
    $(id).addEventListener("click", () => {
      S.view = view;
      $("tab-song").classList.toggle("on", view === "song");
      $("tab-session").classList.toggle("on", view === "session");
      renderTakes();
    });
  }

  // push-to-talk: press and hold; every way a press can end releases it
  const talk = $("talk");
  function pressTalk(ev) {
    ev.preventDefault();
    if (S.talkHeld) return;
    S.talkHeld = true;
    if (ev.pointerId !== undefined) { try { talk.setPointerCapture(ev.pointerId); } catch (e) { /* ignore */ } }
    act("talkback", { on: true }, talk, "talkback on");
  }
  function releaseTalk(send) {
    if (!S.talkHeld) return;
    S.talkHeld = false;
    if (send !== false) act("talkback", { on: false }, talk, "talkback off");
  }
  talk.addEventListener("pointerdown", pressTalk);
  for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
    talk.addEventListener(type, () => releaseTalk());
  }
  talk.addEventListener("contextmenu", (ev) => ev.preventDefault());
  window.addEventListener("blur", () => releaseTalk());
  document.addEventListener("visibilitychange", () => { if (document.hidden) releaseTalk(); });

  window.console_act = act; // the benchmark drives the page's own action path
  connect();
})();
