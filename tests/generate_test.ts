/**
 * `generate` (issue 10, item 8): greedy decoding against an oracle built from full `run`s, the
 * key/value cache against recomputing the prefix (identical tokens), padded batches against each
 * prompt alone, steering with a hook, hooks' shapes during cached steps, EOS, text, sampling
 * (TransformerLens's `sample_logits` rules, checked by their frequencies) and the errors.
 */
import assert from "node:assert/strict";
import { HookedTransformer, type HookFn, InputError, SeededRng } from "../mod.ts";
import { sampleLogits } from "../model/generate.ts";
import { CHAR_TOKENIZER, tinyModel } from "./toolkit_helpers.ts";

const PROMPTS = [[95, 10, 20, 30, 40, 50, 60], [95, 7, 3, 9]];

/**
 * The embedded induction model: unlike the tiny random model (whose greedy output repeats one
 * token whatever the positions), its continuations depend on positions and on what each query
 * attends to, so a mistake in either changes the tokens.
 */
const toy = await HookedTransformer.fromPretrained("induction-toy", { threads: 1 });
const TOY_PROMPTS = [[2047, 11, 500, 37, 1200, 9, 11, 500], [2047, 70, 80, 90, 70]];

/** Greedy continuation by full runs: argmax of the last position's logits, appended, again. */
async function greedyOracle(model: HookedTransformer, prompt: number[], n: number) {
  const seq = [...prompt];
  const V = model.cfg.dVocab;
  for (let i = 0; i < n; i++) {
    const logits = await model.run([seq]);
    const last = logits.data.subarray((seq.length - 1) * V, seq.length * V);
    let best = 0;
    for (let j = 1; j < V; j++) if (last[j] > last[best]) best = j;
    seq.push(best);
  }
  return seq;
}

Deno.test("greedy generate equals the full-run oracle, with and without the KV cache", async () => {
  const model = toy;
  for (const prompt of TOY_PROMPTS) {
    const oracle = await greedyOracle(model, prompt, 12);
    for (const usePastKvCache of [true, false]) {
      const out = await model.generate([prompt], {
        maxNewTokens: 12,
        temperature: 0,
        stopAtEos: false,
        usePastKvCache,
      });
      assert.deepEqual(out, [oracle], `cache ${usePastKvCache}`);
    }
  }
});

Deno.test("a left-padded batch generates what each prompt generates alone", async () => {
  const model = toy;
  const T = 8;
  const tokens = TOY_PROMPTS.map((p) => [...new Array(T - p.length).fill(0), ...p]);
  const attentionMask = TOY_PROMPTS.map((p) => [
    ...new Array(T - p.length).fill(0),
    ...new Array(p.length).fill(1),
  ]);
  for (const usePastKvCache of [true, false]) {
    const out = await model.generate(tokens, {
      maxNewTokens: 10,
      temperature: 0,
      stopAtEos: false,
      usePastKvCache,
      attentionMask,
    }) as number[][];
    for (const [b, p] of TOY_PROMPTS.entries()) {
      const alone = await greedyOracle(model, p, 10);
      assert.deepEqual(out[b].slice(T - p.length), alone, `sequence ${b}, cache ${usePastKvCache}`);
    }
  }
});

Deno.test("steering with a hook on resid_pre works while generating", async () => {
  const model = await tinyModel();
  const V = model.cfg.dVocab, d = model.cfg.dModel, WU = model.W_U.data;
  // Steer along the unembedding column of the token whose column is most aligned with itself,
  // so that a large multiple of it makes that token the argmax after the final norm.
  const column = (t: number) => Float32Array.from({ length: d }, (_, i) => WU[i * V + t]);
  const dot = (a: Float32Array, b: Float32Array) => a.reduce((s, v, i) => s + v * b[i], 0);
  const target = Array.from({ length: V }, (_, t) => t).find((t) => {
    const c = column(t);
    return Array.from({ length: V }, (_, j) => dot(column(j), c)).every((v, j) =>
      j === t || v < dot(c, c)
    );
  })!;
  const dir = column(target);
  const steer: HookFn = (act) => {
    for (let i = 0; i < act.data.length; i++) act.data[i] += 50 * dir[i % d];
  };
  const prompt = PROMPTS[0];
  const plain = await model.generate([prompt], {
    maxNewTokens: 8,
    temperature: 0,
    stopAtEos: false,
  });
  const steered = await Promise.all(
    [true, false].map((usePastKvCache) =>
      model.hooks(
        [["blocks.1.hook_resid_pre", steer]],
        (m) =>
          m.generate([prompt], {
            maxNewTokens: 8,
            temperature: 0,
            stopAtEos: false,
            usePastKvCache,
          }),
      )
    ),
  );
  assert.deepEqual(steered[0], steered[1], "the same with and without the cache");
  const added = (steered[0] as number[][])[0].slice(prompt.length);
  assert.deepEqual(added, new Array(8).fill(target), `every new token is ${target}`);
  assert.notDeepEqual(plain, steered[0]);
  // The hook is gone afterwards.
  assert.deepEqual(
    await model.generate([prompt], { maxNewTokens: 8, temperature: 0, stopAtEos: false }),
    plain,
  );
});

