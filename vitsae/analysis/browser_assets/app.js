// The feature browser: the run's SAEs (#/), one SAE's feature table (#/sae/K), one feature (#/sae/K/f/F).
"use strict";
(function () {
  var V = window.VITSAE, el = V.el, main = document.getElementById("main");
  var index = V.data.index;
  if (!index) {
    main.textContent = "data/index.js is missing: this site is incomplete; rerun the browser rule.";
    return;
  }
  document.getElementById("title").textContent = index.title;
  document.getElementById("run-note").textContent = index.note;
  V.marks = {};
  var state = {}; // per SAE: {rows, sort, filters}
  function fmt(x) {
    if (x === null || x === undefined) return "";
    if (typeof x === "number") return Number.isInteger(x) ? String(x) : x.toPrecision(3);
    return String(x);
  }
  function classes(sae) {
    var n = "classes-" + sae.dataset_index;
    return V.load(n, "data/" + n + ".js");
  }
  function fail(e) {
    main.appendChild(el("p", { class: "error" }, String(e)));
  }

  // ---- #/ : the SAEs
  function showIndex() {
    main.innerHTML = "";
    main.appendChild(el("h2", {}, "SAEs"));
    var t = el("table", { id: "saes" }), head = el("tr");
    ["dataset", "model", "layer", "sweep", "setting", "seed", "features", "FVU", "L0", "live", "labels (live features)"].forEach(
      function (h) { head.appendChild(el("th", {}, h)); });
    t.appendChild(head);
    index.saes.forEach(function (s) {
      var tr = el("tr", { class: "sae-row" });
      var link = el("a", { href: "#/sae/" + s.k }, s.dataset);
      var td = el("td");
      td.appendChild(link);
      tr.appendChild(td);
      [s.model, s.layer, s.sweep, s.setting, s.seed, s.d_sae, s.fvu, s.l0, s.n_live].forEach(function (v) {
        tr.appendChild(el("td", {}, fmt(v)));
      });
      tr.appendChild(el("td", {}, Object.keys(s.labels).map(function (k) { return k + " " + s.labels[k]; }).join(", ")));
      t.appendChild(tr);
    });
    main.appendChild(t);
  }

  // ---- #/sae/K : the feature table
  var COLS = [["feature", "feature"], ["label", "label"], ["frequency", "frequency"], ["mean_active", "mean activation"],
              ["max_activation", "max activation"], ["n_top", "top images"]];
  function newState(sae) {
    return state[sae.k] || (state[sae.k] = { rows: [], loaded: 0, sort: ["frequency", -1],
      f: { label: "", q: "", freq: "", mean: "" } });
  }
  function loadTable(sae, onShard) {
    var st = newState(sae);
    st.onShard = onShard; // the table shown now gets each shard (a view left earlier is not drawn)
    if (st.loaded === sae.table_shards) return Promise.resolve(st);
    if (st.pending) return st.pending; // shards already on their way: one chain, so each row once
    var chain = Promise.resolve();
    for (var j = st.loaded; j < sae.table_shards; j++) {
      (function (j) {
        chain = chain.then(function () {
          var n = "s" + sae.k + "/t" + j;
          return V.load(n, "data/" + n + ".js").then(function (shard) {
            for (var i = 0; i < shard.feature.length; i++) {
              var r = {};
              for (var c in shard) r[c] = shard[c][i];
              st.rows.push(r);
            }
            st.loaded = j + 1;
            if (st.onShard) st.onShard(st);
          });
        });
      })(j);
    }
    st.pending = chain.then(function () { st.pending = null; return st; },
                            function (e) { st.pending = null; throw e; });
    return st.pending;
  }
  function showTable(sae) {
    main.innerHTML = "";
    main.appendChild(el("h2", {}, sae.dataset + " · " + sae.model + " · layer " + sae.layer + " · " + sae.sweep +
      " · " + sae.sae_id));
    main.appendChild(el("p", { class: "note" }, "FVU " + fmt(sae.fvu) + ", L0 " + fmt(sae.l0) + " on " +
      sae.eval_dataset + "; " + sae.n_live + " of " + sae.d_sae + " features live. Search matches a class's id, name or any " +
      (sae.format === "inat2021" ? "taxon above it" : "WordNet synset above it") + "."));
    var st0 = newState(sae);
    var ctl = el("div", { class: "controls" });
    var label = el("select", { id: "label-filter" });
    label.appendChild(el("option", { value: "" }, "every label"));
    Object.keys(sae.labels).concat(sae.labels.trait === undefined ? ["trait"] : []).forEach(function (l) { label.appendChild(el("option", { value: l }, l)); });
    var q = el("input", { id: "search", type: "search", placeholder: "class, species, synset or taxon" });
    var freq = el("input", { id: "min-frequency", type: "number", step: "any", placeholder: "min frequency" });
    var mean = el("input", { id: "min-mean", type: "number", step: "any", placeholder: "min mean activation" });
    [["label", label], ["search", q], ["frequency ≥", freq], ["mean activation ≥", mean]].forEach(function (p) {
      var l = el("label", {}, p[0] + " ");
      l.appendChild(p[1]);
      ctl.appendChild(l);
    });
    main.appendChild(ctl);
    var count = el("p", { id: "count" }, "loading…");
    main.appendChild(count);
    var table = el("table", { id: "features" });
    main.appendChild(table);
    var more = el("p", { class: "muted", id: "more" });
    main.appendChild(more);
    var ctxP = classes(sae);
    var searchable = null;
    function render(st) {
      var f = st.f, qq = f.q.trim().toLowerCase(), hit = null;
      if (qq && searchable) {
        hit = new Set();
        searchable.forEach(function (s, i) { if (s.indexOf(qq) >= 0) hit.add(i); });
      }
      var fmin = f.freq === "" ? null : Number(f.freq), mmin = f.mean === "" ? null : Number(f.mean);
      var rows = st.rows.filter(function (r) {
        if (!r.n_top) return false;
        if (f.label === "trait" ? !r.trait : f.label && r.label !== f.label) return false;
        if (fmin !== null && !(r.frequency >= fmin)) return false;
        if (mmin !== null && !(r.mean_active >= mmin)) return false;
        if (hit && !r.classes.some(function (c) { return hit.has(c); })) return false;
        return true;
      });
      var col = st.sort[0], dir = st.sort[1];
      rows.sort(function (a, b) {
        var x = a[col], y = b[col];
        if (x === y) return a.feature - b.feature;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        return (x < y ? -1 : 1) * dir;
      });
      count.textContent = rows.length + " of " + st.rows.filter(function (r) { return r.n_top; }).length +
        " live features" + (st.loaded < sae.table_shards ? " (loading shard " + (st.loaded + 1) + " of " +
        sae.table_shards + ")" : "");
      table.innerHTML = "";
      var head = el("tr");
      COLS.forEach(function (c) {
        var th = el("th", { class: "sortable" + (c[0] === col ? (dir > 0 ? " sorted-asc" : " sorted-desc") : ""),
          "data-col": c[0] }, c[1]);
        th.onclick = function () {
          st.sort = [c[0], c[0] === col ? -dir : (c[0] === "feature" || c[0] === "label" ? 1 : -1)];
          render(st);
        };
        head.appendChild(th);
      });
      head.appendChild(el("th", {}, "classes of its top images"));
      table.appendChild(head);
      var names = V.data["classes-" + sae.dataset_index];
      rows.slice(0, 200).forEach(function (r) {
        var tr = el("tr", { class: "feature-row", "data-feature": r.feature });
        COLS.forEach(function (c) {
          var td = el("td");
          if (c[0] === "feature") td.appendChild(el("a", { href: "#/sae/" + sae.k + "/f/" + r.feature }, String(r.feature)));
          else td.textContent = fmt(r[c[0]]) + (c[0] === "label" && r.trait && r.label !== "trait" ? " (trait)" : "");
          tr.appendChild(td);
        });
        tr.appendChild(el("td", {}, names ? r.classes.slice(0, 3).map(function (c) { return names.classes[c][1]; }).join("; ") : ""));
        table.appendChild(tr);
      });
      more.textContent = rows.length > 200 ? "first 200 shown; filter or sort to see others" : "";
    }
    ctxP.then(function (ctx) {
      searchable = ctx.classes.map(function (c) { return (c[0] + " " + c[1] + " " + c[2].join(" ")).toLowerCase(); });
      if (state[sae.k]) render(state[sae.k]);
    }).catch(fail);
    function bind(input, key) {
      input.oninput = function () { var s = state[sae.k]; if (s) { s.f[key] = input.value; render(s); } };
    }
    bind(label, "label"); bind(q, "q"); bind(freq, "freq"); bind(mean, "mean");
    label.value = st0.f.label; q.value = st0.f.q; freq.value = st0.f.freq; mean.value = st0.f.mean;
    label.onchange = label.oninput;
    loadTable(sae, render).then(function (st) {
      render(st);
      V.marks.table = performance.now(); // every shard loaded and the table rendered (bench/browser.py)
    }).catch(fail);
  }

  // ---- #/sae/K/f/F : one feature
  function showFeature(sae, f) {
    main.innerHTML = "";
    var box = el("section", { id: "feature-view", "data-sae": sae.k, "data-feature": f });
    main.appendChild(box);
    box.appendChild(el("p", {}, "")).appendChild(el("a", { href: "#/sae/" + sae.k }, "← feature table of " + sae.sae_id));
    var j = Math.floor(f / sae.detail_shard), n = "s" + sae.k + "/d" + j;
    Promise.all([V.load(n, "data/" + n + ".js"), classes(sae)]).then(function (got) {
      var shard = got[0], ctx = got[1], d = shard.features[String(f)];
      box.appendChild(el("h2", {}, "Feature " + f + " · " + sae.dataset + " · " + sae.model + " · layer " + sae.layer +
        " · " + sae.sae_id));
      if (!d) {
        box.appendChild(el("p", { id: "dead" }, "This feature never fired on the statistics' split (dead): no images."));
        return;
      }
      box.appendChild(el("p", {}, "label: " + d.row.label + (d.row.trait ? " (trait)" : "") + " · frequency " +
        fmt(d.row.frequency) + " · mean activation " + fmt(d.row.mean_active)));
      var tiles = el("div", { class: "tiles", id: "top-images" }), maps = V.bytes(d.m);
      var gh = shard.grid[0], gw = shard.grid[1], T = gh * gw;
      for (var i = 0; i < d.img.length; i++) {
        tiles.appendChild(V.tile(shard.img + d.img[i] + ".jpg", maps.subarray(i * T, (i + 1) * T), gh, gw, 128, false,
          fmt(d.v[i]) + " · " + ctx.classes[d.cls[i]][1]));
      }
      box.appendChild(el("h3", {}, "Top images, where it fires in red (scaled to " + fmt(d.vmax) + ")"));
      box.appendChild(tiles);
      box.appendChild(el("h3", {}, "Best matches (decoder cosine) in the other SAEs of this setting"));
      var ul = el("ul", { id: "matches" });
      d.match.forEach(function (m) {
        var o = index.saes[m[0]], li = el("li");
        li.appendChild(el("a", { class: "match", href: "#/sae/" + o.k + "/f/" + m[1] },
          o.dataset + " seed " + o.seed + ": feature " + m[1]));
        // an SAE of the same seed started from the same decoder (vitsae.sae.train): its match is an upper bound
        li.appendChild(document.createTextNode(" (cosine " + fmt(m[2]) + (o.dataset !== sae.dataset ?
          ", trained on the other dataset" + (o.seed === sae.seed ? " from the same initial decoder" : "") :
          ", another seed") + ")"));
        ul.appendChild(li);
      });
      if (!d.match.length) ul.appendChild(el("li", { class: "muted" }, "no other SAE of this setting in the browser"));
      box.appendChild(ul);
      if (d.cards.length) {
        box.appendChild(el("h3", {}, "Feature cards (the paper's figures)"));
        var cl = el("ul", { id: "cards" });
        d.cards.forEach(function (c) { var li = el("li"); li.appendChild(el("a", { href: c }, c)); cl.appendChild(li); });
        box.appendChild(cl);
      }
      box.appendChild(el("h3", {}, sae.format === "inat2021" ? "Its species in the taxonomy" : "Its classes in WordNet"));
      var seen = {}, cul = el("ul", { id: "class-context" });
      d.cls.forEach(function (c) { seen[c] = (seen[c] || 0) + 1; });
      Object.keys(seen).sort(function (a, b) { return seen[b] - seen[a]; }).forEach(function (c) {
        var k = ctx.classes[c], li = el("li");
        li.appendChild(el("b", {}, k[1] + " (" + k[0] + ") × " + seen[c]));
        li.appendChild(el("div", { class: "path" }, k[2].join(" › ")));
        cul.appendChild(li);
      });
      box.appendChild(cul);
      box.appendChild(el("h3", {}, "Concept-table row"));
      var rt = el("table", { id: "concept-row" });
      Object.keys(d.row).forEach(function (k) {
        var tr = el("tr");
        tr.appendChild(el("th", {}, k));
        tr.appendChild(el("td", {}, fmt(d.row[k])));
        rt.appendChild(tr);
      });
      box.appendChild(rt);
      V.marks.feature = performance.now(); // the feature's view built (its images still drawing)
    }).catch(fail);
  }

  function route() {
    var h = location.hash.replace(/^#\/?/, "").split("/");
    if (h[0] === "sae" && index.saes[+h[1]]) {
      var sae = index.saes[+h[1]];
      if (h[2] === "f") showFeature(sae, +h[3]);
      else showTable(sae);
    } else showIndex();
  }
  window.addEventListener("hashchange", route);
  route();
})();
