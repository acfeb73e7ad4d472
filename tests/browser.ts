/**
 * Drives a headless Chromium for tests and examples, over the DevTools protocol on a WebSocket
 * (no npm package, no browser download): launch, open a page, load a URL, collect console errors,
 * exceptions and network requests, evaluate JavaScript, and take screenshots.
 *
 * The browser runs with a fresh profile in a temporary folder and with every background network
 * feature off, so it works on machines with no network and leaves nothing behind.
 *
 * @example
 * ```ts ignore
 * import { findChromium, launchBrowser } from "./browser.ts";
 * const browser = await launchBrowser({ executablePath: findChromium() });
 * try {
 *   const page = await browser.newPage({ width: 1280, height: 800 });
 *   await page.goto(new URL("file:///tmp/report.html").href);
 *   const title = await page.evaluate<string>("document.title");
 *   await Deno.writeFile("shot.png", await page.screenshot({ fullPage: true }));
 *   if (page.errors.length) throw new Error(page.errors.join("\n"));
 * } finally {
 *   await browser.close();
 * }
 * ```
 * @module
 */

/** Where Chromium is usually installed; the first that exists is used. */
export const CHROMIUM_CANDIDATES: readonly string[] = [
  "/usr/bin/chromium",
  "/usr/bin/chromium-browser",
  "/usr/bin/google-chrome",
  "/usr/bin/google-chrome-stable",
  "/snap/bin/chromium",
  "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
  "/Applications/Chromium.app/Contents/MacOS/Chromium",
];

/** The flags every launch uses: headless, sandbox-free (containers), and quiet on the network. */
export const DEFAULT_CHROMIUM_FLAGS: readonly string[] = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--no-default-browser-check",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-extensions",
  "--disable-default-apps",
  "--disable-dev-shm-usage",
  "--disable-features=Translate,MediaRouter,OptimizationHints",
  "--metrics-recording-only",
  "--mute-audio",
  "--hide-scrollbars",
  "--password-store=basic",
  "--use-mock-keychain",
];

/**
 * The Chromium to use: `$CHROMIUM_PATH` (or `$CHROME_PATH`) when set, else the first of
 * {@linkcode CHROMIUM_CANDIDATES} that exists; undefined when none does.
 */
export function findChromium(): string | undefined {
  let fromEnv: string | undefined;
  try {
    fromEnv = Deno.env.get("CHROMIUM_PATH") ?? Deno.env.get("CHROME_PATH");
  } catch {
    // no --allow-env: ignore the variables
  }
  for (const path of fromEnv ? [fromEnv] : CHROMIUM_CANDIDATES) {
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // not there
    }
  }
  return undefined;
}

/** How to launch the browser. */
export interface LaunchOptions {
  /** The browser binary. Default: {@linkcode findChromium}. */
  executablePath?: string;
  /** More command-line flags, after {@linkcode DEFAULT_CHROMIUM_FLAGS}. */
  args?: string[];
  /** Milliseconds to wait for the browser to start and for each protocol call. Default 30 000. */
  timeoutMs?: number;
}

/** A page's size in CSS pixels and its device pixel ratio. */
export interface Viewport {
  /** Width, CSS pixels. */
  width: number;
  /** Height, CSS pixels. */
  height: number;
  /** Device pixels per CSS pixel. Default 1. */
  deviceScaleFactor?: number;
}

interface Pending {
  resolve: (value: Record<string, unknown>) => void;
  reject: (error: Error) => void;
  method: string;
  timer: ReturnType<typeof setTimeout>;
}

type Listener = (params: Record<string, unknown>, sessionId?: string) => void;

/** One WebSocket to the browser; pages talk over it with their session ids ("flat" mode). */
class Connection {
  #ws: WebSocket;
  #nextId = 1;
  #pending = new Map<number, Pending>();
  #listeners = new Map<string, Set<Listener>>();
  #timeoutMs: number;
  closed = false;

  private constructor(ws: WebSocket, timeoutMs: number) {
    this.#ws = ws;
    this.#timeoutMs = timeoutMs;
    ws.onmessage = (e) => this.#receive(String(e.data));
    ws.onclose = () => {
      this.closed = true;
      for (const p of this.#pending.values()) {
        clearTimeout(p.timer);
        p.reject(new Error(`browser connection closed during ${p.method}`));
      }
      this.#pending.clear();
    };
  }

