//! Shared by the tests that run the real `haven-server` binary.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SERVER: &str = env!("CARGO_BIN_EXE_haven-server");

/// `haven-server serve` on a free loopback port with `args` added, once
/// it accepts connections; returns the process and its URL.
#[allow(dead_code)] // Not every test binary that shares this module needs it.
pub fn serve(data: &Path, args: &[&str]) -> (Child, String) {
    serve_under(&[], data, args)
}

/// [`serve`], run by `wrapper` (e.g. `["prlimit", "--nofile=1024:1024"]`).
pub fn serve_under(wrapper: &[&str], data: &Path, args: &[&str]) -> (Child, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(SERVER);
            c
        }
        None => Command::new(SERVER),
    };
    let child = cmd
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, format!("http://127.0.0.1:{port}"))
}

/// Kills the server process when the test ends, however it ends.
#[allow(dead_code)] // Not every test binary that shares this module needs it.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Signs a device up at `url` (open sign-up, weak KDF allowed by the
/// caller) with its state in `dir`, and uploads one pack holding each of
/// `plains` as a data blob; returns the device's connection and the
/// blobs' ids.
#[allow(dead_code)] // Not every test binary that shares this module uploads.
pub fn sign_up_and_upload(
    dir: &Path,
    url: &str,
    email: &str,
    plains: &[Vec<u8>],
) -> haven_client::Result<(haven_client::HttpRemote, Vec<haven_format::BlobId>)> {
    use haven_client::{HttpRemote, Remote, account, profile::ConfigDir};
    use haven_format::blob::{self, BlobKind};
    let signed = account::signup(
        &ConfigDir::at(dir.to_path_buf()),
        url,
        email,
        "correct horse battery",
        "laptop",
        None,
        &Default::default(),
    )?;
    let keys = signed.profile.master_key()?.keys();
    let remote = HttpRemote::new(url, Some(signed.profile.token.clone()))?;
    remote.open_session(None, None)?;
    let mut pack = haven_format::pack::PackWriter::new();
    let mut ids = Vec::new();
    for plain in plains {
        let id = blob::blob_id(&keys, BlobKind::Data, plain);
        let sealed = blob::seal(&keys, BlobKind::Data, &id, plain, 3).expect("seal");
        pack.add(BlobKind::Data, id, &sealed);
        ids.push(id);
    }
    let (id, bytes, _) = pack.finish();
    remote.put_pack(id, bytes)?;
    Ok((remote, ids))
}
