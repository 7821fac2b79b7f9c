// Shared by index.html and rate.html: loading the site's data scripts (file:// forbids fetch) and drawing
// an image with its patch map overlaid. Nothing here names a model.
"use strict";
window.VITSAE = window.VITSAE || { data: {}, waiting: {} };
VITSAE.put = function (name, obj) {
  VITSAE.data[name] = obj;
};
// Load data/<path>.js once; resolves with the object it put.
VITSAE.load = function (name, src) {
  if (VITSAE.data[name] !== undefined) return Promise.resolve(VITSAE.data[name]);
  if (VITSAE.waiting[name]) return VITSAE.waiting[name];
  VITSAE.waiting[name] = new Promise(function (resolve, reject) {
    var s = document.createElement("script");
    s.src = src;
    s.onload = function () {
      if (VITSAE.data[name] === undefined) reject(new Error(src + " did not define " + name));
      else resolve(VITSAE.data[name]);
    };
    s.onerror = function () {
      reject(new Error("cannot load " + src + " (is the site complete?)"));
    };
    document.head.appendChild(s);
  });
  return VITSAE.waiting[name];
};
VITSAE.bytes = function (b64) {
  var bin = atob(b64), out = new Uint8Array(bin.length);
  for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
};
// A tile: the thumbnail with map values (uint8, gh x gw, row-major) blended in red; smooth: bilinear.
VITSAE.tile = function (src, map, gh, gw, size, smooth, caption) {
  var fig = document.createElement("figure");
  fig.className = "tile";
  var canvas = document.createElement("canvas");
  canvas.width = size;
  canvas.height = size;
  canvas.className = "overlay";
  fig.appendChild(canvas);
  if (caption !== undefined && caption !== null) {
    var cap = document.createElement("figcaption");
    cap.textContent = caption;
    fig.appendChild(cap);
  }
  var img = new Image();
  img.onload = function () {
    var ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0, size, size);
    if (!map) return;
    var heat = document.createElement("canvas");
    heat.width = gw;
    heat.height = gh;
    var hctx = heat.getContext("2d"), data = hctx.createImageData(gw, gh);
    for (var i = 0; i < gh * gw; i++) {
      data.data[4 * i] = 255;
      data.data[4 * i + 1] = 0;
      data.data[4 * i + 2] = 0;
      data.data[4 * i + 3] = Math.round(map[i] * 0.6);
    }
    hctx.putImageData(data, 0, 0);
    ctx.imageSmoothingEnabled = !!smooth;
    ctx.drawImage(heat, 0, 0, size, size);
    canvas.dataset.drawn = "1";
  };
  img.onerror = function () {
    fig.classList.add("missing");
  };
  img.src = src;
  return fig;
};
VITSAE.el = function (tag, attrs, text) {
  var e = document.createElement(tag);
  for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
};
