/**
 * report.html: rendered from a synthetic results object of GPT-2 small's shape (12 x 12 heads,
 * seq_len 50, so every chart is drawn at full size), opened from disk in headless Chromium with
 * no network: every chart must draw (each canvas has non-background pixels), the console must stay
 * clean, no request may leave the file, and hovering a heatmap shows its exact value. A
 * screenshot is kept in out/test-artifacts/report.png.
 *
 * Skips (with a message) only when Chromium is missing and $CI is unset; in CI it must run.
 */
import assert from "node:assert/strict";
import { externalReferences, renderReport } from "../experiments/report/render.ts";
import {
  type ExperimentResults,
  parseResults,
  RESULTS_SCHEMA,
  RESULTS_SCHEMA_VERSION,
  STUDY_REFERENCE,
} from "../experiments/report/schema.ts";
import { UPLOT_CSS, UPLOT_JS, UPLOT_VERSION } from "../experiments/report/uplot.ts";
import { launchChromium, skipWithoutChromium, watchPage } from "./browser.ts";

const ARTIFACTS = new URL("../out/test-artifacts/", import.meta.url);

/** A small deterministic generator (mulberry32) for the fixture's noise. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function grid(rows: number, cols: number, f: (i: number, j: number) => number): number[][] {
  return Array.from({ length: rows }, (_, i) => Array.from({ length: cols }, (_, j) => f(i, j)));
}

/** A causal attention pattern putting `peak` on key(q) and spreading the rest evenly. */
function pattern(T: number, key: (q: number) => number | undefined, peak: number): number[][] {
  return grid(T, T, (q, k) => {
    if (k > q) return 0;
    const target = key(q);
    if (target === undefined || target < 0 || target > q) return 1 / (q + 1);
    if (q === 0) return 1;
    return k === target ? peak : (1 - peak) / q;
  });
}

