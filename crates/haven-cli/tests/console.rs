//! The web console's pages and actions over HTTP: status, content and
//! permissions (one account never sees another's devices; a non-admin
//! never sees the admin page).
#![allow(clippy::unwrap_used, clippy::result_large_err)]

use std::fs;
use std::path::Path;

use haven_format::keys::{KdfParams, derive_login_keys};
use haven_testkit::tree::{noise, text};
use haven_testkit::{Device, TestServer};
use reqwest::blocking::{Client, Response};
use reqwest::redirect::Policy;

const BIN: &str = env!("CARGO_BIN_EXE_haven");
const PW: &str = "correct horse battery";

fn client() -> Client {
    Client::builder().redirect(Policy::none()).build().unwrap()
}

/// Signs in like the page does; returns the session cookie.
fn sign_in(url: &str, email: &str, password: &str) -> Result<String, Response> {
    let http = client();
    let pre: serde_json::Value = http
        .post(format!("{url}/v1/auth/prelogin"))
        .json(&serde_json::json!({ "email": email }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let kdf: KdfParams = serde_json::from_value(pre["kdf"].clone()).unwrap();
    let keys = derive_login_keys(password.as_bytes(), &kdf).unwrap();
    let r = http
        .post(format!("{url}/signin"))
        .json(&serde_json::json!({ "email": email, "auth_key": keys.auth.to_hex() }))
        .send()
        .unwrap();
    if r.status() != 204 {
        return Err(r);
    }
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    Ok(set.split(';').next().unwrap().to_string())
}

fn get(url: &str, cookie: &str) -> (u16, String) {
    let r = client().get(url).header("cookie", cookie).send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

fn csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    html[at..at + 32].to_string()
}

fn between<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let a = html.find(start).unwrap() + start.len();
    let b = html[a..].find(end).unwrap() + a;
    &html[a..b]
}

#[test]
fn every_page_and_action_with_permissions() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let url = server.url();
    let admin = Device::new(Path::new(BIN), &tmp.path().join("a"), &url, PW);
    admin.signup("admin@example.org", "laptop");
    let other = Device::new(Path::new(BIN), &tmp.path().join("b"), &url, PW);
    other.signup("other@example.org", "phone");

    let home = tmp.path().join("home");
    fs::create_dir_all(home.join("Documents")).unwrap();
    fs::create_dir_all(home.join("Pictures")).unwrap();
    fs::write(home.join("Documents/a.txt"), text(30_000, 1)).unwrap();
    fs::write(home.join("Pictures/p.jpg"), noise(300_000, 2)).unwrap();
    let hb = [("HOME", home.to_str().unwrap())];
    assert!(admin.run_env(&["backup", "--json"], &hb).status.success());
    fs::write(home.join("Documents/b.txt"), text(20_000, 3)).unwrap();
    assert!(admin.run_env(&["backup", "--json"], &hb).status.success());

    // Not signed in: every page sends to the sign-in page.
    for p in ["/", "/devices", "/devices/laptop", "/history", "/admin"] {
        let r = client().get(format!("{url}{p}")).send().unwrap();
        assert_eq!(r.status(), 303, "{p}");
        assert_eq!(r.headers()["location"], "/signin");
    }
    let (status, page) = get(&format!("{url}/signin"), "");
    assert_eq!(status, 200);
    let r = client().get(format!("{url}/signin")).send().unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    for want in [
        "default-src 'none'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(want), "{want} in {csp}");
    }
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    for want in [
        "<label for=\"email\">Email</label>",
        "<label for=\"password\">Password</label>",
        ">Sign in</button>",
        "/static/kdf.js",
    ] {
        assert!(page.contains(want), "{want}");
    }
    assert!(
        !page.contains("name=\"password\"") && !page.contains("action="),
        "without JavaScript the password is never submitted"
    );
    for asset in ["htmx.min.js", "kdf.js", "signin.js", "style.css"] {
        assert_eq!(get(&format!("{url}/static/{asset}"), "").0, 200);
    }
    let bad = sign_in(&url, "admin@example.org", "wrong password!").unwrap_err();
    assert_eq!(bad.status(), 401);
    let e: serde_json::Value = bad.json().unwrap();
    assert_eq!(e["error"]["code"], "wrong_password");

    let cookie = sign_in(&url, "admin@example.org", PW).unwrap();
    let usage = admin.json(&["storage", "--json"]);
    let (status, page) = get(&format!("{url}/"), &cookie);
    assert_eq!(status, 200);
    assert!(
        page.contains(&format!("data-used=\"{}\"", usage["used"])),
        "same figures as haven storage"
    );
    assert!(
        page.contains("Documents") && page.contains("Photos"),
        "categories in the bar"
    );
    let (status, page) = get(&format!("{url}/devices"), &cookie);
    assert_eq!(status, 200);
    assert!(page.contains("href=\"/devices/laptop\""));
    assert!(
        !page.contains("phone"),
        "another account's device is never shown"
    );
    let (status, page) = get(&format!("{url}/devices/laptop"), &cookie);
    assert_eq!(status, 200);
    assert!(
        page.contains("<label for=\"cat-Photos\">Photos</label>"),
        "switch named by its category"
    );
    let token = csrf(&page);
    assert_eq!(get(&format!("{url}/history"), &cookie).0, 200);
    let (status, page) = get(&format!("{url}/admin"), &cookie);
    assert_eq!(status, 200);
    assert!(page.contains("other@example.org") && page.contains("Store health"));
    assert_eq!(get(&format!("{url}/devices/phone"), &cookie).0, 404);

    // A category switch (htmx): refused without the CSRF token.
    let http = client();
    let toggle = format!("{url}/devices/laptop/categories/Photos");
    let r = http
        .post(&toggle)
        .header("cookie", &cookie)
        .form(&[("enabled", "false")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .post(&toggle)
        .header("cookie", &cookie)
        .header("x-csrf-token", &token)
        .form(&[("enabled", "false")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let fragment = r.text().unwrap();
    assert!(fragment.contains("id=\"categories\"") && fragment.contains("Next backup"));
    let cats = admin.json(&["categories", "--json"]);
    assert!(
        cats.as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "Photos" && c["enabled"] == false)
    );

    // Deleting a backup: the confirmation states what it frees, the
    // action frees exactly that.
    let list = admin.json(&["backups", "list", "--json"]);
    let old = list.as_array().unwrap().last().unwrap().clone();
    let id = old["id"].as_str().unwrap();
    let (status, confirm) = get(
        &format!("{url}/devices/laptop/backups/{id}/delete"),
        &cookie,
    );
    assert_eq!(status, 200);
    let freed: u64 = between(&confirm, "id=\"freed\" data-bytes=\"", "\"")
        .parse()
        .unwrap();
    assert_eq!(freed, old["freed_if_deleted"].as_u64().unwrap());
    let before = admin.json(&["storage", "--json"])["used"].as_u64().unwrap();
    let del = format!("{url}/devices/laptop/backups/{id}/delete");
    let r = http
        .post(&del)
        .header("cookie", &cookie)
        .form(&[("csrf", "nope")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .post(&del)
        .header("cookie", &cookie)
        .form(&[("csrf", token.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    let after = admin.json(&["storage", "--json"])["used"].as_u64().unwrap();
    assert_eq!(before - after, freed);

    // The other account: no admin page, no access to the first one's backups.
    let other_cookie = sign_in(&url, "other@example.org", PW).unwrap();
    assert_eq!(get(&format!("{url}/admin"), &other_cookie).0, 403);
    assert_eq!(get(&format!("{url}/devices/laptop"), &other_cookie).0, 404);
    let keep = list.as_array().unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, other_page) = get(&format!("{url}/"), &other_cookie);
    let other_token = csrf(&other_page);
    let r = http
        .post(format!("{url}/devices/phone/backups/{keep}/delete"))
        .header("cookie", &other_cookie)
        .form(&[("csrf", other_token.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        admin
            .json(&["backups", "list", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["id"] == keep.as_str())
    );

    // Plans: none on this server, so no plan form.
    let r = http
        .post(format!("{url}/plan"))
        .header("cookie", &cookie)
        .form(&[("csrf", token.as_str()), ("plan", "gold")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);

    // The one-time link signs in once.
    let link = admin.json(&["console", "--json"]);
    let link_url = link["url"].as_str().unwrap();
    assert!(link_url.starts_with(&url), "{link_url}");
    let r = client().get(link_url).send().unwrap();
    assert_eq!(r.status(), 303);
    let link_cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(get(&format!("{url}/devices"), &link_cookie).0, 200);
    assert_eq!(
        client().get(link_url).send().unwrap().status(),
        410,
        "never twice"
    );

    // Sign out ends the session.
    let r = http
        .post(format!("{url}/signout"))
        .header("cookie", &cookie)
        .form(&[("csrf", token.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        client()
            .get(format!("{url}/"))
            .header("cookie", &cookie)
            .send()
            .unwrap()
            .status(),
        303
    );
}

/// What deletes or weakens backups needs a password proved within the
/// last few minutes: a one-time link's session (no password) and an old
/// sign-in are sent to confirm it, and change nothing meanwhile.
#[test]
fn destructive_console_actions_ask_for_the_password_again() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let url = server.url();
    let dev = Device::new(Path::new(BIN), &tmp.path().join("a"), &url, PW);
    dev.signup("again@example.org", "laptop");
    let home = tmp.path().join("home");
    fs::create_dir_all(home.join("Documents")).unwrap();
    fs::write(home.join("Documents/a.txt"), text(30_000, 1)).unwrap();
    let hb = [("HOME", home.to_str().unwrap())];
    assert!(dev.run_env(&["backup", "--json"], &hb).status.success());
    let id = dev.json(&["backups", "list", "--json"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let confirm_page = format!("{url}/devices/laptop/backups/{id}/delete");
    let http = client();
    let post = |cookie: &str, path: &str, form: &[(&str, &str)], htmx: bool| {
        let mut r = http.post(format!("{url}{path}")).header("cookie", cookie);
        if htmx {
            // htmx sends the CSRF token as a header.
            let token = form.iter().find(|(k, _)| *k == "csrf").map(|(_, v)| *v);
            r = r
                .header("hx-request", "true")
                .header("x-csrf-token", token.unwrap_or_default());
        }
        r.form(form).send().unwrap()
    };
    let to_confirm = |r: &Response| {
        let loc = r
            .headers()
            .get("location")
            .or_else(|| r.headers().get("hx-redirect"))
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        loc.starts_with("/signin?next=%2Fdevices%2Flaptop")
    };

    // A one-time link's session proves no password.
    let link = dev.json(&["console", "--json"]);
    let r = client().get(link["url"].as_str().unwrap()).send().unwrap();
    let link_cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let (status, page) = get(&format!("{url}/devices/laptop"), &link_cookie);
    assert_eq!(status, 200);
    let token = csrf(&page);
    let r = client()
        .get(&confirm_page)
        .header("cookie", &link_cookie)
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(to_confirm(&r), "{:?}", r.headers());
    let refused = [
        post(
            &link_cookie,
            &format!("/devices/laptop/backups/{id}/delete"),
            &[("csrf", &token)],
            false,
        ),
        post(
            &link_cookie,
            "/devices/laptop/categories/Documents",
            &[("enabled", "false"), ("csrf", &token)],
            true,
        ),
        post(
            &link_cookie,
            "/devices/laptop/signout",
            &[("csrf", &token)],
            false,
        ),
    ];
    for r in &refused {
        assert!(to_confirm(r), "{} {:?}", r.status(), r.headers());
    }
    assert_eq!(
        dev.json(&["backups", "list", "--json"])[0]["id"],
        id.as_str()
    );
    let cats = dev.json(&["categories", "--json"]);
    assert!(
        cats.as_array()
            .unwrap()
            .iter()
            .all(|c| c["enabled"] == true),
        "{cats}"
    );
    // Switching on adds; it needs no password.
    let r = http
        .post(format!("{url}/devices/laptop/categories/Documents"))
        .header("cookie", &link_cookie)
        .header("x-csrf-token", &token)
        .form(&[("enabled", "true")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    // The sign-in page, asked to confirm, says so.
    let (status, page) = get(&format!("{url}/signin?next=%2Fdevices%2Flaptop"), "");
    assert_eq!(status, 200);
    assert!(page.contains("Confirm your password"));

    // A password sign-in may, for a few minutes.
    let cookie = sign_in(&url, "again@example.org", PW).unwrap();
    assert_eq!(get(&confirm_page, &cookie).0, 200);
    server.advance_clock(6 * 60);
    let r = client()
        .get(&confirm_page)
        .header("cookie", &cookie)
        .send()
        .unwrap();
    assert!(to_confirm(&r), "six minutes later it asks again");
    let cookie = sign_in(&url, "again@example.org", PW).unwrap();
    let (_, page) = get(&format!("{url}/devices/laptop"), &cookie);
    let token = csrf(&page);
    let r = post(
        &cookie,
        &format!("/devices/laptop/backups/{id}/delete"),
        &[("csrf", &token)],
        false,
    );
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .contains("deleted=")
    );
    assert_eq!(
        dev.json(&["backups", "list", "--json"]),
        serde_json::json!([])
    );
    // Signing the device out from the console ends its sign-in at once.
    let r = post(
        &cookie,
        "/devices/laptop/signout",
        &[("csrf", &token)],
        false,
    );
    assert_eq!(r.status(), 303);
    assert_eq!(
        dev.error_code(&["backups", "list", "--json"]),
        "token_revoked"
    );
    let (_, page) = get(&format!("{url}/devices/laptop"), &cookie);
    assert!(page.contains("Signed out"), "{page}");
    let (_, page) = get(&format!("{url}/devices"), &cookie);
    assert!(
        page.contains("signed out"),
        "the devices page says so: {page}"
    );
}
