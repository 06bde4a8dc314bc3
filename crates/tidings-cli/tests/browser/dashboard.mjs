// Drives the admin dashboard in headless Chromium (Debian's, through
// playwright-core): load the page, enter the token, see a handler's row,
// replay a dead letter after the confirmation, and keep a screenshot.
//
// node dashboard.mjs BASE_URL ADMIN_TOKEN SCREENSHOT_PATH [CHROMIUM]
import { chromium } from "playwright-core";

const [base, token, shot, executable = "/usr/bin/chromium"] = process.argv.slice(2);
const fail = (msg) => { console.error(`FAIL: ${msg}`); process.exit(1); };

const browser = await chromium.launch({
  executablePath: executable,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
  const outside = [];
  page.on("request", (r) => { if (!r.url().startsWith(base)) outside.push(r.url()); });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));

  await page.goto(`${base}/admin`);
  // A wrong token is refused, the right one opens the dashboard.
  await page.fill("#token", "not-the-admin-token-000");
  await page.click("#login-form button");
  await page.waitForSelector("#login-error:has-text('refused')");
  await page.fill("#token", token);
  await page.click("#login-form button");
  const row = page.locator('#handlers tr[data-handler="Refuses"]');
  await row.waitFor();
  const cells = await row.locator("td").allTextContents();
  if (cells[1] !== "test_refused" || cells[5] !== "3") fail(`handler row: ${cells}`);

  // Three dead letters; replay the first after the confirmation, which names the count.
  const letters = page.locator("#dead-letters tbody tr");
  await page.waitForFunction(() => document.querySelectorAll("#dead-letters tbody tr").length === 3);
  const firstId = await letters.first().getAttribute("data-id");
  await letters.first().locator("input").check();
  let asked = "";
  page.once("dialog", (d) => { asked = d.message(); d.accept(); });
  await page.click("#replay-selected");
  await page.waitForSelector("#action-result:has-text('1 replayed')");
  if (!asked.includes("Replay 1 dead letter")) fail(`confirmation: ${asked}`);
  // The handler refuses it again: a new dead letter replaces the old one.
  await page.waitForFunction((id) =>
    !document.querySelector(`#dead-letters tbody tr[data-id="${id}"]`), firstId);
  const body = await page.textContent("body");
  if (body.includes("hunter2")) fail("a payload reached the page");
  await page.waitForTimeout(2500); // two samples for the chart
  await page.screenshot({ path: shot, fullPage: true });
  if (outside.length) fail(`requests outside the service: ${outside}`);
  if (errors.length) fail(`page errors: ${errors}`);
  console.log("OK");
} finally {
  await browser.close();
}