  static open(url: string, timeoutMs: number): Promise<Connection> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      const timer = setTimeout(() => {
        ws.close();
        reject(new Error(`no DevTools WebSocket at ${url} after ${timeoutMs} ms`));
      }, timeoutMs);
      ws.onopen = () => {
        clearTimeout(timer);
        resolve(new Connection(ws, timeoutMs));
      };
      ws.onerror = (e) => {
        clearTimeout(timer);
        reject(new Error(`DevTools WebSocket ${url}: ${(e as ErrorEvent).message ?? "error"}`));
      };
    });
  }

  #receive(text: string) {
    const msg = JSON.parse(text) as {
      id?: number;
      method?: string;
      params?: Record<string, unknown>;
      result?: Record<string, unknown>;
      error?: { message: string; data?: string };
      sessionId?: string;
    };
    if (msg.id !== undefined) {
      const p = this.#pending.get(msg.id);
      if (!p) return;
      this.#pending.delete(msg.id);
      clearTimeout(p.timer);
      if (msg.error) {
        p.reject(
          new Error(
            `${p.method}: ${msg.error.message}${msg.error.data ? ` (${msg.error.data})` : ""}`,
          ),
        );
      } else p.resolve(msg.result ?? {});
    } else if (msg.method) {
      for (const fn of this.#listeners.get(msg.method) ?? []) fn(msg.params ?? {}, msg.sessionId);
    }
  }

  send(
    method: string,
    params: Record<string, unknown> = {},
    sessionId?: string,
    timeoutMs = this.#timeoutMs,
  ): Promise<Record<string, unknown>> {
    if (this.closed) return Promise.reject(new Error(`browser connection closed (${method})`));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`${method}: no answer from the browser after ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { resolve, reject, method, timer });
      this.#ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    });
  }

  on(method: string, fn: Listener): () => void {
    let set = this.#listeners.get(method);
    if (!set) this.#listeners.set(method, set = new Set());
    set.add(fn);
    return () => set.delete(fn);
  }

  close() {
    if (!this.closed) this.#ws.close();
    this.closed = true;
  }
}

/** A console message, exception or failed request seen on a page. */
export interface PageMessage {
  /** `"console"`, `"exception"`, `"log"` (browser log entries) or `"network"`. */
  source: "console" | "exception" | "log" | "network";
  /** Console type or log level, e.g. `"error"`, `"warning"`, `"log"`. */
  level: string;
  /** The text. */
  text: string;
}

/** One page (tab) of the browser. */
export class Page {
  #conn: Connection;
  #session: string;
  #targetId: string;
  #viewport: Required<Viewport>;
  /** Every console message, exception, error log entry and failed request, in order. */
  readonly messages: PageMessage[] = [];
  /** URL of every request the page made (documents, scripts, images, fetches). */
  readonly requests: string[] = [];

  /** @internal Use {@linkcode Browser.newPage}. */
  constructor(conn: Connection, session: string, targetId: string, viewport: Required<Viewport>) {
    this.#conn = conn;
    this.#session = session;
    this.#targetId = targetId;
    this.#viewport = viewport;
    const mine = (fn: Listener): Listener => (p, s) => {
      if (s === session) fn(p, s);
    };
    conn.on(
      "Runtime.consoleAPICalled",
      mine((p) => {
        const args = (p.args as { value?: unknown; description?: string; type: string }[]) ?? [];
        const text = args.map((a) =>
          a.value !== undefined
            ? typeof a.value === "string" ? a.value : JSON.stringify(a.value)
            : a.description ?? a.type
        ).join(" ");
        this.messages.push({ source: "console", level: String(p.type), text });
      }),
    );
    conn.on(
      "Runtime.exceptionThrown",
      mine((p) => {
        const d = p.exceptionDetails as {
          text: string;
          exception?: { description?: string };
          url?: string;
          lineNumber?: number;
        };
        const where = d.url ? ` (${d.url}:${(d.lineNumber ?? 0) + 1})` : "";
        this.messages.push({
          source: "exception",
          level: "error",
          text: `${d.exception?.description ?? d.text}${where}`,
        });
      }),
    );
    conn.on(
      "Log.entryAdded",
      mine((p) => {
        const e = p.entry as { level: string; text: string; url?: string };
        this.messages.push({
          source: "log",
          level: e.level,
          text: e.url ? `${e.text} (${e.url})` : e.text,
        });
      }),
    );
    conn.on(
      "Network.requestWillBeSent",
      mine((p) => {
        this.requests.push(String((p.request as { url: string }).url));
      }),
    );
    conn.on(
      "Network.loadingFailed",
      mine((p) => {
        if (p.canceled) return;
        this.messages.push({
          source: "network",
          level: "error",
          text: `request failed: ${p.errorText} (${p.type ?? "resource"})`,
        });
      }),
    );
  }

  /** Console errors, uncaught exceptions, error log entries and failed requests, as text. */
  get errors(): string[] {
    return this.messages.filter((m) => m.level === "error" || m.level === "assert").map((m) =>
      `${m.source}: ${m.text}`
    );
  }

  /** Sends a raw DevTools protocol command to this page. */
  send(method: string, params: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    return this.#conn.send(method, params, this.#session);
  }

  /** @internal Enables the domains the page listens to and applies the viewport. */
  async init(): Promise<void> {
    await Promise.all([
      this.send("Page.enable"),
      this.send("Runtime.enable"),
      this.send("Log.enable"),
      this.send("Network.enable"),
    ]);
    await this.setViewport(this.#viewport);
  }

  /** Sets the page's size and device pixel ratio. */
  async setViewport(v: Viewport): Promise<void> {
    this.#viewport = { deviceScaleFactor: 1, ...v };
    await this.send("Emulation.setDeviceMetricsOverride", {
      width: this.#viewport.width,
      height: this.#viewport.height,
      deviceScaleFactor: this.#viewport.deviceScaleFactor,
      mobile: false,
    });
  }

  /**
   * Loads `url` and waits for the `load` event (scripts in the page have run). Throws when the
   * navigation fails or takes longer than `timeoutMs` (default 30 000).
   */
  async goto(url: string, opts: { timeoutMs?: number } = {}): Promise<void> {
    const timeoutMs = opts.timeoutMs ?? 30_000;
    let off = () => {};
    const loaded = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new Error(`${url} did not finish loading in ${timeoutMs} ms`));
      }, timeoutMs);
      off = this.#conn.on("Page.loadEventFired", (_p, s) => {
        if (s !== this.#session) return;
        clearTimeout(timer);
        off();
        resolve();
      });
    });
    const nav = await this.send("Page.navigate", { url });
    if (nav.errorText) {
      off();
      loaded.catch(() => {});
      throw new Error(`could not open ${url}: ${nav.errorText}`);
    }
    await loaded;
  }

  /**
   * Evaluates JavaScript in the page and returns its (JSON-serialisable) value; promises are
   * awaited. Pass an expression, or a function and its JSON-serialisable arguments.
   */
  async evaluate<T = unknown>(
    code: string | ((...args: never[]) => unknown),
    ...args: unknown[]
  ): Promise<T> {
    const expression = typeof code === "string"
      ? code
      : `(${code.toString()})(${args.map((a) => JSON.stringify(a)).join(", ")})`;
    const res = await this.send("Runtime.evaluate", {
      expression,
      returnByValue: true,
      awaitPromise: true,
    });
    const ex = res.exceptionDetails as
      | { text: string; exception?: { description?: string } }
      | undefined;
    if (ex) throw new Error(`in the page: ${ex.exception?.description ?? ex.text}`);
    return (res.result as { value?: T }).value as T;
  }

  /** Polls `expression` until it is truthy; throws after `timeoutMs` (default 10 000). */
  async waitFor(expression: string, opts: { timeoutMs?: number } = {}): Promise<void> {
    const deadline = performance.now() + (opts.timeoutMs ?? 10_000);
    while (!(await this.evaluate<boolean>(`!!(${expression})`))) {
      if (performance.now() > deadline) throw new Error(`timed out waiting for ${expression}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /**
   * A PNG of the viewport, of the whole page when `fullPage` (the viewport is stretched to the
   * page's height for the shot, then restored), or of `clip` (CSS pixels of the page, with
   * `fullPage`).
   */
  async screenshot(
    opts: { fullPage?: boolean; clip?: { x: number; y: number; width: number; height: number } } =
      {},
  ): Promise<Uint8Array> {
    const v = this.#viewport;
    if (opts.fullPage) {
      const m = await this.send("Page.getLayoutMetrics");
      const size = (m.cssContentSize ?? m.contentSize) as { width: number; height: number };
      await this.send("Emulation.setDeviceMetricsOverride", {
        width: v.width,
        height: Math.min(16_384, Math.ceil(size.height)),
        deviceScaleFactor: v.deviceScaleFactor,
        mobile: false,
      });
    }
    try {
      const shot = await this.send("Page.captureScreenshot", {
        format: "png",
        ...(opts.clip ? { clip: { ...opts.clip, scale: 1 } } : {}),
      });
      return Uint8Array.from(atob(String(shot.data)), (c) => c.charCodeAt(0));
    } finally {
      if (opts.fullPage) await this.setViewport(v);
    }
  }

  /** Closes the page. */
  async close(): Promise<void> {
    await this.#conn.send("Target.closeTarget", { targetId: this.#targetId }).catch(() => {});
  }
}

