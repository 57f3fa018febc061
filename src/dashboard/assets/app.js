/* BeepMyPhone admin dashboard: progressive enhancements only.
 * Every page works without this file. Strict CSP: no eval, no inline code,
 * and event-stream data is only ever written through textContent. */
(function () {
  'use strict';

  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const MAX_ROWS = 200;

  /* Small DOM builder: el('a', {href: '/x', class: 'y'}, 'text', childNode) */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) node.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === undefined || c === null || c === '') continue;
      node.append(typeof c === 'string' ? document.createTextNode(c) : c);
    }
    return node;
  }

  /* ---- 1. Pairing countdowns ---- */
  function initCountdowns() {
    const nodes = $$('[data-countdown]');
    if (!nodes.length) return;
    const tick = () => {
      const now = Date.now();
      for (const n of nodes) {
        const expiry = Number(n.getAttribute('data-countdown'));
        if (!Number.isFinite(expiry)) continue;
        const left = Math.floor((expiry - now) / 1000);
        if (left <= 0) {
          n.textContent = 'expired';
          const p = n.closest('.pairing');
          if (p) p.classList.add('expired');
        } else {
          const m = Math.floor(left / 60);
          const s = left % 60;
          n.textContent = m + ':' + String(s).padStart(2, '0');
        }
      }
    };
    tick();
    setInterval(tick, 1000);
  }

  /* ---- 2. Live event stream (one EventSource per page) ---- */
  const EVENT_TYPES = ['published', 'delivered', 'acked', 'online', 'offline', 'paired', 'revoked', 'lagged'];

  /* HH:MM:SS in local time; falls back to the raw string if unparsable. */
  function localTime(at) {
    const d = new Date(at);
    if (Number.isNaN(d.getTime())) return at ? String(at) : '';
    const p = (x) => String(x).padStart(2, '0');
    return p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds());
  }

  /* Only allow safe CSS class tokens taken from server data. */
  const classToken = (s) => String(s || '').toLowerCase().replace(/[^a-z0-9_-]/g, '');

  function deviceLink(id) {
    return el('a', { href: '/dashboard/devices/' + encodeURIComponent(id) }, String(id));
  }

  function detailsCell(type, d) {
    const td = el('td');
    if (type === 'published') {
      if (d.title) td.append(String(d.title), ' ');
      if (d.priority) {
        td.append(el('span', { class: 'badge priority-' + classToken(d.priority) }, String(d.priority)), ' ');
      }
      if (typeof d.devices === 'number') {
        td.append(d.devices + (d.devices === 1 ? ' device' : ' devices'));
      }
    } else if (type === 'paired') {
      td.append(String(d.name || '') + (d.platform ? ' (' + d.platform + ')' : ''));
    } else if (type === 'lagged') {
      td.append('missed ' + (d.missed ?? '?') + ' events');
    }
    return td;
  }

  function streamRow(type, d) {
    const tr = el('tr', { 'data-event': type, 'data-id': d.id, 'data-device': d.device });
    tr.append(
      el('td', null, el('time', { datetime: d.at }, localTime(d.at))),
      el('td', null, el('span', { class: 'badge ' + type }, type)),
      el('td', null, d.id ? el('code', null, String(d.id)) : null),
      el('td', null, d.device ? deviceLink(d.device) : null),
      detailsCell(type, d)
    );
    return tr;
  }

  function initLive() {
    const stream = document.querySelector('[data-live-stream]');
    const watches = $$('[data-pairing-watch]');
    const hasStatus = document.querySelector('[data-device-status]');
    if (!stream && !watches.length && !hasStatus) return;
    if (typeof EventSource === 'undefined') return;

    const statuses = $$('[data-live-status]');
    const setStatus = (text, connected) => {
      for (const s of statuses) {
        s.textContent = text;
        s.classList.toggle('connected', connected);
      }
    };

    const es = new EventSource('/api/v1/events');
    es.addEventListener('open', () => setStatus('Live', true));
    // EventSource retries by itself after a dropped stream, but not after a refusal (a 429 when
    // this session holds the most streams it may, a 401 once it has ended): say so.
    es.addEventListener('error', () =>
      setStatus(
        es.readyState === EventSource.CLOSED
          ? 'Not live: the relay refused the stream (too many open tabs, or the session ended). Reload to try again.'
          : 'Reconnecting…',
        false,
      ),
    );

    const badgesFor = (device) =>
      $$('[data-device-status]').filter((b) => b.getAttribute('data-device-status') === device);

    function handle(type, d) {
      if (stream) {
        stream.prepend(streamRow(type, d));
        while (stream.rows.length > MAX_ROWS) stream.deleteRow(-1);
      }
      if (type === 'paired') {
        for (const w of watches) {
          w.replaceChildren(
            'Paired: ' + String(d.name || d.device) + (d.platform ? ' (' + d.platform + ')' : '') + ' ',
            el('a', { href: '/dashboard/devices/' + encodeURIComponent(d.device) }, 'Open device')
          );
          w.classList.add('paired');
          w.setAttribute('data-paired-device', String(d.device));
        }
      }
      if ((type === 'online' || type === 'offline') && d.device) {
        for (const b of badgesFor(d.device)) {
          const tr = b.closest('tr');
          if (b.classList.contains('revoked') || (tr && tr.classList.contains('revoked'))) continue;
          b.textContent = type;
          b.classList.remove('online', 'offline');
          b.classList.add(type);
        }
      }
      if (type === 'revoked' && d.device) {
        for (const b of badgesFor(d.device)) {
          b.textContent = 'revoked';
          b.classList.remove('online', 'offline');
          b.classList.add('revoked');
          const tr = b.closest('tr');
          if (tr) tr.classList.add('revoked');
        }
      }
    }

    for (const type of EVENT_TYPES) {
      es.addEventListener(type, (ev) => {
        let d;
        try { d = JSON.parse(ev.data); } catch (_) { return; }
        if (d && typeof d === 'object') handle(type, d);
      });
    }
    // Close cleanly on navigation so the server frees the subscriber promptly.
    window.addEventListener('pagehide', () => es.close());
  }

  /* ---- 3. Default timezone selects ---- */
  function initTimezones() {
    let tz = '';
    try { tz = Intl.DateTimeFormat().resolvedOptions().timeZone || ''; } catch (_) { return; }
    if (!tz) return;
    for (const sel of $$('select[data-default-timezone]')) {
      if (sel.value) continue;
      if (Array.from(sel.options).some((o) => o.value === tz)) sel.value = tz;
    }
  }

  /* ---- 4. Periodic partial refresh of [data-refresh][id] ---- */
  function initRefresh() {
    for (const node of $$('[data-refresh]')) {
      const secs = Number(node.getAttribute('data-refresh'));
      if (!node.id || !Number.isFinite(secs) || secs < 1) continue;
      let busy = false;
      setInterval(async () => {
        if (busy || document.visibilityState !== 'visible') return;
        busy = true;
        try {
          const res = await fetch(location.href, {
            credentials: 'same-origin',
            // A refresh the page makes by itself: not a use that keeps the session from idling out.
            headers: { 'X-Beep-Background': '1' },
          });
          // Session expired: the server redirected us to the login page.
          if (res.redirected && new URL(res.url).pathname.startsWith('/dashboard/login')) {
            location.reload();
            return;
          }
          if (!res.ok) return;
          const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
          const fresh = doc.getElementById(node.id);
          if (!fresh) return;
          // Trusted, template-escaped server HTML (not event-stream data).
          node.replaceChildren(...Array.from(fresh.childNodes, (c) => document.importNode(c, true)));
        } catch (_) {
          /* network hiccup: try again next interval */
        } finally {
          busy = false;
        }
      }, secs * 1000);
    }
  }

  /* ---- 5. Copy-to-clipboard buttons (rendered hidden; shown only with JS) ---- */
  function initCopy() {
    if (!navigator.clipboard || !window.isSecureContext) return; // keep hidden if unusable
    for (const btn of $$('[data-copy]')) {
      const label = btn.textContent;
      let timer = 0;
      btn.hidden = false;
      btn.addEventListener('click', async (ev) => {
        ev.preventDefault();
        const src = document.getElementById(btn.getAttribute('data-copy'));
        if (!src) return;
        try {
          await navigator.clipboard.writeText(src.textContent.trim());
          btn.textContent = 'Copied';
        } catch (_) {
          btn.textContent = 'Copy failed';
        }
        clearTimeout(timer);
        timer = setTimeout(() => { btn.textContent = label; }, 2000);
      });
    }
  }

  function init() {
    initCountdowns();
    initLive();
    initTimezones();
    initRefresh();
    initCopy();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
