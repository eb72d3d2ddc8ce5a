// browser_admin.mjs - the admin page in a real headless Chromium (Debian's), driven by playwright-core.
// usage: node browser_admin.mjs PORT TOKEN UPSTREAM_URL SCREENSHOT_DIR   (prints TAP)
import { chromium } from "playwright-core";

const [port, token, upstream, shots] = process.argv.slice(2);
const base = `http://127.0.0.1:${port}`;
let n = 0;
let failed = 0;
function ok(cond, name) {
  n++;
  if (!cond) failed++;
  console.log(`${cond ? "" : "not "}ok ${n} - ${name}`);
}

async function apiGet(path) {
  const r = await fetch(`${base}/admin/config${path}`, { headers: { Authorization: `Bearer ${token}` } });
  return { status: r.status, body: await r.json() };
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const dialogs = [];
try {
  const page = await browser.newPage();
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
  for (const [i, name, weight, key] of [[0, "first", "1", "sk-browser-key-0001"], [1, "second", "3", "sk-browser-key-0002"]]) {
    await page.click("#add-backend");
    const card = `[data-backend="${i}"]`;
    await page.fill(`${card} input[name=Name]`, name);
    await page.fill(`${card} input[name=BaseUrl]`, `${upstream}`);
    await page.fill(`${card} input[name=Weight]`, weight);
    await page.click(`${card} .add-key`);
    await page.fill(`${card} input[name=ApiKey]`, key);
  }
  ok(await page.isVisible("#dirty"), "unsaved changes are flagged");
  await page.click("#save");
  await page.waitForSelector("#msg.ok:not([hidden])");
  ok((await page.textContent("#msg")).includes("Saved"), "save reports success");
  let r = await apiGet("/browser/test-model");
  ok(r.status === 200 && r.body.Strategy === "RoundRobin" && r.body.Backends.length === 2 &&
     r.body.Backends[1].Weight === 3, "the API has the model with two backends");
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
  ok(external.length === 0, "the page loads nothing from elsewhere: " + external.join(" "));
} catch (e) {
  ok(false, "browser test ran to the end: " + e.message.split("\n")[0]);
} finally {
  await browser.close();
}
console.log(`1..${n}`);
process.exit(failed ? 1 : 0);
