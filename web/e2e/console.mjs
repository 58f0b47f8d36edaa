// End-to-end check of the console in real Chromium (Debian's package),
// driven by playwright-core. Run by crates/haven-cli/tests/console_browser.rs,
// which prepares the server and devices and checks the results this script
// prints (one JSON object on stdout).
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const url = process.env.HAVEN_URL;
const email = process.env.HAVEN_EMAIL;
const password = process.env.HAVEN_PASSWORD;
const link = process.env.HAVEN_LINK;
const device = process.env.HAVEN_DEVICE;
const shots = process.env.HAVEN_SCREENSHOTS;
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
// A page whose policy violations are collected in `blocked`.
async function watched(context) {
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) => {
      console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  const page = await context.newPage();
  page.on("console", (m) => {
    if (m.text().includes("CSP violation") || m.text().includes("Content Security Policy")) {
      blocked.push(m.text());
    }
  });
  return page;
}
const out = {};
const external = [];
// What the browser refused under the server's Content-Security-Policy.
const blocked = [];
try {
  const context = await browser.newContext({ viewport: { width: 1100, height: 800 } });
  const page = await watched(context);
  page.on("request", (r) => {
    if (!r.url().startsWith(url)) external.push(r.url());
  });
  const shot = (name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });

  await page.goto(url + "/");
  await shot("signin");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Storage", level: 1 }).waitFor();
  const usage = page.locator("#usage");
  out.used = Number(await usage.getAttribute("data-used"));
  out.quota = await usage.getAttribute("data-quota");
  out.free = await usage.getAttribute("data-free");
  await shot("storage");

  await page.getByRole("link", { name: "Devices", exact: true }).click();
  await page.getByRole("heading", { name: "Devices", level: 1 }).waitFor();
  await shot("devices");
  await page.getByRole("link", { name: device, exact: true }).click();
  const photos = page.getByRole("checkbox", { name: "Photos", exact: true });
  out.photos_before = await photos.isChecked();
  out.next_before = Number(await page.locator("#next-backup").getAttribute("data-bytes"));
  await photos.click();
  await page.waitForFunction(() => {
    const c = document.querySelector("#cat-Photos");
    return c && !c.checked;
  });
  out.photos_after = await page.getByRole("checkbox", { name: "Photos", exact: true }).isChecked();
  out.next_after = Number(await page.locator("#next-backup").getAttribute("data-bytes"));
  await shot("device");

  const deletes = page.getByRole("link", { name: /^Delete the backup of/ });
  await deletes.last().click();
  await page.getByRole("heading", { name: "Delete this backup?" }).waitFor();
  out.freed = Number(await page.locator("#freed").getAttribute("data-bytes"));
  await shot("confirm-delete");
  await page.getByRole("button", { name: "Delete backup" }).click();
  await page.getByRole("status").filter({ hasText: "Deleted backup" }).waitFor();
  await shot("after-delete");

  await page.getByRole("link", { name: "History" }).click();
  await page.getByRole("heading", { name: "History", level: 1 }).waitFor();
  await shot("history");
  await page.getByRole("link", { name: "Admin" }).click();
  await page.getByRole("heading", { name: "Administration", level: 1 }).waitFor();
  await shot("admin");

  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(url + "/");
  await shot("storage-phone");

  // The one-time link: signs in once, never twice.
  const fresh = await browser.newContext();
  const p1 = await watched(fresh);
  await p1.goto(link);
  out.link_first = await p1.getByRole("heading", { name: "Storage", level: 1 }).isVisible();
  const again = await browser.newContext();
  const p2 = await watched(again);
  const second = await p2.goto(link);
  out.link_second_status = second.status();
  out.link_second_text = await p2.locator("main").innerText();
  await p2.screenshot({ path: `${shots}/link-used.png`, fullPage: true });
} finally {
  out.external_requests = external;
  out.csp_violations = blocked;
  await browser.close();
}
console.log(JSON.stringify(out));