Deno.test("with the cache, hooks after the first pass see the new position only", async () => {
  const model = await tinyModel();
  const shapes: number[][] = [];
  model.addHook("blocks.0.attn.hook_pattern", (p) => void shapes.push(p.shape));
  model.addHook("blocks.1.hook_resid_pre", (r) => void shapes.push(r.shape));
  const padded = [PROMPTS[0], [0, 0, 0, ...PROMPTS[1]]];
  await model.generate(padded, {
    maxNewTokens: 3,
    temperature: 0,
    stopAtEos: false,
    attentionMask: [[1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1]],
  });
  model.resetHooks();
  assert.deepEqual(shapes, [
    [2, 4, 7, 7],
    [2, 7, 32],
    [2, 4, 1, 8],
    [2, 1, 32],
    [2, 4, 1, 9],
    [2, 1, 32],
  ]);
});

Deno.test("stopAtEos ends finished sequences with EOS and stops when all have", async () => {
  const model = await tinyModel();
  const prompts = [PROMPTS[0], [95, 1, 2, 3, 4, 5, 6]];
  const free = await model.generate(prompts, {
    maxNewTokens: 8,
    temperature: 0,
    stopAtEos: false,
  }) as number[][];
  const n = prompts[0].length;
  const eos = free[0][n + 2]; // sequence 0's third new token, taken as EOS
  const at = free.map((row) => row.indexOf(eos, n));
  assert.ok(at[1] === -1 || at[1] > at[0], "sequence 1 finishes later, or never");
  const stopped = await model.generate(prompts, {
    maxNewTokens: 8,
    temperature: 0,
    eosTokenId: eos,
  }) as number[][];
  const end = at[1] === -1 ? n + 8 : at[1] + 1; // all finished, or out of new tokens
  assert.equal(stopped[1].length, end);
  assert.deepEqual(stopped[1], free[1].slice(0, end));
  // Sequence 0 keeps EOS once it produced it.
  assert.deepEqual(stopped[0], [
    ...free[0].slice(0, at[0] + 1),
    ...new Array(end - at[0] - 1).fill(eos),
  ]);
  // Alone, it stops right after its EOS.
  const alone = await model.generate([prompts[0]], {
    maxNewTokens: 8,
    temperature: 0,
    eosTokenId: eos,
  });
  assert.deepEqual(alone, [free[0].slice(0, at[0] + 1)]);
});

Deno.test("sampling is repeatable with a seed; topK 1 is greedy", async () => {
  const model = await tinyModel();
  const a = await model.generate(PROMPTS.slice(0, 1), {
    maxNewTokens: 8,
    seed: 3,
    stopAtEos: false,
  });
  const b = await model.generate(PROMPTS.slice(0, 1), {
    maxNewTokens: 8,
    seed: 3,
    stopAtEos: false,
  });
  const c = await model.generate(PROMPTS.slice(0, 1), {
    maxNewTokens: 8,
    seed: 4,
    stopAtEos: false,
  });
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  const greedy = await model.generate(PROMPTS.slice(0, 1), {
    maxNewTokens: 8,
    temperature: 0,
    stopAtEos: false,
  });
  const top1 = await model.generate(PROMPTS.slice(0, 1), {
    maxNewTokens: 8,
    topK: 1,
    seed: 9,
    stopAtEos: false,
  });
  const noSample = await model.generate(PROMPTS.slice(0, 1), {
    maxNewTokens: 8,
    doSample: false,
    stopAtEos: false,
  });
  assert.deepEqual(top1, greedy);
  assert.deepEqual(noSample, greedy);
});

