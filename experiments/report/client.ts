/**
 * The script that runs inside `report.html`: it reads the embedded data (`#report-data`) and draws
 * the charts. Line charts use uPlot (inlined beside it); heatmaps are drawn here on `<canvas>`
 * (uPlot has no heatmap), with axes, a colour bar, marked cells and a hover tooltip giving the
 * exact value.
 *
 * It is plain browser JavaScript kept as a string (it never runs in Deno), written for any
 * browser of the last few years: no modules, no network, no globals but `uPlot`. The browser test
 * (`tests/report_test.ts`) runs it in Chromium and fails on any console error or blank chart.
 * @module
 */

/**
 * The report's browser script. Reads `#report-data` (JSON of {@linkcode ReportView} from
 * `render.ts`) and draws every `[data-chart]` and `[data-heatmap]` element; sets
 * `document.body.dataset.charts` to the number of charts drawn, and `"error"` on failure.
 */
export const CLIENT_JS: string = String.raw`
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("report-data").textContent);
  var FONT_FAMILY = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif';
  var INK = "#1f2330", MUTED = "#6b7280", LINE = "#e3e6ee", ACCENT = "#2f61b5", WARM = "#d9604a";

  function hex(h) {
    return [parseInt(h.slice(1, 3), 16), parseInt(h.slice(3, 5), 16), parseInt(h.slice(5, 7), 16)];
  }
  // Sequential: near-white to deep blue. Diverging: blue (negative) - near-white - red (positive).
  var SEQ = ["#f6f8fc", "#dbe5f5", "#aac2ea", "#6f98da", "#3b6cc0", "#1f4590", "#0f2452"].map(hex);
  var DIV = ["#1d4a96", "#4f7fcc", "#a9c1e8", "#f7f7f7", "#f0b3a3", "#d5604a", "#8f1d14"].map(hex);
  function ramp(stops, t) {
    t = Math.max(0, Math.min(1, isFinite(t) ? t : 0));
    var x = t * (stops.length - 1);
    var i = Math.min(Math.floor(x), stops.length - 2);
    var f = x - i, a = stops[i], b = stops[i + 1];
    return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
  }
  function css(c) {
    return "rgb(" + Math.round(c[0]) + "," + Math.round(c[1]) + "," + Math.round(c[2]) + ")";
  }
  function colour(o, v) {
    if (o.scale === "div") {
      var m = Math.max(Math.abs(o.vmin), Math.abs(o.vmax)) || 1;
      return ramp(DIV, 0.5 + 0.5 * v / m);
    }
    return ramp(SEQ, (v - o.vmin) / ((o.vmax - o.vmin) || 1));
  }
  function fmt(v, d) {
    if (v === null || v === undefined || !isFinite(v)) return "\u2013";
    var s = v.toFixed(d === undefined ? 3 : d);
    if (/^-0(\.0*)?$/.test(s)) s = s.slice(1);
    return s.replace("-", "\u2212");
  }
  function font(px, weight) {
    return (weight || "") + " " + px + "px " + FONT_FAMILY;
  }
  function niceStep(n, px, minPx) {
    var steps = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000];
    for (var i = 0; i < steps.length; i++) if (steps[i] * px >= minPx) return steps[i];
    return Math.ceil(n / 5);
  }

  var tip = document.createElement("div");
  tip.className = "tip";
  document.body.appendChild(tip);
  function showTip(e, html) {
    tip.innerHTML = html;
    tip.style.display = "block";
    var x = e.clientX + 14, y = e.clientY + 14;
    var w = tip.offsetWidth, h = tip.offsetHeight;
    if (x + w > window.innerWidth - 8) x = e.clientX - w - 14;
    if (y + h > window.innerHeight - 8) y = e.clientY - h - 14;
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  }
  function hideTip() {
    tip.style.display = "none";
  }
  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c];
    });
  }

  // A heatmap of o.data [rows][cols] on a canvas inside host.
  function heatmap(host, o) {
    host.innerHTML = "";
    var rows = o.data.length, cols = rows ? o.data[0].length : 0;
    if (!rows || !cols) throw new Error("empty heatmap " + (host.dataset.heatmap || ""));
    var dpr = Math.max(1, window.devicePixelRatio || 1);
    var m = { l: o.rowTitle ? 50 : 34, r: 74, t: 8, b: 40 };
    var avail = Math.max(80, (host.clientWidth || 360) - m.l - m.r);
    var cw = Math.min(o.maxCell || 44, avail / cols);
    if (cols <= 40) cw = Math.max(1, Math.floor(cw));
    var ch = o.cellH ? Math.min(o.cellH, cw * (o.maxAspect || 99)) : cw;
    if (o.minCellH) ch = Math.max(ch, o.minCellH);
    // Few rows: taller cells, so the plot (and its colour bar) is never a sliver.
    if (o.minPlotH && ch * rows < o.minPlotH) ch = Math.min(o.maxCellH || 40, o.minPlotH / rows);
    var pw = cw * cols, ph = ch * rows;
    var W = Math.ceil(m.l + pw + m.r), H = Math.ceil(m.t + Math.max(ph, 60) + m.b);
    var cv = document.createElement("canvas");
    cv.width = Math.round(W * dpr);
    cv.height = Math.round(H * dpr);
    cv.style.width = W + "px";
    cv.style.height = H + "px";
    cv.dataset.geometry = JSON.stringify({ left: m.l, top: m.t, cellWidth: cw, cellHeight: ch, rows: rows, cols: cols });
    host.appendChild(cv);
    var g = cv.getContext("2d");
    g.scale(dpr, dpr);

    // Cells: one pixel per cell in an offscreen image, scaled up without smoothing (crisp, fast).
    var img = document.createElement("canvas");
    img.width = cols;
    img.height = rows;
    var ig = img.getContext("2d");
    var id = ig.createImageData(cols, rows);
    for (var i = 0; i < rows; i++) {
      for (var j = 0; j < cols; j++) {
        var k = 4 * (i * cols + j);
        var c = o.masked && o.masked(i, j) ? [250, 250, 252] : colour(o, o.data[i][j]);
        id.data[k] = c[0];
        id.data[k + 1] = c[1];
        id.data[k + 2] = c[2];
        id.data[k + 3] = 255;
      }
    }
    ig.putImageData(id, 0, 0);
    g.imageSmoothingEnabled = false;
    g.drawImage(img, m.l, m.t, pw, ph);
    g.strokeStyle = LINE;
    g.lineWidth = 1;
    g.strokeRect(m.l - 0.5, m.t - 0.5, pw + 1, ph + 1);

    // Thin gaps between cells when cells are big, so a small grid reads as a grid.
    if (cw >= 14 && ch >= 14) {
      g.strokeStyle = "rgba(255,255,255,0.9)";
      g.lineWidth = 1;
      g.beginPath();
      for (var jj = 1; jj < cols; jj++) {
        g.moveTo(m.l + jj * cw, m.t);
        g.lineTo(m.l + jj * cw, m.t + ph);
      }
      for (var ii = 1; ii < rows; ii++) {
        g.moveTo(m.l, m.t + ii * ch);
        g.lineTo(m.l + pw, m.t + ii * ch);
      }
      g.stroke();
    }

    // Values written in the cells when they fit.
    if (o.cellText && cw >= 30 && ch >= 18) {
      g.font = font(Math.min(12, Math.floor(ch * 0.45)));
      g.textAlign = "center";
      g.textBaseline = "middle";
      for (var r = 0; r < rows; r++) {
        for (var q = 0; q < cols; q++) {
          var cc = colour(o, o.data[r][q]);
          var lum = 0.299 * cc[0] + 0.587 * cc[1] + 0.114 * cc[2];
          g.fillStyle = lum < 140 ? "rgba(255,255,255,0.95)" : "rgba(31,35,48,0.8)";
          g.fillText(fmt(o.data[r][q], 2), m.l + (q + 0.5) * cw, m.t + (r + 0.5) * ch + 0.5);
        }
      }
    }

    // Divider lines between blocks (e.g. the two copies of the sequence).
    (o.dividers || []).forEach(function (d) {
      g.strokeStyle = d.colour || "rgba(31,35,48,0.45)";
      g.setLineDash([3, 3]);
      g.lineWidth = 1;
      g.beginPath();
      if (d.col !== undefined) {
        g.moveTo(m.l + d.col * cw, m.t);
        g.lineTo(m.l + d.col * cw, m.t + ph);
      }
      if (d.row !== undefined) {
        g.moveTo(m.l, m.t + d.row * ch);
        g.lineTo(m.l + pw, m.t + d.row * ch);
      }
      g.stroke();
      g.setLineDash([]);
    });

    // Marked cells (the chosen heads).
    (o.marks || []).forEach(function (mk) {
      g.strokeStyle = WARM;
      g.lineWidth = 2.5;
      g.strokeRect(m.l + mk.c * cw + 1.25, m.t + mk.r * ch + 1.25, cw - 2.5, ch - 2.5);
    });

    // Axes: ticks and labels.
    g.fillStyle = MUTED;
    g.font = font(11);
    g.textAlign = "right";
    g.textBaseline = "middle";
    var rs = o.rowStep || niceStep(rows, ch, 14);
    for (var rt = 0; rt < rows; rt += rs) {
      g.fillText(o.rowTick ? o.rowTick(rt) : String(rt), m.l - 6, m.t + (rt + 0.5) * ch);
    }
    g.textAlign = "center";
    g.textBaseline = "top";
    var cs = o.colStep || niceStep(cols, cw, 26);
    for (var ct = 0; ct < cols; ct += cs) {
      g.fillText(o.colTick ? o.colTick(ct) : String(ct), m.l + (ct + 0.5) * cw, m.t + ph + 5);
    }
    g.fillStyle = INK;
    g.font = font(12, "500");
    g.fillText(o.colTitle || "", m.l + pw / 2, m.t + ph + 22);
    if (o.rowTitle) {
      g.save();
      g.translate(12, m.t + ph / 2);
      g.rotate(-Math.PI / 2);
      g.textBaseline = "middle";
      g.fillText(o.rowTitle, 0, 0);
      g.restore();
    }

    // Colour bar.
    var bx = m.l + pw + 16, bh = Math.max(ph, 60), by = m.t;
    for (var y = 0; y < bh; y++) {
      var t = 1 - y / (bh - 1);
      var v = o.scale === "div"
        ? (t - 0.5) * 2 * Math.max(Math.abs(o.vmin), Math.abs(o.vmax))
        : o.vmin + t * (o.vmax - o.vmin);
      g.fillStyle = css(colour(o, v));
      g.fillRect(bx, by + y, 10, 1.5);
    }
    g.strokeStyle = LINE;
    g.strokeRect(bx - 0.5, by - 0.5, 11, bh + 1);
    g.fillStyle = MUTED;
    g.font = font(10.5);
    g.textAlign = "left";
    var top = o.scale === "div" ? Math.max(Math.abs(o.vmin), Math.abs(o.vmax)) : o.vmax;
    var bottom = o.scale === "div" ? -top : o.vmin;
    g.textBaseline = "top";
    g.fillText(fmt(top, o.barDigits || 2), bx + 15, by);
    g.textBaseline = "middle";
    g.fillText(fmt((top + bottom) / 2, o.barDigits || 2), bx + 15, by + bh / 2);
    g.textBaseline = "bottom";
    g.fillText(fmt(bottom, o.barDigits || 2), bx + 15, by + bh);

    // Hover: outline the cell and show its exact value.
    var hl = document.createElement("div");
    hl.className = "cell-hl";
    host.appendChild(hl);
    cv.addEventListener("mousemove", function (e) {
      var rect = cv.getBoundingClientRect();
      var x = e.clientX - rect.left - m.l, yy = e.clientY - rect.top - m.t;
      var col = Math.floor(x / cw), row = Math.floor(yy / ch);
      if (x < 0 || yy < 0 || col >= cols || row >= rows) {
        hideTip();
        hl.style.display = "none";
        return;
      }
      hl.style.display = "block";
      hl.style.left = cv.offsetLeft + m.l + col * cw + "px";
      hl.style.top = cv.offsetTop + m.t + row * ch + "px";
      hl.style.width = Math.max(cw, 3) + "px";
      hl.style.height = Math.max(ch, 3) + "px";
      showTip(e, o.tip(row, col, o.data[row][col]));
    });
    cv.addEventListener("mouseleave", function () {
      hideTip();
      hl.style.display = "none";
    });
    return cv;
  }

  // Nice tick values covering [lo, hi]: multiples of 1, 2 or 5 times a power of ten.
  function ticks(lo, hi, n) {
    var span = (hi - lo) || 1, raw = span / n;
    var p = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 5, 10].map(function (k) { return k * p; }).find(function (s) { return s >= raw; });
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    return { values: out, digits: Math.max(0, -Math.floor(Math.log10(step))) };
  }

  // A scatter plot of o.points [{ x, y, c (0..1 colour), label }] with equal x and y ranges and
  // the line y = x, on a canvas inside host.
  function scatter(host, o) {
    host.innerHTML = "";
    var pts = o.points;
    if (!pts.length) throw new Error("empty scatter " + (host.dataset.kind || ""));
    var dpr = Math.max(1, window.devicePixelRatio || 1);
    var m = { l: 62, r: 14, t: 10, b: 42 };
    var W = Math.max(260, Math.min(host.clientWidth || 420, 560)), side = W - m.l - m.r;
    var H = m.t + side + m.b;
    var lo = 0, hi = 0;
    pts.forEach(function (p) {
      lo = Math.min(lo, p.x, p.y);
      hi = Math.max(hi, p.x, p.y);
    });
    var pad = (hi - lo) * 0.05 || 1;
    lo -= pad;
    hi += pad;
    var cv = document.createElement("canvas");
    cv.width = Math.round(W * dpr);
    cv.height = Math.round(H * dpr);
    cv.style.width = W + "px";
    cv.style.height = H + "px";
    host.appendChild(cv);
    var g = cv.getContext("2d");
    g.scale(dpr, dpr);
    function px(v) { return m.l + (v - lo) / (hi - lo) * side; }
    function py(v) { return m.t + side - (v - lo) / (hi - lo) * side; }
    var t = ticks(lo, hi, 5);
    g.strokeStyle = LINE;
    g.lineWidth = 1;
    g.font = font(11);
    g.fillStyle = MUTED;
    t.values.forEach(function (v) {
      g.beginPath();
      g.moveTo(px(v), m.t);
      g.lineTo(px(v), m.t + side);
      g.moveTo(m.l, py(v));
      g.lineTo(m.l + side, py(v));
      g.stroke();
      g.textAlign = "center";
      g.textBaseline = "top";
      g.fillText(fmt(v, t.digits), px(v), m.t + side + 5);
      g.textAlign = "right";
      g.textBaseline = "middle";
      g.fillText(fmt(v, t.digits), m.l - 6, py(v));
    });
    g.strokeRect(m.l - 0.5, m.t - 0.5, side + 1, side + 1);
    g.strokeStyle = "rgba(31,35,48,0.5)";
    g.setLineDash([5, 4]);
    g.beginPath();
    g.moveTo(px(lo), py(lo));
    g.lineTo(px(hi), py(hi));
    g.stroke();
    g.setLineDash([]);
    pts.forEach(function (p) {
      var c = ramp(SEQ, 0.3 + 0.7 * p.c);
      g.fillStyle = "rgba(" + Math.round(c[0]) + "," + Math.round(c[1]) + "," + Math.round(c[2]) + ",0.8)";
      g.beginPath();
      g.arc(px(p.x), py(p.y), 3.2, 0, 2 * Math.PI);
      g.fill();
    });
    g.fillStyle = INK;
    g.font = font(12, "500");
    g.textAlign = "center";
    g.textBaseline = "top";
    g.fillText(o.xTitle, m.l + side / 2, m.t + side + 22);
    g.save();
    g.translate(13, m.t + side / 2);
    g.rotate(-Math.PI / 2);
    g.textBaseline = "middle";
    g.fillText(o.yTitle, 0, 0);
    g.restore();
    cv.addEventListener("mousemove", function (e) {
      var rect = cv.getBoundingClientRect();
      var x = e.clientX - rect.left, y = e.clientY - rect.top, best = null, bd = 64;
      pts.forEach(function (p) {
        var d = Math.pow(px(p.x) - x, 2) + Math.pow(py(p.y) - y, 2);
        if (d < bd) {
          bd = d;
          best = p;
        }
      });
      if (best) showTip(e, best.label);
      else hideTip();
    });
    cv.addEventListener("mouseleave", hideTip);
    return cv;
  }

  function range(a) {
    var lo = Infinity, hi = -Infinity;
    a.forEach(function (row) {
      row.forEach(function (v) {
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      });
    });
    return [lo, hi];
  }
  function headName(l, h) {
    return l + "." + h;
  }
  function tokenLabel(pos) {
    if (pos >= D.tokens.length) return "pos " + pos;
    var id = D.tokens[pos];
    var s = D.tokenStrings ? " " + JSON.stringify(D.tokenStrings[pos]) : "";
    return "pos " + pos + " <span class=dim>(id " + id + esc(s) + ")</span>";
  }

  var drawers = {
    logprob: function (host) {
      var y = D.perPosition, n = y.length, S = D.seqLen;
      var xs = [];
      for (var i = 0; i < n; i++) xs.push(i);
      var lo = Math.min.apply(null, y), hi = Math.max.apply(null, y);
      var pad = (hi - lo) * 0.08 || 1;
      var halfMean = [D.firstHalf, D.secondHalf];
      var axis = {
        font: font(11),
        labelFont: font(12, "500"),
        labelSize: 24,
        stroke: MUTED,
        grid: { stroke: LINE, width: 1 },
        ticks: { stroke: LINE, width: 1, size: 4 },
      };
      var u = new uPlot({
        width: Math.max(320, host.clientWidth || 640),
        height: 300,
        padding: [30, 12, 0, 0],
        legend: { show: false },
        cursor: { points: { size: 8, fill: ACCENT }, drag: { x: false, y: false, setScale: false } },
        scales: {
          x: { time: false, range: [-0.5, n - 0.5] },
          y: { range: [Math.min(lo, 0) - pad, Math.max(hi, 0) + pad * 0.5] },
        },
        series: [
          {},
          { label: "mean log p(correct token)", stroke: ACCENT, width: 2, points: { show: n <= 60, size: 4, fill: ACCENT } },
        ],
        axes: [
          Object.assign({}, axis, { label: "position t (predicting token t + 1)" }),
          Object.assign({}, axis, {
            label: "mean log-prob of the correct token",
            size: 50,
            values: function (u, vals) {
              var whole = vals.every(function (v) { return Math.abs(v - Math.round(v)) < 1e-9; });
              return vals.map(function (v) { return fmt(v, whole ? 0 : 1); });
            },
          }),
        ],
        hooks: {
          drawClear: [function (u) {
            var c = u.ctx, b = u.bbox;
            var x = u.valToPos(S - 0.5, "x", true);
            c.save();
            c.fillStyle = "rgba(217,96,74,0.05)";
            c.fillRect(x, b.top, b.left + b.width - x, b.height);
            c.restore();
          }],
          draw: [function (u) {
            var c = u.ctx, b = u.bbox, r = uPlot.pxRatio;
            var x = u.valToPos(S - 0.5, "x", true);
            c.save();
            c.strokeStyle = "rgba(31,35,48,0.5)";
            c.lineWidth = r;
            c.setLineDash([5 * r, 4 * r]);
            c.beginPath();
            c.moveTo(x, b.top - 24 * r);
            c.lineTo(x, b.top + b.height);
            c.stroke();
            // Mean of each half as a dotted rule over its half.
            c.strokeStyle = WARM;
            c.lineWidth = 1.5 * r;
            c.setLineDash([2 * r, 3 * r]);
            [[-0.5, S - 0.5, halfMean[0]], [S - 0.5, n - 0.5, halfMean[1]]].forEach(function (seg) {
              var yy = u.valToPos(seg[2], "y", true);
              c.beginPath();
              c.moveTo(u.valToPos(seg[0], "x", true), yy);
              c.lineTo(u.valToPos(seg[1], "x", true), yy);
              c.stroke();
            });
            c.setLineDash([]);
            // Labels in the band above the plot.
            var ly = b.top - 12 * r;
            c.textBaseline = "middle";
            c.textAlign = "right";
            c.font = font(11.5 * r, "650");
            c.fillStyle = INK;
            var t1 = "first copy", m1 = "   mean " + fmt(halfMean[0]);
            c.font = font(11.5 * r);
            var w1 = c.measureText(m1).width;
            c.fillStyle = WARM;
            c.fillText(m1, x - 10 * r, ly);
            c.font = font(11.5 * r, "650");
            c.fillStyle = INK;
            c.fillText(t1, x - 10 * r - w1, ly);
            c.textAlign = "left";
            var t2 = "second copy";
            c.fillText(t2, x + 10 * r, ly);
            var w2 = c.measureText(t2).width;
            c.font = font(11.5 * r);
            c.fillStyle = WARM;
            c.fillText("   mean " + fmt(halfMean[1]), x + 10 * r + w2, ly);
            c.restore();
          }],
          setCursor: [function (u) {
            var i = u.cursor.idx;
            if (i === null || i === undefined || u.cursor.left < 0) {
              hideTip();
              return;
            }
            var rect = u.over.getBoundingClientRect();
            var e = { clientX: rect.left + u.cursor.left, clientY: rect.top + u.cursor.top };
            showTip(e, "position " + i + (i < S ? " · first copy" : " · second copy") +
              "<br>predicting " + tokenLabel(i + 1) + "<br>mean log-prob <b>" + fmt(y[i]) + "</b>");
          }],
        },
      }, [xs, y], host);
      u.over.addEventListener("mouseleave", hideTip);
      return u;
    },
    heads: function (host) {
      var kind = host.dataset.kind;
      var data = D.heads[kind];
      var chosen = kind === "induction" ? D.chosen.induction : kind === "previousToken" ? D.chosen.prev : null;
      return heatmap(host, {
        data: data,
        scale: "seq",
        // Scores are attention probabilities: a fixed 0..1 scale compares runs and models.
        vmin: 0,
        vmax: 1,
        cellText: true,
        maxCell: 44,
        rowTitle: "layer",
        colTitle: "head",
        rowStep: 1,
        colStep: data[0].length > 16 ? 2 : 1,
        marks: chosen ? [{ r: chosen[0], c: chosen[1] }] : [],
        tip: function (r, c, v) {
          return "head <b>" + headName(r, c) + "</b> &nbsp;" + fmt(v);
        },
      });
    },
    attention: function (host) {
      var which = D.attention[host.dataset.kind];
      var p = which.pattern, S = D.seqLen;
      return heatmap(host, {
        data: p,
        scale: "seq",
        vmin: 0,
        vmax: 1,
        maxCell: 24,
        rowTitle: "query position",
        colTitle: "key position",
        masked: function (i, j) { return j > i; },
        dividers: [{ col: S + 1 }, { row: S + 1 }],
        tip: function (r, c, v) {
          return "query " + tokenLabel(r) + "<br>key " + tokenLabel(c) + "<br>attention <b>" + fmt(v) + "</b>";
        },
      });
    },
    patching: function (host) {
      var rec = D.patching[host.dataset.kind];
      var rg = D.patching.range;
      return heatmap(host, {
        data: rec.scores,
        scale: "div",
        vmin: rg[0],
        vmax: rg[1],
        maxCell: 44,
        cellH: 22,
        maxAspect: 1.5,
        minCellH: 12,
        minPlotH: 110,
        maxCellH: 40,
        rowTitle: "layer",
        colTitle: "patched position",
        rowStep: rec.scores.length > 24 ? 2 : 1,
        colTick: function (j) { return String(rec.positions[j]); },
        barDigits: 3,
        tip: function (r, c, v) {
          var p = rec.positions[c];
          var from = p - D.seqLen;
          return "layer <b>" + r + "</b>, position " + tokenLabel(p) + "<br>clean value from position " + from +
            "<br>loss change <b>" + fmt(v, 4) + "</b> nats";
        },
      });
    },
    scatter: function (host) {
      var rec = D.attribution[host.dataset.kind];
      var L = rec.exact.length, pts = [];
      rec.exact.forEach(function (row, l) {
        row.forEach(function (x, j) {
          var y = rec.estimates[l][j], p = rec.positions[j];
          pts.push({
            x: x,
            y: y,
            c: L > 1 ? l / (L - 1) : 1,
            label: "layer <b>" + l + "</b>, position " + tokenLabel(p) + "<br>exact <b>" + fmt(x, 4) +
              "</b> nats<br>estimate <b>" + fmt(y, 4) + "</b> nats",
          });
        });
      });
      return scatter(host, {
        points: pts,
        xTitle: "exact loss change (nats)",
        yTitle: "attribution estimate (nats)",
      });
    },
  };
  function drawAll() {
    var n = 0;
    document.querySelectorAll("[data-chart]").forEach(function (host) {
      var f = drawers[host.dataset.chart];
      if (!f) throw new Error("unknown chart " + host.dataset.chart);
      if (host._plot && host._plot.destroy) host._plot.destroy();
      host.innerHTML = "";
      host._plot = f(host);
      n++;
    });
    document.body.dataset.charts = String(n);
  }

  try {
    drawAll();
  } catch (e) {
    document.body.dataset.charts = "error";
    throw e;
  }
  var lastW = window.innerWidth, timer = 0;
  window.addEventListener("resize", function () {
    if (window.innerWidth === lastW) return;
    lastW = window.innerWidth;
    clearTimeout(timer);
    timer = setTimeout(drawAll, 150);
  });
})();
`;