/** Plausible results of GPT-2 small's shape: made up, but shaped like the study's. */
export function sampleResults(): ExperimentResults {
  const r = rng(7);
  const L = 12, H = 12, S = 50, B = 4, V = 50257, T = 1 + 2 * S;
  const tokens = grid(B, T, () => 0);
  for (const row of tokens) {
    row[0] = 50256;
    for (let i = 0; i < S; i++) row[1 + i] = row[1 + S + i] = Math.floor(r() * V);
  }
  const perToken = grid(B, 2 * S, (_, t) => t < S || t === S ? -13 - 3 * r() : -0.3 - 1.2 * r());
  const perPosition = Array.from(
    { length: 2 * S },
    (_, t) => perToken.reduce((a, row) => a + row[t], 0) / B,
  );
  const induction = grid(L, H, () => 0.02 * r());
  induction[5][5] = 0.91;
  induction[5][1] = 0.62;
  induction[7][10] = 0.48;
  induction[6][9] = 0.33;
  const previousToken = grid(L, H, () => 0.05 * r());
  previousToken[4][11] = 0.72;
  previousToken[2][2] = 0.41;
  previousToken[3][3] = 0.38;
  const duplicateToken = grid(L, H, () => 0.03 * r());
  duplicateToken[3][0] = 0.55;
  const rank = (g: number[][]) =>
    g.flatMap((row, layer) => row.map((score, head) => ({ layer, head, score })))
      .sort((a, b) => b.score - a.score).slice(0, 5);
  const patch = (offset: number) =>
    grid(L, S, (l, j) =>
      (j === 0 && offset === 0 ? (l === 0 ? 0.42 : 0.05 / (l + 1)) : 0) +
      0.004 * (r() - 0.5));
  const pairs = [
    { prev: [4, 11] as [number, number], induction: [5, 5] as [number, number], top1: 0.2283 },
    { prev: [4, 11] as [number, number], induction: [5, 1] as [number, number], top1: 0.1402 },
    { prev: [2, 2] as [number, number], induction: [5, 5] as [number, number], top1: 0.0611 },
    { prev: [4, 11] as [number, number], induction: [7, 10] as [number, number], top1: 0.0322 },
    { prev: [3, 3] as [number, number], induction: [5, 5] as [number, number], top1: 0.0104 },
  ];
  return {
    schema: RESULTS_SCHEMA,
    schemaVersion: RESULTS_SCHEMA_VERSION,
    library: { name: "transformer-lens-deno", version: "0.0.0-test" },
    createdAt: "2025-01-01T12:00:00.000Z",
    runtime: "deno test",
    model: {
      name: "gpt2",
      source: "synthetic fixture (tests/report_test.ts)",
      choice: "--model gpt2",
      isGpt2Small: true,
      config: {
        modelName: "gpt2",
        nLayers: L,
        nHeads: H,
        dModel: 768,
        dHead: 64,
        dMlp: 3072,
        dVocab: V,
        nCtx: 1024,
        bosTokenId: 50256,
      },
    },
    settings: {
      seqLen: S,
      batch: B,
      seed: 0,
      prevHead: [4, 11],
      prevHeadFrom: "best",
      inductionHead: [5, 5],
      inductionHeadFrom: "best",
      topPairs: 3,
      patchingHook: "mlp_out",
    },
    tokens: { shape: [B, T], data: tokens },
    tokenStrings: tokens[0].map((id, i) => i === 0 ? "<|endoftext|>" : ` tok${id % 997}`),
    logProbs: {
      firstHalf: -13.898,
      secondHalf: -0.644,
      accuracyFirst: 0,
      accuracySecond: 0.93,
      perPosition,
      perToken,
    },
    headScores: {
      induction,
      previousToken,
      duplicateToken,
      topInduction: rank(induction),
      topPreviousToken: rank(previousToken),
      topDuplicateToken: rank(duplicateToken),
    },
    attention: {
      induction: {
        layer: 5,
        head: 5,
        batchIndex: 0,
        pattern: pattern(T, (q) => (q > S ? q - S + 1 : 0), 0.8),
      },
      previousToken: {
        layer: 4,
        head: 11,
        batchIndex: 0,
        pattern: pattern(T, (q) => q - 1, 0.7),
      },
    },
    patching: {
      hook: "mlp_out",
      cleanLoss: 0.644,
      study: {
        alignment: "study",
        positions: Array.from({ length: S }, (_, j) => S + j),
        scores: patch(0),
      },
      aligned: {
        alignment: "aligned",
        positions: Array.from({ length: S }, (_, j) => S + 1 + j),
        scores: patch(1),
      },
    },
    attribution: {
      hook: "mlp_out",
      study: {
        alignment: "study",
        positions: Array.from({ length: S }, (_, j) => S + j),
        estimates: patch(0).map((row) => row.map((v, j) => 0.8 * v + 0.01 * Math.sin(j))),
        correlation: 0.93,
      },
      aligned: {
        alignment: "aligned",
        positions: Array.from({ length: S }, (_, j) => S + 1 + j),
        estimates: patch(1).map((row) => row.map((v, j) => 1.1 * v - 0.01 * Math.cos(j))),
        correlation: 0.97,
      },
      seconds: 0.9,
      exactSeconds: 48.3,
    },
    circuits: {
      chance: 1 / V,
      kComposition: pairs[0],
      pairs,
      ovCopying: { layer: 5, head: 5, top1: 0.3122 },
    },
    timings: [
      { step: "load", label: "Load the model", seconds: 2.1 },
      { step: "tokens", label: "Repeated tokens", seconds: 0.001 },
      { step: "logprobs", label: "Log-prob summary", seconds: 6.2 },
      { step: "heads", label: "Head scores", seconds: 5.9 },
      { step: "attention", label: "Attention patterns", seconds: 0.9 },
      { step: "patching", label: "MLP patching (2 sweeps)", seconds: 48.3 },
      { step: "circuits", label: "Circuits (5 K-composition pairs + OV)", seconds: 95.4 },
    ],
    totalSeconds: 158.8,
    reference: STUDY_REFERENCE,
  };
}

/** sha256 of npm `uplot@1.6.32`'s `dist/uPlot.iife.min.js`, recorded from the published package. */
const UPLOT_1_6_32_JS_SHA256 = "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f";

Deno.test("report: inlines the pinned uPlot package's script and stylesheet, read when it renders", async () => {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(UPLOT_JS));
  const hex = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  assert.equal(UPLOT_VERSION, "1.6.32");
  assert.equal(hex, UPLOT_1_6_32_JS_SHA256, "uPlot's script is the published 1.6.32 file");
  const html = renderReport(sampleResults());
  assert.ok(html.includes(UPLOT_JS), "the report inlines uPlot's script as it is");
  assert.ok(html.includes(UPLOT_CSS), "the report inlines uPlot's stylesheet as it is");
});

