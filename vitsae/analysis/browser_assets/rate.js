// The blinded rating page: one trial at a time (a feature's top images with where it fires), a category and
// an optional note per trial, kept in this browser's local storage, exported as <rater>.json. The page and
// its data (rate/trials.js) hold no model, SAE, feature or label: only opaque trial ids.
"use strict";
(function () {
  var V = window.VITSAE, el = V.el, main = document.getElementById("main"), data = V.data.trials;
  if (!data) {
    main.textContent = "rate/trials.js is missing: this site is incomplete; rerun the browser rule.";
    return;
  }
  if (!data.trials.length) {
    main.textContent = "The rating sample is empty (no labelled features to rate in this run).";
    return;
  }
  var rater = localStorage.getItem("vitsae-rater") || "", pos = 0;
  function key() { return "vitsae-ratings:" + data.sample_id + ":" + rater; }
  function load() { try { return JSON.parse(localStorage.getItem(key()) || "{}"); } catch (e) { return {}; } }
  function save(r) { localStorage.setItem(key(), JSON.stringify(r)); }
  function nRated(r) { return data.trials.filter(function (t) { return r[t.id]; }).length; }

  function start() {
    main.innerHTML = "";
    var form = el("form", { id: "rater-form" });
    form.appendChild(el("label", { for: "rater" }, "Your name (letters, digits, - and _): "));
    var input = el("input", { id: "rater", required: "required", pattern: "[A-Za-z0-9_\\-]+", value: rater });
    form.appendChild(input);
    form.appendChild(el("button", { id: "begin", type: "submit" }, "Begin"));
    form.onsubmit = function (e) {
      e.preventDefault();
      if (!/^[A-Za-z0-9_-]+$/.test(input.value)) return;
      rater = input.value;
      localStorage.setItem("vitsae-rater", rater);
      var r = load();
      pos = data.trials.findIndex(function (t) { return !r[t.id]; });
      if (pos < 0) pos = 0;
      show();
    };
    main.appendChild(form);
    main.appendChild(el("p", { class: "note" }, data.trials.length + " trials in this sample (" + data.sample_id + ")."));
  }

  function show() {
    var r = load(), t = data.trials[pos];
    main.innerHTML = "";
    main.appendChild(el("p", { id: "progress" }, "Rater " + rater + " · trial " + (pos + 1) + " of " + data.trials.length +
      " · " + nRated(r) + " rated"));
    var tiles = el("div", { class: "tiles", id: "trial-images", "data-trial": t.id });
    var maps = V.bytes(t.m), G = data.grid, T = G * G;
    for (var i = 0; i < t.img.length; i++) tiles.appendChild(V.tile(t.img[i], maps.subarray(i * T, (i + 1) * T), G, G, 128, true));
    main.appendChild(tiles);
    var cats = el("fieldset", { class: "categories", id: "categories" });
    cats.appendChild(el("legend", {}, "What does this feature respond to?"));
    data.categories.forEach(function (c) {
      var l = el("label"), radio = el("input", { type: "radio", name: "category", value: c });
      if (r[t.id] && r[t.id].category === c) radio.checked = true;
      l.appendChild(radio);
      l.appendChild(document.createTextNode(" " + c));
      cats.appendChild(l);
    });
    main.appendChild(cats);
    var note = el("textarea", { id: "note", rows: "2", cols: "60", placeholder: "note (optional)" });
    note.value = r[t.id] ? r[t.id].note : "";
    main.appendChild(note);
    var bar = el("div", { class: "controls" });
    var prev = el("button", { id: "prev", type: "button" }, "← previous");
    var next = el("button", { id: "save-next", type: "button" }, "save and next →");
    var exp = el("button", { id: "export", type: "button" }, "export ratings (" + rater + ".json)");
    var status = el("span", { id: "status" });
    prev.disabled = pos === 0;
    prev.onclick = function () { pos -= 1; show(); };
    next.onclick = function () {
      var picked = main.querySelector("input[name=category]:checked");
      if (!picked) { status.textContent = "pick a category first"; return; }
      var all = load();
      all[t.id] = { category: picked.value, note: note.value };
      save(all);
      if (pos < data.trials.length - 1) pos += 1;
      show();
    };
    exp.onclick = function () { exportFile(); status.textContent = "exported " + nRated(load()) + " ratings"; };
    [prev, next, exp, status].forEach(function (b) { bar.appendChild(b); });
    main.appendChild(bar);
  }

  function exportFile() {
    var r = load();
    var out = { format: "vitsae-ratings", version: 1, rater: rater, sample_id: data.sample_id,
      exported: new Date().toISOString(), ratings: [] };
    data.trials.forEach(function (t) {
      if (r[t.id]) out.ratings.push({ trial: t.id, category: r[t.id].category, note: r[t.id].note || "" });
    });
    var blob = new Blob([JSON.stringify(out, null, 1) + "\n"], { type: "application/json" });
    var a = el("a", { href: URL.createObjectURL(blob), download: rater + ".json" });
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }
  start();
})();