/** A running headless Chromium. */
export class Browser {
  #process: Deno.ChildProcess;
  #conn: Connection;
  #profile: string;
  #stderr: string[];
  #closed = false;
  /** The browser's product string, e.g. `"Chrome/126.0.6478.126"`. */
  readonly version: string;

  /** @internal Use {@linkcode launchBrowser}. */
  constructor(
    process: Deno.ChildProcess,
    conn: Connection,
    profile: string,
    stderr: string[],
    version: string,
  ) {
    this.#process = process;
    this.#conn = conn;
    this.#profile = profile;
    this.#stderr = stderr;
    this.version = version;
  }

  /** The last lines the browser wrote on stderr (for diagnosing a failure). */
  get stderrTail(): string {
    return this.#stderr.slice(-30).join("\n");
  }

  /** Opens a new blank page with the given viewport (default 1280 x 800, ratio 1). */
  async newPage(viewport: Viewport = { width: 1280, height: 800 }): Promise<Page> {
    const { targetId } = await this.#conn.send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await this.#conn.send("Target.attachToTarget", {
      targetId,
      flatten: true,
    });
    const page = new Page(this.#conn, String(sessionId), String(targetId), {
      deviceScaleFactor: 1,
      ...viewport,
    });
    await page.init();
    return page;
  }

  /** Closes the browser, waits for it to exit and deletes its temporary profile. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#conn.send("Browser.close", {}, undefined, 5_000).catch(() => {});
    this.#conn.close();
    const exited = await Promise.race([
      this.#process.status.then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), 5_000)),
    ]);
    if (!exited) {
      try {
        this.#process.kill("SIGKILL");
      } catch {
        // already gone
      }
      await this.#process.status;
    }
    await Deno.remove(this.#profile, { recursive: true }).catch(() => {});
  }
}

/**
 * Starts headless Chromium with a fresh profile and connects to it. Throws with the browser's own
 * output when it does not start.
 */