Deno.test("report: self-contained HTML, results round-trip through JSON and parseResults", () => {
  const results = sampleResults();
  const parsed = parseResults(JSON.parse(JSON.stringify(results)));
  assert.deepEqual(parsed, results);
  assert.throws(() => parseResults({ schema: "other" }), /not a results file/);
  assert.throws(
    () => parseResults({ ...results, logProbs: { ...results.logProbs, secondHalf: "x" } }),
    /logProbs.secondHalf/,
  );
  const html = renderReport(results);
  assert.deepEqual(externalReferences(html), []);
  assert.deepEqual(externalReferences('<script src="https://cdn.example/u.js"></script>'), [
    "https://cdn.example/u.js",
  ]);
  assert.match(html, /^<!doctype html>/);
  // A data string cannot close the script element it lives in.
  const nasty = sampleResults();
  nasty.tokenStrings![1] = "</script><script>alert(1)</script>";
  nasty.model.name = "<b>x</b>";
  const escaped = renderReport(nasty);
  assert.equal(escaped.split("</script>").length, html.split("</script>").length);
  assert.ok(!escaped.includes("<b>x</b>"));
});

Deno.test({
  name: "report: every chart draws in headless Chromium, clean console, no requests out",
  ignore: skipWithoutChromium("the report's browser test"),
  async fn(t) {
    await Deno.mkdir(ARTIFACTS, { recursive: true });
    const htmlUrl = new URL("report.html", ARTIFACTS);
    await Deno.writeTextFile(htmlUrl, renderReport(sampleResults()));

    const browser = await launchChromium();
    try {
      const page = await browser.newPage();
      await page.setViewport({ width: 1280, height: 900, deviceScaleFactor: 1 });
      page.setDefaultTimeout(30_000);
      const seen = watchPage(page);
      await page.goto(htmlUrl.href);
      await page.waitForFunction("document.body.dataset.charts", { timeout: 10_000 });
      const charts = await page.evaluate("document.body.dataset.charts") as string;
      const hosts = await page.evaluate(
        "document.querySelectorAll('[data-chart]').length",
      ) as number;
      assert.equal(charts, String(hosts), `charts drawn: ${charts} of ${hosts}`);
      assert.ok(hosts >= 8, `expected at least 8 charts, found ${hosts}`);

      await t.step("every canvas has ink", async () => {
        // Page code is a string: it runs in the browser, and Deno's types have no DOM.
        const canvases = await page.evaluate(
          `Array.from(document.querySelectorAll("canvas")).map((c) => {
          const host = c.closest("[data-chart]");
          const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
          let inked = 0;
          for (let i = 0; i < d.length; i += 4) {
            // Not transparent and not (near) white: a drawn mark.
            if (d[i + 3] > 0 && (d[i] < 235 || d[i + 1] < 235 || d[i + 2] < 235)) inked++;
          }
          return {
            chart: host ? host.dataset.chart : "?",
            kind: host ? host.dataset.kind || "" : "",
            width: c.width,
            height: c.height,
            inked,
          };
        })`,
        ) as { chart: string; kind: string; width: number; height: number; inked: number }[];
        assert.ok(canvases.length >= hosts, `${canvases.length} canvases for ${hosts} charts`);
        for (const c of canvases) {
          assert.ok(
            c.width > 100 && c.height > 50,
            `${c.chart}/${c.kind} is ${c.width}x${c.height}`,
          );
          assert.ok(c.inked > 500, `${c.chart}/${c.kind} looks blank (${c.inked} inked pixels)`);
        }
      });

      await t.step("hovering a heatmap cell shows its value", async () => {
        // The centre of head 5.5's cell in the induction heatmap (score 0.91).
        const text = await page.evaluate(`(() => {
          const c = document.querySelector('[data-chart="heads"][data-kind="induction"] canvas');
          c.scrollIntoView();
          const g = JSON.parse(c.dataset.geometry);
          const r = c.getBoundingClientRect();
          const x = r.left + g.left + 5.5 * g.cellWidth, y = r.top + g.top + 5.5 * g.cellHeight;
          c.dispatchEvent(new MouseEvent("mousemove", { clientX: x, clientY: y, bubbles: true }));
          const tip = document.querySelector(".tip");
          const text = getComputedStyle(tip).display === "none" ? "(hidden)" : tip.innerText;
          c.dispatchEvent(new MouseEvent("mouseleave"));
          window.scrollTo(0, 0);
          return text;
        })()`) as string;
        assert.match(text, /5\.5/);
        assert.match(text, /0\.910/);
      });

      await t.step("screenshot", async () => {
        const png = await page.screenshot({ fullPage: true });
        assert.deepEqual(Array.from(png.slice(1, 4)), [0x50, 0x4e, 0x47]); // "PNG"
        await Deno.writeFile(new URL("report.png", ARTIFACTS), png);
      });

      const outside = seen.requests.filter((u) => !/^(file|data|about|blob):/.test(u));
      assert.deepEqual(outside, [], "the report made network requests");
      assert.deepEqual(seen.errors, [], "console errors");
    } finally {
      await browser.close();
    }
  },
});
