// browser_admin.mjs - the admin page in a real headless Chromium (Debian's), driven by playwright-core.
// usage: node browser_admin.mjs PORT TOKEN UPSTREAM_URL SCREENSHOT_DIR   (prints TAP)
import { chromium } from "playwright-core";
import { inflateSync } from "node:zlib";

const [port, token, upstream, shots] = process.argv.slice(2);
// usage rows run.py put into usage.db on two past days (see run_browser)
const seed = JSON.parse(process.env.SEED_USAGE || "null");
const base = `http://127.0.0.1:${port}`;
let n = 0;
let failed = 0;
function ok(cond, name) {
  n++;
  if (!cond) failed++;
  console.log(`${cond ? "" : "not "}ok ${n} - ${name}`);
}

async function admin(method, path, body) {
  const r = await fetch(`${base}${path}`, {
    method, headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, body: await r.json() };
}
const apiGet = (path) => admin("GET", `/admin/config${path}`);

async function chatWith(key, model, stream) {
  const r = await fetch(`${base}/v1/chat/completions`, {
    method: "POST",
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify({ model, stream: !!stream, messages: [{ role: "user", content: "hi" }] }),
  });
  await r.text();
  return { status: r.status, rid: r.headers.get("x-llmproxy-request-id") };
}

async function until(fn, ms) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v || Date.now() > end) return v;
    await new Promise((res) => setTimeout(res, 150));
  }
}

// A PNG (8-bit RGB or RGBA, not interlaced, as Chromium writes them) decoded to pixels.
function decodePng(buf) {
  let pos = 8, width = 0, height = 0, type = 0;
  const idat = [];
  while (pos < buf.length) {
    const len = buf.readUInt32BE(pos), kind = buf.toString("latin1", pos + 4, pos + 8);
    const data = buf.subarray(pos + 8, pos + 8 + len);
    if (kind === "IHDR") {
      width = data.readUInt32BE(0); height = data.readUInt32BE(4); type = data[9];
      if (data[8] !== 8 || (type !== 2 && type !== 6) || data[12] !== 0) throw new Error("unexpected PNG format");
    } else if (kind === "IDAT") idat.push(data);
    pos += 12 + len;
  }
  const bpp = type === 6 ? 4 : 3, stride = width * bpp, raw = inflateSync(Buffer.concat(idat));
  const px = Buffer.alloc(height * stride);
  for (let y = 0; y < height; y++) {
    const f = raw[y * (stride + 1)], row = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let i = 0; i < stride; i++) {
      const a = i >= bpp ? px[y * stride + i - bpp] : 0, b = y ? px[(y - 1) * stride + i] : 0;
      const c = i >= bpp && y ? px[(y - 1) * stride + i - bpp] : 0;
      let v = row[i];
      if (f === 1) v += a;
      else if (f === 2) v += b;
      else if (f === 3) v += (a + b) >> 1;
      else if (f === 4) { const pa = Math.abs(b - c), pb = Math.abs(a - c), pc = Math.abs(a + b - 2 * c);
        v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c; }
      px[y * stride + i] = v & 255;
    }
  }
  return { width, height, at: (x, y) => [px[y * stride + x * bpp], px[y * stride + x * bpp + 1], px[y * stride + x * bpp + 2]] };
}