export async function launchBrowser(opts: LaunchOptions = {}): Promise<Browser> {
  const executablePath = opts.executablePath ?? findChromium();
  if (!executablePath) {
    throw new Error(
      "no Chromium found: install Debian's `chromium` package or set CHROMIUM_PATH",
    );
  }
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const profile = await Deno.makeTempDir({ prefix: "lens-chromium-" });
  const child = new Deno.Command(executablePath, {
    args: [
      ...DEFAULT_CHROMIUM_FLAGS,
      `--user-data-dir=${profile}`,
      "--remote-debugging-port=0",
      "--remote-debugging-address=127.0.0.1",
      ...(opts.args ?? []),
      "about:blank",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();

  // Read stderr to the end (a full pipe would stall the browser), watching for the endpoint.
  const lines: string[] = [];
  let found: (url: string) => void = () => {};
  const endpoint = new Promise<string>((resolve) => found = resolve);
  (async () => {
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of child.stderr) {
      buf += decoder.decode(chunk, { stream: true });
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        lines.push(line);
        if (lines.length > 200) lines.shift();
        const m = line.match(/DevTools listening on (ws:\/\/\S+)/);
        if (m) found(m[1]);
      }
    }
  })().catch(() => {});

  let timer: ReturnType<typeof setTimeout> | undefined;
  const failed = Promise.race([
    child.status.then((s) => `exited with code ${s.code} before it was ready`),
    new Promise<string>((r) =>
      timer = setTimeout(() => r(`did not start in ${timeoutMs} ms`), timeoutMs)
    ),
  ]);
  const first = await Promise.race([
    endpoint.then((url) => ({ url })),
    failed.then((why) => ({ why })),
  ]);
  clearTimeout(timer);
  const fail = async (why: string): Promise<never> => {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await child.status;
    await Deno.remove(profile, { recursive: true }).catch(() => {});
    throw new Error(`${executablePath} ${why}:\n${lines.slice(-20).join("\n")}`);
  };
  if ("why" in first) return await fail(first.why);
  let conn: Connection;
  try {
    conn = await Connection.open(first.url, timeoutMs);
  } catch (e) {
    return await fail((e as Error).message);
  }
  const info = await conn.send("Browser.getVersion");
  return new Browser(child, conn, profile, lines, String(info.product ?? "unknown"));
}
