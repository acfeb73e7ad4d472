/**
 * `viz.saeFeatures` (the explorer's SAE view, and a notebook's): the DOM holds each position's
 * number of active features and its strongest features with their activations, strongest first;
 * bad input is an InputError that says what to pass. The page test against SAELens's reference
 * is in `explorer_models_test.ts`.
 */
import assert from "node:assert/strict";
import { InputError, type Tensor, viz } from "../mod.ts";
import { elements } from "./view_html.ts";

Deno.test("saeFeatures: L0 and the strongest features per position, in order, escaped", () => {
  // 3 positions x 5 features; position 2 has none active.
  const acts: Tensor = {
    data: Float32Array.from([0, 2, 0.5, 0, 3, 0, 0, 0, 1.25, 0, 0, 0, -1, 0, 0]),
    shape: [1, 3, 5],
  };
  const view = viz.saeFeatures(["<a>", " b", "c"], acts, {
    k: 2,
    label: "blocks.0.hook_resid_pre",
  });
  const all = elements(view.html);
  assert.deepEqual(
    all.filter((e) => e.attrs["data-active"] !== undefined).map((e) =>
      Number(e.attrs["data-active"])
    ),
    [3, 1, 0],
    "active features per position (a negative activation is not active)",
  );
  const cells = all.filter((e) => e.attrs["data-id"] !== undefined).map((e) => [
    Number(e.attrs["data-id"]),
    Number(e.attrs["data-value"]),
  ]);
  assert.deepEqual(cells, [[4, 3], [1, 2], [3, 1.25]], "the 2 strongest, strongest first");
  assert.ok(!view.html.includes("<a>"), "tokens are escaped");
  assert.ok(view.html.includes("blocks.0.hook_resid_pre"), "the label is shown");
  assert.ok(view.html.includes('data-scale="sequential" data-min="0" data-max="3"'));
});

Deno.test("saeFeatures: bad input is an InputError that says what to pass", () => {
  const t = (shape: number[]): Tensor => ({
    data: new Float32Array(shape.reduce((a, b) => a * b, 1)),
    shape,
  });
  const cases: [() => unknown, RegExp][] = [
    [() => viz.saeFeatures(["a"], t([2, 1, 4])), /one sequence/],
    [() => viz.saeFeatures(["a", "b"], t([1, 4])), /2 tokens but activations for 1/],
    [() => viz.saeFeatures(["a"], t([1, 4]), { k: 0 }), /k must be a whole number/],
    [() => viz.saeFeatures([1 as never], t([1, 4])), /array of strings/],
  ];
  for (const [f, message] of cases) {
    assert.throws(f, (e) => e instanceof InputError && message.test(e.message));
  }
});
