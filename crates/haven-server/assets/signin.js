// Sign-in: derive the auth key in the page (the password never leaves
// it), then exchange it for a session cookie.
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("signin");
  if (!form) return;
  const status = document.getElementById("signin-status");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const email = document.getElementById("email").value.trim();
    const password = document.getElementById("password").value;
    const button = form.querySelector("button");
    button.disabled = true;
    status.textContent = "Checking your password…";
    try {
      const pre = await fetch("/v1/auth/prelogin", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ email }),
      });
      if (!pre.ok) throw await pre.json().catch(() => ({ error: { message: "The server answered " + pre.status + ".", fix: ["Try again."] } }));
      const { kdf } = await pre.json();
      const auth_key = await globalThis.havenAuthKey(password, kdf);
      const res = await fetch("/signin", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ email, auth_key }),
      });
      if (!res.ok) throw await res.json().catch(() => ({ error: { message: "The server answered " + res.status + ".", fix: ["Try again."] } }));
      // Back to where the password was asked again: only a path of this
      // console, never another site.
      // Resolved against this page: anything that leaves its origin
      // (`//host`, `/\thost`, `https:…`) goes to the start page instead.
      const next = new URLSearchParams(window.location.search).get("next");
      let target = "/";
      try {
        const url = new URL(next || "/", window.location.origin);
        if (url.origin === window.location.origin) target = url.pathname + url.search;
      } catch (_) {}
      window.location.href = target;
    } catch (e) {
      const err = (e && e.error) || { message: String(e), fix: [] };
      status.textContent = err.message + " " + (err.fix || []).join(" ");
      button.disabled = false;
    }
  });
});