Deno.test("sampleLogits follows TL's temperature, top-k and top-p rules", () => {
  // Probabilities 0.5, 0.3, 0.15, 0.05: counts over N draws are binomial; 5 sd bounds.
  const p = [0.5, 0.3, 0.15, 0.05];
  const logits = Float32Array.from(p, Math.log);
  const N = 20000;
  const freq = (opts: Parameters<typeof sampleLogits>[1]) => {
    const rng = new SeededRng(11);
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < N; i++) counts[sampleLogits(logits, opts, rng)]++;
    return counts.map((c) => c / N);
  };
  const near = (got: number[], want: number[]) =>
    got.forEach((g, i) => {
      const sd = Math.sqrt(want[i] * (1 - want[i]) / N);
      assert.ok(Math.abs(g - want[i]) <= 5 * sd + 1e-12, `p[${i}] ${g} vs ${want[i]}`);
    });
  near(freq({ temperature: 1 }), p);
  // Temperature 2: p^(1/2), renormalised.
  const sq = p.map(Math.sqrt), z = sq.reduce((s, v) => s + v);
  near(freq({ temperature: 2 }), sq.map((v) => v / z));
  // Top-k 2: the two largest, renormalised.
  near(freq({ temperature: 1, topK: 2 }), [0.5 / 0.8, 0.3 / 0.8, 0, 0]);
  // Top-p 0.6: cumulative 0.5 <= 0.6 keeps the next token too (TL's shift), then stops.
  near(freq({ temperature: 1, topP: 0.6 }), [0.5 / 0.8, 0.3 / 0.8, 0, 0]);
  // Top-p 0.5: the first token alone reaches it.
  near(freq({ temperature: 1, topP: 0.4 }), [1, 0, 0, 0]);
  // Top-p 1 keeps everything.
  near(freq({ temperature: 1, topP: 1 }), p);
  assert.equal(sampleLogits(logits, { temperature: 0 }, new SeededRng(1)), 0);
});

Deno.test("text in, text out; a batch of texts is left-padded", async () => {
  const model = await tinyModel(true, CHAR_TOKENIZER);
  const one = await model.generate("abc", { maxNewTokens: 5, temperature: 0, stopAtEos: false });
  assert.equal(typeof one, "string");
  const ids = model.toTokens("abc")[0];
  const oracle = await greedyOracle(model, ids, 5);
  assert.equal(one, CHAR_TOKENIZER.decode(oracle.slice(1)), "decoded without BOS");
  const many = await model.generate(["abc", "hello"], {
    maxNewTokens: 5,
    temperature: 0,
    stopAtEos: false,
  }) as string[];
  assert.equal(many[0], one);
  const alone = await model.generate("hello", {
    maxNewTokens: 5,
    temperature: 0,
    stopAtEos: false,
  });
  assert.equal(many[1], alone);
  const tokens = await model.generate("abc", {
    maxNewTokens: 2,
    temperature: 0,
    stopAtEos: false,
    returnType: "tokens",
  });
  assert.deepEqual(tokens, [oracle.slice(0, ids.length + 2)]);
});

Deno.test("generate refuses bad options with typed errors", async () => {
  const model = await tinyModel();
  const p = [PROMPTS[0]];
  const untyped = model.generate.bind(model) as (i: unknown, o: unknown) => Promise<unknown>;
  const cases: [unknown, string][] = [
    [{ max_new_tokens: 3 }, "did you mean maxNewTokens?"],
    [{ maxNewTokens: 0 }, "positive integer"],
    [{ maxNewTokens: 40 }, "exceed the model's context n_ctx = 32"],
    [{ temperature: -1 }, "temperature"],
    [{ topP: 1.5 }, "(0, 1]"],
    [{ topK: 2, topP: 0.5 }, "mutually exclusive"],
    [{ returnType: "embeds" }, "returnType"],
    [{ eosTokenId: 96 }, "outside the vocabulary"],
    [{ seed: "x" }, "seed must be a finite number"],
    [{ attentionMask: [[1, 1, 1, 1, 1, 1, 0]] }, "padded on the left"],
  ];
  for (const [opts, message] of cases) {
    await assert.rejects(() => untyped(p, opts), InputError, message);
  }
  await assert.rejects(() => model.generate("text"), InputError, "no text tokenizer");
});
