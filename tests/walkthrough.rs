//! The README's walkthrough, run as written: the shell block between the `walkthrough:begin` and
//! `walkthrough:end` markers runs under `bash -euo pipefail` from the repository root, with the
//! binaries `cargo test` built on `PATH` and free loopback ports, and its `curl` calls must print
//! 200, 403 and 401, then 200 for `/readyz`.
//!
//! It needs `curl`, and the `fhir_server` example binary, which a plain `cargo test
//! --all-features` builds (a run limited to `--test walkthrough` does not: build it first with
//! `cargo build --all-features --example fhir_server`).
#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_smart-guard");
const BEGIN: &str = "<!-- walkthrough:begin -->";
const END: &str = "<!-- walkthrough:end -->";

/// The shell lines of the fenced blocks between the markers.
fn walkthrough_script(readme: &str) -> String {
    let start = readme
        .find(BEGIN)
        .expect("README has the walkthrough:begin marker");
    let end = readme
        .find(END)
        .expect("README has the walkthrough:end marker");
    let mut script = String::new();
    let mut in_block = false;
    for line in readme[start..end].lines() {
        match line.trim() {
            "```sh" => in_block = true,
            "```" => in_block = false,
            _ if in_block => {
                script.push_str(line);
                script.push('\n');
            }
            _ => {}
        }
    }
    assert!(!script.is_empty(), "no ```sh block between the markers");
    script
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The script's process group (bash and the servers it starts in the background), killed on
/// drop, and its scratch directory, removed.
struct Run {
    child: Child,
    scratch: PathBuf,
}

impl Drop for Run {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

#[test]
fn the_readme_walkthrough_runs_as_written_and_answers_200_403_401() {
    use std::os::unix::process::CommandExt as _;

    assert!(
        Command::new("curl").arg("--version").output().is_ok(),
        "the walkthrough needs curl on PATH (.ci/run installs it)"
    );
    let bin_dir = Path::new(BIN).parent().expect("the binary's directory");
    let examples = bin_dir.join("examples");
    assert!(
        examples.join("fhir_server").exists(),
        "{} is missing: `cargo test --all-features` builds it, or run \
         `cargo build --all-features --example fhir_server` first",
        examples.join("fhir_server").display()
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = walkthrough_script(
        &std::fs::read_to_string(root.join("README.md")).expect("read README.md"),
    );
    let scratch =
        std::env::temp_dir().join(format!("smart-guard-walkthrough-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let path = format!(
        "{}:{}:{}",
        bin_dir.display(),
        examples.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (out, err) = (scratch.join("stdout"), scratch.join("stderr"));
    let mut command = Command::new("bash");
    command.args(["-euo", "pipefail", "-c", &script]);
    for (var, _) in std::env::vars() {
        if var.starts_with("SMART_GUARD_") || var == "FHIR_LISTEN_ADDR" {
            command.env_remove(var);
        }
    }
    let started = Instant::now();
    let child = command
        .current_dir(root)
        .env("PATH", path)
        .env("TMPDIR", &scratch)
        .env("AS_PORT", free_port().to_string())
        .env("FHIR_PORT", free_port().to_string())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .process_group(0)
        .spawn()
        .expect("run bash");
    let mut run = Run { child, scratch };
    let status = loop {
        if let Some(status) = run.child.try_wait().expect("wait for bash") {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(60) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    let report = format!("script:\n{script}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let status = status.unwrap_or_else(|| panic!("the walkthrough took over 60 s\n{report}"));
    assert!(
        status.success(),
        "the walkthrough failed ({status})\n{report}"
    );
    let codes: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        codes[codes.len().saturating_sub(4)..],
        ["200", "403", "401", "200"],
        "{report}"
    );
    assert!(stdout.contains("check: ok"), "{report}");
    assert!(!stdout.contains("walkthrough-secret"), "{report}");
    drop(run);
}