// Bars in a chart screenshot: runs of columns holding a palette colour, with each run's
// height in pixels of each colour (measured in the run's middle column).
function barsIn(img, colours) {
  const near = (p, c) => Math.abs(p[0] - c[0]) <= 3 && Math.abs(p[1] - c[1]) <= 3 && Math.abs(p[2] - c[2]) <= 3;
  const colourAt = (x, y) => colours.findIndex((c) => near(img.at(x, y), c));
  const cols = [];
  for (let x = 0; x < img.width; x++) {
    let any = false;
    for (let y = 0; y < img.height && !any; y++) any = colourAt(x, y) >= 0;
    cols.push(any);
  }
  const bars = [];
  for (let x = 0; x < img.width; x++) {
    if (!cols[x] || (x > 0 && cols[x - 1])) continue;
    let e = x;
    while (e + 1 < img.width && cols[e + 1]) e++;
    const mid = (x + e) >> 1, heights = colours.map(() => 0);
    for (let y = 0; y < img.height; y++) { const i = colourAt(mid, y); if (i >= 0) heights[i]++; }
    bars.push({ x, width: e - x + 1, heights, total: heights.reduce((a, b) => a + b, 0) });
  }
  return bars;
}
const hex = (h) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16));

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const dialogs = [];
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
  const page = await context.newPage();
  page.on("dialog", async (d) => {
    dialogs.push(d.message());
    if (d.message().includes("unsaved")) await d.dismiss(); else await d.accept();
  });
  const external = [];
  page.on("request", (req) => { if (!req.url().startsWith(base)) external.push(req.url()); });

  await page.goto(`${base}/admin`);
  ok(await page.isVisible("#login"), "asks for the token first");
  await page.fill("#token", "wrong-token");
  await page.click("#login-form button[type=submit]");
  await page.waitForSelector("#login-msg:not([hidden])");
  ok((await page.textContent("#login-msg")).includes("refused"), "a wrong token is refused with a message");

  await page.fill("#token", token);
  await page.click("#login-form button[type=submit]");
  await page.waitForSelector("#app:not([hidden])");
  ok(await page.isVisible("#models"), "signed in: the model list shows");

  // add a model with two backends
  await page.fill("#new-model", "browser/test-model");
  await page.click("#add-form button[type=submit]");
  await page.waitForSelector("#editor:not([hidden])");
  ok((await page.textContent("#model-title")) === "browser/test-model", "new model opens in the editor");
  await page.selectOption("#strategy", "RoundRobin");
  await admin("POST", "/admin/config/browser/fb-target", { Strategy: "Failover", Backends: [
    { Name: "t", BaseUrl: upstream, ApiKeys: [] }] });
  await page.fill("#fallbacks", "browser/fb-target");
  for (const [i, name, weight, key] of [[0, "first", "1", "sk-browser-key-0001"], [1, "second", "3", "sk-browser-key-0002"]]) {
    await page.click("#add-backend");
    const card = `[data-backend="${i}"]`;
    await page.fill(`${card} input[name=Name]`, name);
    await page.fill(`${card} input[name=BaseUrl]`, `${upstream}`);
    await page.fill(`${card} input[name=Weight]`, weight);
    await page.click(`${card} .add-key`);
    await page.fill(`${card} input[name=ApiKey]`, key);
  }
  await page.fill('[data-backend="0"] input[name=InputCostPerMTok]', "2.5");
  await page.selectOption('[data-backend="1"] select[name=Api]', "anthropic");
  await page.fill('[data-backend="0"] input[name=OutputCostPerMTok]', "10");
  ok(await page.isVisible("#dirty"), "unsaved changes are flagged");
  await page.click("#save");
  await page.waitForSelector("#msg.ok:not([hidden])");
  ok((await page.textContent("#msg")).includes("Saved"), "save reports success");
  let r = await apiGet("/browser/test-model");
  ok(r.status === 200 && r.body.Strategy === "RoundRobin" && r.body.Backends.length === 2 &&
     r.body.Backends[1].Weight === 3, "the API has the model with two backends");
  ok(JSON.stringify(r.body.Fallbacks) === JSON.stringify(["browser/fb-target"]), "fallback models are saved");
  ok(r.body.Backends[1].Api === "anthropic" && !("Api" in r.body.Backends[0]),
     "the API selector saves \"Api\": \"anthropic\" (and leaves the default out)");
  ok(r.body.Backends[0].InputCostPerMTok === 2.5 && r.body.Backends[0].OutputCostPerMTok === 10 &&
     !("InputCostPerMTok" in r.body.Backends[1]), "backend prices are saved (and left out where empty)");
  ok(JSON.stringify(r.body).includes("****0002") && !JSON.stringify(r.body).includes("sk-browser-key"),
     "keys come back masked");

  // reload: still signed in (sessionStorage), model listed, keys shown masked
  await page.reload();
  await page.waitForSelector("#app:not([hidden])");
  const item = page.locator('#models button[data-model="browser/test-model"]');
  ok(await item.count() === 1, "after a reload the model is listed");
  await item.click();
  await page.waitForSelector("#editor:not([hidden])");
  ok(await page.locator("#backends .backend").count() === 2, "both backends are shown");
  ok(await page.inputValue('[data-backend="0"] input[name=ApiKey]') === "****0001", "stored key shown masked");
  ok(await page.inputValue('[data-backend="1"] select[name=Api]') === "anthropic", "the API shows as saved");

  // edit: Weighted, disable the second backend, save
  await page.selectOption("#strategy", "Weighted");
  await page.uncheck('[data-backend="1"] input[name=Enabled]');
  await page.click("#save");
  await page.waitForSelector("#msg.ok:not([hidden])");
  r = await apiGet("/browser/test-model");
  ok(r.body.Strategy === "Weighted" && r.body.Backends[1].Enabled === false, "an edit is saved");

  // the stored keys were kept although the page only had their masks
  const proxied = await fetch(`${base}/v1/models`).then((x) => x.json());
  ok(proxied.data.some((m) => m.id === "browser/test-model"), "the proxy lists the saved model at once");

  // errors from the API are shown, nothing is saved
  await page.fill('[data-backend="0"] input[name=BaseUrl]', "ftp://example.invalid");
  await page.click("#save");
  await page.waitForSelector("#msg.error:not([hidden])");
  ok((await page.textContent("#msg")).includes("BaseUrl"), "the API's validation message is shown");
  r = await apiGet("/browser/test-model");
  ok(r.body.Backends[0].BaseUrl === upstream, "an invalid edit changes nothing");

  // leaving with unsaved changes asks first (dismissed: we stay)
  await page.fill("#new-model", "another-model");
  await page.click("#add-form button[type=submit]");
  ok(dialogs.some((d) => d.includes("unsaved")), "switching away with unsaved changes asks first");
  ok((await page.textContent("#model-title")) === "browser/test-model", "dismissing keeps the edit");
  await page.click("#revert");

  await page.screenshot({ path: `${shots}/admin-page.png`, fullPage: true });

  // delete, confirmed
  await page.click("#delete");
  await page.waitForSelector("#msg.ok:not([hidden])");
  ok(dialogs.some((d) => d.startsWith("Delete model")), "delete asks for confirmation");
  r = await apiGet("/browser/test-model");
  ok(r.status === 404, "the model is deleted");
  ok(await page.locator('#models button[data-model="browser/test-model"]').count() === 0, "and gone from the list");
  await admin("DELETE", "/admin/config/browser/fb-target");

  // ---- Keys tab ----
  const kmodel = "browser/keys-model";
  r = await admin("POST", `/admin/config/${kmodel}`, { Strategy: "Failover", Backends: [
    { Name: "priced", BaseUrl: upstream, ApiKeys: ["sk-upstream-browser-1"], InputCostPerMTok: 1000, OutputCostPerMTok: 2000 }] });
  ok(r.status === 200 || r.status === 201, "a model for the key tests is made: " + r.status);
  const before = await admin("GET", "/admin/keys");
  await page.click('nav.tabs button[data-tab="keys"]');
  await page.waitForSelector("#tab-keys:not([hidden])");
  ok((await page.evaluate(() => location.hash)) === "#keys", "the tab is in the address (#keys)");
  if (before.body.Keys.length === 0) {
    await page.waitForSelector("#keyless-note:not([hidden])");
    ok(true, "with no key the page says /v1 serves only this machine");
  }
  await page.fill("#key-name", "browser-team");
  await page.fill("#key-rpm", "100");
  await page.fill("#key-budget-usd", "5");
  await page.click("#key-save");
  await page.waitForSelector("#new-key:not([hidden])");
  const secret = await page.inputValue("#new-key-value");
  ok(/^sk-llmp-[0-9A-Za-z]{32,}$/.test(secret), "a new key is shown once: " + secret.slice(0, 12) + "...");
  await page.click("#copy-key");
  await until(async () => (await page.textContent("#copy-key")) !== "Copy", 3000);
  const clip = await page.evaluate(() => navigator.clipboard.readText()).catch((e) => "error: " + e.message);
  ok(clip === secret && (await page.textContent("#copy-key")) === "Copied", "the Copy button puts the key on the clipboard");
  const row = 'tr[data-key-name="browser-team"]';
  await page.waitForSelector(`#keys-table ${row}`);
  ok((await page.textContent(`${row} td.mono`)) === secret.slice(0, 12) + "…", "the list shows the key's prefix");
  r = await admin("GET", "/admin/keys");
  const made = r.body.Keys.find((k) => k.Name === "browser-team");
  ok(made && made.Rpm === 100 && made.BudgetUsd === 5 && made.BudgetPeriod === "month" && made.Enabled === true &&
     !JSON.stringify(r.body).includes(secret), "the API has the key with its limits, and never the key itself");
  await page.click("#new-key-done");
  ok(await page.isHidden("#new-key") && !(await page.content()).includes(secret), "Done removes the key from the page");
  await page.reload();
  await page.waitForSelector(`#tab-keys:not([hidden]) ${row}`);
  ok(!(await page.content()).includes(secret.slice(12)), "after a reload the key is nowhere in the page");

  // the key works, and its usage this period shows in its row
  const results = [];
  for (const stream of [false, true, false]) results.push(await chatWith(secret, kmodel, stream));
  ok(results.every((x) => x.status === 200), "requests with the new key are served: " + results.map((x) => x.status));
  ok((await chatWith("sk-llmp-not-a-key-000000000000000000000000", kmodel)).status === 401, "a wrong key is refused");
  const seen = await until(async () => {
    await page.click("#keys-refresh");
    await page.waitForTimeout(200);
    return (await page.textContent(`${row} td.usage`)).startsWith("3 req · 90 tokens · $0.1500");
  }, 6000);
  ok(seen, "the row shows the key's usage this period: " + (await page.textContent(`${row} td.usage`)));
  ok((await page.textContent(`${row} td.usage`)).includes("(3% of budget)"), "with its cost and share of the budget");

  // edit limits and budget
  await page.click(`${row} button.edit`);
  ok((await page.inputValue("#key-rpm")) === "100" && (await page.textContent("#key-form-title")).includes("browser-team"),
     "Edit fills the form with the key");
  await page.fill("#key-rpm", "");
  await page.fill("#key-tpm", "5000");
  await page.selectOption("#key-period", "day");
  await page.fill("#key-models", `${kmodel}, other-model`);
  await page.click("#key-save");
  await page.waitForSelector("#keys-msg.ok:not([hidden])");
  r = await admin("GET", `/admin/keys/${made.Id}`);
  ok(r.body.Rpm === 0 && r.body.Tpm === 5000 && r.body.BudgetPeriod === "day" && r.body.BudgetUsd === 5 &&
     JSON.stringify(r.body.Models) === JSON.stringify([kmodel, "other-model"]), "an edit is saved: " + JSON.stringify(r.body).slice(0, 200));
  ok((await page.textContent(`${row}`)).includes("5,000 tokens/min"), "the row shows the new limits");
  await page.screenshot({ path: `${shots}/admin-keys.png`, fullPage: true });
  await page.click(`${row} button.edit`);
  await page.fill("#key-expires", "not a time");
  await page.click("#key-save");
  await page.waitForSelector("#keys-msg.error:not([hidden])");
  ok((await page.textContent("#keys-msg")).includes("ExpiresAt"), "the API's validation message is shown");
  await page.click("#key-cancel");

  // disable, enable
  await page.click(`${row} button.toggle`);
  await page.waitForSelector(`${row} .pill.off`);
  ok((await admin("GET", `/admin/keys/${made.Id}`)).body.Enabled === false, "Disable disables the key");
  ok((await chatWith(secret, kmodel)).status === 401, "a disabled key is refused");
  await page.click(`${row} button.toggle`);
  await page.waitForSelector(`${row} .pill.on`);
  ok((await chatWith(secret, kmodel)).status === 200, "Enable lets it in again");

  // ---- Requests tab: refreshes by itself ----
  await page.click('nav.tabs button[data-tab="requests"]');
  await page.waitForSelector("#requests-table tbody tr[data-request-id]");
  const last = await chatWith(secret, kmodel, true);
  ok(!!last.rid, "answers carry X-LLMProxy-Request-Id");
  const appeared = await until(async () => (await page.locator(`#requests-table tr[data-request-id="${last.rid}"]`).count()) === 1, 7000);
  ok(appeared, "a new request appears in the Requests tab without a click");
  const cells = await page.locator(`#requests-table tr[data-request-id="${last.rid}"] td`).allTextContents();
  ok(cells[2] === "browser-team" && cells[3] === kmodel && cells[4] === "priced" && cells[5] === "200" && cells[6] === "yes" &&
     cells[7] === "10" && cells[8] === "20", "its row has key, model, backend, status, stream and tokens: " + cells.join(" | "));

  // ---- Usage tab: table and chart ----
  await page.click('nav.tabs button[data-tab="usage"]');
  await page.waitForSelector("#tab-usage:not([hidden])");
  if (seed) {
    await page.fill("#usage-from", seed.from);
    await page.fill("#usage-to", seed.to);
    await page.selectOption("#usage-by", "key");
    await page.selectOption("#usage-metric", "tokens");
    await page.click("#usage-refresh");
    await page.waitForSelector('#usage-table tr[data-series="seed-alpha"]');
    const alpha = await page.locator('#usage-table tr[data-series="seed-alpha"] td').allTextContents();
    ok(alpha[1] === "2" && alpha[3] === "2,600" && alpha[4] === "1,400" && alpha[5] === "$2.00",
       "the Usage table sums a key over the days: " + alpha.join(" | "));
    ok((await page.locator('#usage-table tr[data-series="Total"] td').allTextContents())[1] === "3", "with a total row");
    const img = decodePng(await page.locator("#usage-chart").screenshot({ path: `${shots}/usage-chart.png` }));
    const palette = await page.evaluate(() => PALETTE.slice(0, 2));
    const bars = barsIn(img, palette.map(hex));
    ok(bars.length === 2, "the chart has one bar per day with usage: " + JSON.stringify(bars));
    if (bars.length === 2) {
      const [d1, d2] = bars;
      ok(d1.heights[0] > 20 && d1.heights[1] === 0, "the first day's bar is one key's colour");
      ok(Math.abs(d2.total / d1.total - 4) < 0.15, "bar heights follow the tokens (4000 vs 1000): " + d2.total + "/" + d1.total);
      ok(d2.heights[1] > 0 && Math.abs(d2.heights[0] / d2.heights[1] - 3) < 0.2, "the second is stacked by key (3000 + 1000)");
      ok(d2.x > d1.x + 2 * d1.width, "and the days are in order, apart");
    }
    await page.selectOption("#usage-metric", "cost");
    const costBars = barsIn(decodePng(await page.locator("#usage-chart").screenshot()), palette.map(hex));
    ok(costBars.length === 2 && Math.abs(costBars[1].total / costBars[0].total - 3.5) < 0.15,
       "the cost chart follows the cost ($1.75 vs $0.50)");
    await page.selectOption("#usage-by", "model");
    await page.waitForSelector('#usage-table tr[data-series="seed/model"]');
    ok((await page.locator("#usage-legend").textContent()).includes("seed/model"), "by model: the legend names the models");
  }
  const today = new Date().toISOString().slice(0, 10);
  await page.fill("#usage-from", today);
  await page.fill("#usage-to", today);
  await page.selectOption("#usage-by", "key");
  await page.click("#usage-refresh");
  await page.waitForSelector('#usage-table tr[data-series="browser-team"]');
  const mine = await page.locator('#usage-table tr[data-series="browser-team"] td').allTextContents();
  ok(mine[1] === "5" && mine[3] === "50" && mine[4] === "100", "today the key's five answered requests are in the Usage table: " + mine.join(" | "));
  await page.screenshot({ path: `${shots}/admin-usage.png`, fullPage: true });

  // ---- delete the key ----
  await page.click('nav.tabs button[data-tab="keys"]');
  await page.waitForSelector(`${row}`);
  await page.click(`${row} button.delete`);
  await page.waitForSelector(`${row}`, { state: "detached" });
  ok(dialogs.some((d) => d.startsWith("Delete key 'browser-team'")), "deleting a key asks first");
  ok((await admin("GET", `/admin/keys/${made.Id}`)).status === 404, "the key is deleted");
  if (before.body.Keys.length === 0) {
    await page.waitForSelector("#keyless-note:not([hidden])");
    ok((await chatWith(secret, kmodel)).status === 200, "with the last key gone the proxy is keyless again (this machine only)");
  } else {
    ok((await chatWith(secret, kmodel)).status === 401, "a deleted key is refused");
  }
  await admin("DELETE", `/admin/config/${kmodel}`);

  // ---- Status tab: circuits, cooldowns, the last minutes, refreshing ----
  const smodel = "browser/status-model";
  const down = upstream.replace("name=browser", "name=browser-down+status=503");
  const limited = upstream.replace("name=browser", "name=browser-rl+status=429+ra=90+onlykey=sk-st-0");
  r = await admin("POST", `/admin/config/${smodel}`, { Strategy: "Failover", Backends: [
    { Name: "down", BaseUrl: down, ApiKeys: ["sk-st-down"] },
    { Name: "limited", BaseUrl: limited, ApiKeys: ["sk-st-0", "sk-st-1"] }] });
  ok(r.status === 200 || r.status === 201, "a model for the status tests is made");
  for (let i = 0; i < 8; i++) await chatWith("unused", smodel);
  await page.click('nav.tabs button[data-tab="status"]');
  const srow = (b) => `#status-models table[data-model="${smodel}"] tr[data-backend="${b}"]`;
  await page.waitForSelector(srow("down"));
  ok((await page.textContent(`${srow("down")} .circuit`)).startsWith("open"), "a failing backend's circuit shows open");
  ok((await page.textContent(`${srow("down")} td.last-error`)).startsWith("server_error (HTTP 503)"), "with its last error");
  const keysText = await page.textContent(`${srow("limited")} td.keys`);
  ok(/#0 cooling \d+ s \(rate limited\)/.test(keysText) && keysText.includes("#1 ok"),
     "a rate-limited key shows cooling with its reason: " + keysText);
  ok(Number(await page.textContent(`${srow("limited")} td.rpm`)) > 0, "requests per minute are shown");
  const before2 = await page.textContent("#status-updated");
  const refreshed = await until(async () => (await page.textContent("#status-updated")) !== before2, 5000);
  ok(refreshed, "the Status tab refreshes by itself");
  const simg = decodePng(await page.locator("#status-chart").screenshot({ path: `${shots}/status-chart.png` }));
  // the legend says which colour is which backend (other models may have lines too)
  const legend = await page.locator("#status-legend > span").allTextContents();
  const palette = (await page.evaluate(() => PALETTE)).map(hex);
  const ours = ["limited", "down"].map((b) => legend.indexOf(`${smodel} / ${b}`));
  const colourCols = (c) => {
    let cols = 0;
    for (let x = 0; x < simg.width; x++) {
      let hit = false;
      for (let y = 0; y < simg.height && !hit; y++) {
        const p = simg.at(x, y);
        hit = Math.abs(p[0] - c[0]) <= 3 && Math.abs(p[1] - c[1]) <= 3 && Math.abs(p[2] - c[2]) <= 3;
      }
      cols += hit ? 1 : 0;
    }
    return cols;
  };
  const counts = ours.map((i) => (i >= 0 ? colourCols(palette[i]) : 0));
  const all = palette.slice(0, legend.length).map(colourCols);
  // lines along the whole hour (where they meet, the one drawn last covers the rest)
  ok(ours.every((i) => i >= 0) && counts[0] > 0 && Math.max(...all) > simg.width / 2,
     "the chart draws a line per backend across the hour: " + legend.join(", ") + " / " + counts.join(", ") +
     " / " + all.join(", ") + " of " + simg.width + " columns");
  await page.screenshot({ path: `${shots}/admin-status.png`, fullPage: true });
  await admin("DELETE", `/admin/config/${smodel}`);

  ok(external.length === 0, "the page loads nothing from elsewhere: " + external.join(" "));
} catch (e) {
  ok(false, "browser test ran to the end: " + e.message.split("\n")[0]);
} finally {
  await browser.close();
}
console.log(`1..${n}`);
process.exit(failed ? 1 : 0);
