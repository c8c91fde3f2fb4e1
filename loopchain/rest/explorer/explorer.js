// The loopchain block explorer: reads this proxy's REST API v1 and shows the last blocks as they
// arrive, a block with its transactions, a transaction with its result, and the peer and leader.
//
// Everything the chain holds is hostile (transaction data is user input): it reaches the page
// only as text (textContent, createElement), never as markup, and links are made only from
// hashes and heights that match their strict patterns.
"use strict";

(() => {
  const POLL_MS = 1500; // how often the last block and the peer status are read
  const FETCH_TIMEOUT_MS = 5000; // the deadline of every request
  const MAX_BLOCKS = 20; // rows kept in the last blocks list
  const MAX_DATA_CHARS = 160; // characters of a transaction's data shown in a list
  const HASH = /^(?:0x)?([0-9a-fA-F]{64})$/;
  const HEIGHT = /^[0-9]{1,15}$/;
  const RESULT_CODES = {
    0: "success",
    2: "not executed yet",
    9000: "the SCORE raised an error",
    9100: "the SCORE process was unreachable",
  };

  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(window.location.search);
  const state = {
    channel: (params.get("channel") || "").slice(0, 128),
    tip: -1, // the highest height listed
    validators: null, // the newest validator set seen, with the height of its block
    validatorsHeight: -1,
    status: null,
    viewSeq: 0, // the view being shown; answers for an older one are dropped
  };

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // -------------------------------------------------------------- building the page, as text

  function el(tag, options, ...children) {
    const node = document.createElement(tag);
    const opts = options || {};
    if (opts.cls) node.className = opts.cls;
    if (opts.id) node.id = opts.id;
    if (opts.title) node.title = String(opts.title);
    if (opts.href) node.setAttribute("href", opts.href); // only "#/…" made from checked values
    if (opts.data) for (const [key, value] of Object.entries(opts.data)) node.dataset[key] = String(value);
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child)); // a string becomes a text node
    }
    return node;
  }

  function cleanHash(value) {
    const match = typeof value === "string" ? HASH.exec(value) : null;
    return match ? match[1].toLowerCase() : null;
  }

  function short(text, keep = 10) {
    const value = String(text);
    return value.length > 2 * keep + 1 ? `${value.slice(0, keep)}…${value.slice(-keep)}` : value;
  }

  function clip(text, limit = MAX_DATA_CHARS) {
    const value = String(text);
    return value.length > limit ? `${value.slice(0, limit)}…` : value;
  }

  function txLink(hash, label) {
    const clean = cleanHash(hash);
    if (!clean) return el("span", { cls: "hash" }, String(hash));
    return el("a", { cls: "hash", href: `#/tx/${clean}`, title: clean }, label || clean);
  }

  function blockLink(key, label) {
    const text = String(key);
    const clean = HEIGHT.test(text) ? text : cleanHash(text);
    if (!clean) return el("span", {}, text);
    return el("a", { href: `#/block/${clean}`, title: text }, label === undefined ? text : label);
  }

  function utc(microseconds) {
    if (typeof microseconds !== "number" || !Number.isFinite(microseconds)) return "";
    const date = new Date(Math.floor(microseconds / 1000));
    return Number.isNaN(date.getTime()) ? "" : date.toISOString().replace("T", " ").slice(0, 23);
  }

  function replace(node, ...children) {
    node.replaceChildren(...children.filter((child) => child !== null && child !== undefined));
  }

  function fields(rows) {
    const list = el("dl", { cls: "fields" });
    for (const [name, value] of rows) {
      if (value === null || value === undefined || value === "") continue;
      list.append(el("dt", {}, name), el("dd", {}, value));
    }
    return list;
  }

  // -------------------------------------------------------------- the REST API

  async function api(path, query) {
    const url = new URL(path, window.location.origin);
    for (const [key, value] of Object.entries(query || {})) url.searchParams.set(key, String(value));
    if (state.channel) url.searchParams.set("channel", state.channel);
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), FETCH_TIMEOUT_MS);
    try {
      let response;
      try {
        response = await fetch(url, {
          signal: abort.signal,
          cache: "no-store",
          headers: { Accept: "application/json" },
        });
      } catch (error) {
        const why = error.name === "AbortError" ? `no answer within ${FETCH_TIMEOUT_MS / 1000} s` : "unreachable";
        throw new ApiError(0, `${path}: ${why}`);
      }
      const body = await response.json().catch(() => null);
      if (!response.ok || body === null || typeof body !== "object") {
        const message = body && typeof body.message === "string" ? body.message : response.statusText;
        throw new ApiError(response.status, `${path}: ${response.status} ${message}`);
      }
      return body;
    } finally {
      clearTimeout(timer);
    }
  }

  // -------------------------------------------------------------- the last blocks

  function blockRow(body) {
    const data = body.block_data_json || {};
    const txs = Array.isArray(body.tx_data_json) ? body.tx_data_json : [];
    const height = Number(data.height);
    const shown = el("span", { cls: "tx-list" });
    for (const tx of txs.slice(0, 3)) shown.append(txLink(tx.tx_hash, short(tx.tx_hash, 6)), " ");
    if (txs.length > 3) shown.append(el("span", { cls: "muted" }, `+${txs.length - 3}`));
    return el(
      "tr",
      { cls: "new", data: { height, txs: txs.map((tx) => cleanHash(tx.tx_hash) || "").join(" ") } },
      el("td", {}, blockLink(height)),
      el("td", {}, blockLink(body.block_hash, short(body.block_hash))),
      el("td", {}, utc(data.time_stamp)),
      el("td", { cls: "hash", title: data.peer_id }, short(data.peer_id || "", 6)),
      el("td", { cls: "number" }, String(txs.length)),
      el("td", {}, shown),
    );
  }

  function addBlock(body) {
    const rows = $("block-rows");
    rows.prepend(blockRow(body));
    while (rows.children.length > MAX_BLOCKS) rows.lastElementChild.remove();
    $("no-blocks").hidden = true;
    const data = body.block_data_json || {};
    if (data.validator_set && Number(data.height) > state.validatorsHeight) {
      state.validators = data.validator_set;
      state.validatorsHeight = Number(data.height);
      renderPeers();
    }
  }

  async function pollBlocks() {
    const last = await api("/api/v1/blocks");
    const height = Number((last.block_data_json || {}).height);
    if (!Number.isSafeInteger(height) || height < 0) return -1;
    if (height < state.tip) {
      // a chain that went back (a new network on this port): start the list again
      replace($("block-rows"));
      state.tip = -1;
    }
    for (let next = Math.max(state.tip + 1, height - MAX_BLOCKS + 1); next <= height; next += 1) {
      addBlock(await api("/api/v1/blocks", { height: next }));
      state.tip = next;
    }
    return height;
  }

  // -------------------------------------------------------------- the peer, the leader, validators

  async function loadGenesisValidators() {
    if (state.validators) return;
    const genesis = await api("/api/v1/blocks", { height: 0 });
    const data = genesis.block_data_json || {};
    if (data.validator_set && state.validatorsHeight < 0) {
      state.validators = data.validator_set;
      state.validatorsHeight = 0;
    }
  }

  function renderChannels(status) {
    const select = $("channel");
    const names = Array.isArray(status.channels) ? status.channels.map(String) : [];
    const current = state.channel || String(status.channel || "");
    if (!names.includes(current)) names.push(current);
    const known = Array.from(select.options, (option) => option.value);
    if (known.join("\n") === names.join("\n") && select.value === current) return;
    replace(select, ...names.map((name) => {
      const option = el("option", {}, name);
      option.value = name;
      option.selected = name === current;
      return option;
    }));
  }

  function renderPeers() {
    const status = state.status;
    if (status) {
      const leader = String(status.leader_id || "");
      replace($("peer-status"), ...Array.from(fields([
        ["channel", String(status.channel || "")],
        ["leader", leader ? el("span", { cls: "hash leader" }, leader) : "none known"],
        ["this peer", el("span", { cls: "hash" }, String(status.peer_id || ""))],
        ["target", String(status.peer_target || "")],
        ["type", status.peer_type === "1" ? "leader" : "peer"],
        ["role", String(status.role || "")],
        ["block height", String(status.block_height)],
        ["executed height", String(status.executed_height)],
        ["total transactions", String(status.total_tx)],
        ["pool", String(status.tx_pool_size)],
        ["consensus", String(status.consensus || "")],
        ["round", String(status.round)],
        ["validators", String(status.validator_count)],
        ["pending validators", String(status.pending_validator_count || 0)],
        ["audience", String(status.audience_count)],
      ]).childNodes));
    }
    renderValidators(status ? String(status.leader_id || "") : "", status ? String(status.peer_id || "") : "");
  }

  function renderValidators(leader, self) {
    const set = state.validators;
    if (!set || !Array.isArray(set.validators)) {
      $("validators-note").textContent = "no validator set recorded in a block yet";
      replace($("validator-rows"));
      return;
    }
    const rows = set.validators.map((validator) => {
      const id = String(validator.peer_id || "");
      const roles = [id === leader ? "leader" : null, id === self ? "this peer" : null].filter(Boolean);
      return el(
        "tr",
        { cls: id === leader ? "leader" : "", data: { peerId: id } },
        el("td", { cls: "hash", title: id }, id),
        el("td", { cls: "number" }, String(validator.weight)),
        el("td", {}, String(validator.group_id || "")),
        el("td", {}, roles.join(", ")),
      );
    });
    replace($("validator-rows"), ...rows);
    let note = `version ${set.version}, recorded in block ${state.validatorsHeight}`;
    const count = state.status ? Number(state.status.validator_count) : set.validators.length;
    if (count !== set.validators.length) note += `; the peer now counts ${count} validators`;
    const pending = state.status ? Number(state.status.pending_validator_count || 0) : 0;
    if (pending) note += `; a set of ${pending} is being handed over to`;
    $("validators-note").textContent = note;
    const auditors = Array.isArray(set.auditors) ? set.auditors.map(String) : [];
    $("auditors").textContent = auditors.length ? `auditors: ${auditors.join(", ")}` : "";
  }

  // -------------------------------------------------------------- views: a block, a transaction

  async function showBlock(key) {
    const query = HEIGHT.test(key) ? { height: key } : { hash: key };
    const body = await api("/api/v1/blocks", query);
    const data = body.block_data_json || {};
    const height = Number(data.height);
    const txs = Array.isArray(body.tx_data_json) ? body.tx_data_json : [];
    const rows = txs.map((tx) => el(
      "tr",
      { data: { txHash: cleanHash(tx.tx_hash) || "" } },
      el("td", {}, txLink(tx.tx_hash, short(tx.tx_hash))),
      el("td", {}, utc(tx.timestamp)),
      el("td", { cls: "hash", title: tx.peer_id }, short(tx.peer_id || "", 6)),
      el("td", { cls: "data", title: clip(tx.data_string ?? "", 2000) }, clip(tx.data_string ?? "")),
    ));
    const nav = el("p", { cls: "nav" });
    if (height > 0) nav.append(blockLink(height - 1, "← previous"), " ");
    if (height < state.tip) nav.append(blockLink(height + 1, "next →"));
    const set = data.validator_set;
    return [[
      el("h2", {}, `Block ${height}`),
      nav,
      fields([
        ["height", String(height)],
        ["hash", el("span", { cls: "hash", id: "block-hash" }, String(body.block_hash || ""))],
        ["previous", data.prev_block_hash ? blockLink(data.prev_block_hash) : ""],
        ["time (UTC)", utc(data.time_stamp)],
        ["leader", el("span", { cls: "hash" }, String(data.peer_id || ""))],
        ["next leader", el("span", { cls: "hash" }, String(data.next_leader || ""))],
        ["round", String(data.round)],
        ["transactions root", el("span", { cls: "hash" }, String(data.merkle_tree_root_hash || ""))],
        ["state root", el("span", { cls: "hash" }, String(data.state_root || ""))],
        ["validator set", set && Array.isArray(set.validators) ? `version ${set.version}: ${set.validators.length} validators` : ""],
      ]),
      el("h3", {}, `${txs.length} transaction${txs.length === 1 ? "" : "s"}`),
      txs.length
        ? el(
          "table",
          { cls: "txs" },
          el("thead", {}, el("tr", {}, el("th", {}, "hash"), el("th", {}, "time (UTC)"), el("th", {}, "signed by"), el("th", {}, "data"))),
          el("tbody", {}, ...rows),
        )
        : null,
    ], false];
  }

  async function showTransaction(hash) {
    const [tx, result] = await Promise.all([
      api("/api/v1/transactions", { hash }),
      api("/api/v1/transactions/result", { hash }),
    ]);
    const meta = tx.meta && typeof tx.meta === "object" ? tx.meta : {};
    const outcome = result.response && typeof result.response === "object" ? result.response : {};
    const code = Number(outcome.code);
    const height = Number(tx.block_height);
    const meaning = Object.prototype.hasOwnProperty.call(RESULT_CODES, code) ? RESULT_CODES[code] : "failed";
    const pending = !(Number.isSafeInteger(height) && height >= 0) || code === 2;
    return [[
      el("h2", {}, "Transaction"),
      fields([
        ["hash", el("span", { cls: "hash", id: "tx-hash" }, hash)],
        ["block", Number.isSafeInteger(height) && height >= 0 ? blockLink(height) : "in the pool, not in a block yet"],
        ["result", el("span", { id: "tx-result", cls: code === 0 ? "ok" : "bad" }, `${code} (${meaning})`)],
        ["message", outcome.message === undefined ? "" : el("span", { id: "tx-message" }, String(outcome.message))],
        ["channel", String(meta.channel_name || "")],
        ["answered by", el("span", { cls: "hash" }, String(meta.peer_id || ""))],
        ["SCORE", meta.score_id ? `${meta.score_id} ${meta.score_version || ""}` : ""],
        ["public key", el("span", { cls: "hash" }, String(tx.public_key || ""))],
        ["signature", el("span", { cls: "hash" }, String(tx.signature || ""))],
      ]),
      el("h3", {}, "data"),
      el("pre", { cls: "data", id: "tx-data" }, JSON.stringify(tx.data, null, 2)),
    ], pending];
  }

  function viewLoader(route) {
    const [kind, key, ...rest] = route.replace(/^#\/?/, "").split("/");
    if (rest.length || key === undefined) return null;
    if (kind === "tx" && cleanHash(key)) return () => showTransaction(cleanHash(key));
    if (kind === "block" && HEIGHT.test(key)) return () => showBlock(key);
    if (kind === "block" && cleanHash(key)) return () => showBlock(cleanHash(key));
    return null;
  }

  // Show the view the address names; `refresh` reads it again in place (a transaction that
  // waits for its block or its result) without the loading line.
  async function showView(refresh = false) {
    const seq = ++state.viewSeq;
    const view = $("view");
    const route = window.location.hash;
    const load = viewLoader(route);
    view.dataset.pending = "";
    if (!load) {
      const home = route.replace(/^#\/?/, "") === "";
      view.hidden = home;
      view.dataset.state = home ? "" : "unknown";
      replace(view, home ? null : el("p", { cls: "error" }, "unknown address: use #/block/<height or hash> or #/tx/<hash>"));
      return;
    }
    view.hidden = false;
    if (refresh !== true) {
      view.dataset.state = "loading";
      replace(view, el("p", { cls: "muted" }, "loading…"));
    }
    let children;
    let pending = false;
    try {
      [children, pending] = await load();
    } catch (error) {
      children = [el("p", { cls: "error" }, error instanceof ApiError ? error.message : "the answer could not be read")];
    }
    if (seq !== state.viewSeq) return; // another view was asked for meanwhile
    replace(view, ...children);
    view.dataset.state = "shown";
    view.dataset.pending = pending ? "1" : "";
  }

  async function search(event) {
    event.preventDefault();
    const text = $("query").value.trim();
    if (HEIGHT.test(text)) {
      window.location.hash = `#/block/${text}`;
      return;
    }
    const hash = cleanHash(text);
    if (!hash) {
      $("connection").textContent = "search for a block height or a 64-hex-digit hash";
      return;
    }
    try {
      await api("/api/v1/transactions", { hash });
      window.location.hash = `#/tx/${hash}`;
    } catch (error) {
      window.location.hash = `#/block/${hash}`;
    }
  }

  // -------------------------------------------------------------- the polling loop

  async function poll() {
    try {
      const status = await api("/api/v1/status/peer");
      state.status = status;
      renderChannels(status);
      const height = await pollBlocks();
      if (height >= 0) await loadGenesisValidators();
      renderPeers();
      if ($("view").dataset.pending === "1") showView(true);
      const when = new Date().toISOString().slice(11, 19);
      const tip = height >= 0 ? `height ${height}` : "no block yet";
      $("connection").textContent = `live: ${tip}, read ${when} UTC`;
      $("connection").className = "live";
    } catch (error) {
      $("connection").textContent = error instanceof ApiError ? error.message : "the peer's answer could not be read";
      $("connection").className = "error";
    } finally {
      window.setTimeout(poll, POLL_MS);
    }
  }

  function start() {
    $("search").addEventListener("submit", search);
    $("channel").addEventListener("change", (event) => {
      const next = new URLSearchParams(window.location.search);
      next.set("channel", event.target.value);
      window.location.search = next.toString();
    });
    window.addEventListener("hashchange", () => showView());
    showView();
    poll();
  }

  start();
})();
