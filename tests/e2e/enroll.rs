//! Enrollment (issue 14), with the real binaries: `jsacc enroll create` prints a code;
//! `jsagent enroll CODE --controller URL --ca-fingerprint FP` (the fingerprint jsacc printed at
//! start) writes `<dir>/agent.toml`, and `jsagent -c <dir>/agent.toml` comes online and runs a
//! command. A wrong fingerprint, a used code and an expired one are refused with clear errors.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::json;
use tests::{bin_dir, wait_for, Controller, ControllerOpts, Proc, Redis};

const T: Duration = Duration::from_secs(60);

/// The fingerprint jsacc printed at start ("certificate SHA-256 fingerprint AB:…").
pub fn printed_fingerprint(controller: &Controller) -> String {
    let logs = controller.logs();
    let line = logs
        .lines()
        .find_map(|l| l.split("certificate SHA-256 fingerprint ").nth(1))
        .unwrap_or_else(|| panic!("no fingerprint in jsacc's output:\n{logs}"));
    line.trim().to_owned()
}

/// `jsacc enroll create ARGS…`: the code from its last line.
pub fn create_code(redis: &Redis, args: &[&str]) -> String {
    let out = Command::new(bin_dir().join("jsacc"))
        .args(["enroll", "create"])
        .args(args)
        .args(redis.jsacc_args())
        .output()
        .expect("jsacc enroll create runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "jsacc enroll create: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = stdout
        .lines()
        .last()
        .expect("a code line")
        .trim()
        .to_owned();
    assert!(code.starts_with("jse_") && code.len() == 44, "{stdout}");
    code
}

fn enroll(code: &str, controller: &Controller, fingerprint: &str, dir: &Path) -> Output {
    Command::new(bin_dir().join("jsagent"))
        .args(["enroll", code, "--controller", &controller.url()])
        .args(["--ca-fingerprint", fingerprint])
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("jsagent enroll runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn an_enrolled_agent_runs_from_the_written_config() {
    let redis = Redis::start();
    let controller = Controller::start(&redis, ControllerOpts::default());
    let fingerprint = printed_fingerprint(&controller);
    let code = create_code(&redis, &["--gid", "7", "--roles", "web"]);
    let home = tempfile::tempdir().expect("tempdir");
    let dir = home.path().join("agent");

    // A wrong fingerprint: refused, nothing written, the code not spent.
    let wrong = "00:".repeat(31) + "00";
    let out = enroll(&code, &controller, &wrong, &dir);
    assert!(!out.status.success(), "{}", text(&out));
    let expected = format!("has fingerprint {fingerprint}, not {wrong}");
    assert!(text(&out).contains(&expected), "{}", text(&out));
    assert!(!dir.join("agent.toml").exists());

    // Colons and case do not matter.
    let loose = fingerprint.replace(':', "").to_lowercase();
    let out = enroll(&code, &controller, &loose, &dir);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("enrolled as agent 7:1 with roles web"),
        "{}",
        text(&out)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in ["token", "agent.toml"] {
            let mode = std::fs::metadata(dir.join(file))
                .expect(file)
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }
    // Enrolled: the same directory is refused.
    let again = enroll(&code, &controller, &fingerprint, &dir);
    assert!(
        text(&again).contains("already enrolled as 7:1"),
        "{}",
        text(&again)
    );

    let mut cmd = Command::new(bin_dir().join("jsagent"));
    cmd.arg("-c").arg(dir.join("agent.toml"));
    let agent = Proc::spawn(cmd, home.path().join("jsagent.log"));
    let client = redis.client();
    wait_for("the enrolled agent online", T, || {
        client.online(7, 1).then_some(())
    });
    let ping =
        json!({"id": uuid::Uuid::new_v4().to_string(), "gid": 7, "role": "web", "cmd": "ping"});
    let r = client.run(&ping, T);
    assert_eq!(r["state"], "OK", "{r}\n{}", agent.output());

    // Audited, with the code's hash prefix as who.
    let audit = client.stream("audit");
    assert!(
        audit
            .iter()
            .any(|e| e.get("what").map(String::as_str) == Some("enroll")
                && e.get("target").map(String::as_str) == Some("agent 7:1")),
        "{audit:?}"
    );

    // The code was for one machine.
    let other = home.path().join("other");
    let out = enroll(&code, &controller, &fingerprint, &other);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("enrollment code already used"),
        "{}",
        text(&out)
    );
    assert!(!other.join("agent.toml").exists());
}

#[test]
fn an_expired_code_is_refused() {
    let redis = Redis::start();
    let controller = Controller::start(&redis, ControllerOpts::default());
    let fingerprint = printed_fingerprint(&controller);
    let code = create_code(&redis, &["--gid", "1", "--ttl", "1"]);
    let home = tempfile::tempdir().expect("tempdir");
    let dir = home.path().join("agent");
    // Its expiry, as stored: waited for by polling the clock, not by sleeping a guess.
    let records: Vec<String> = redis.client().query(redis::cmd("HVALS").arg("auth:enroll"));
    let record: serde_json::Value = serde_json::from_str(&records[0]).expect("JSON");
    let expires = record["expires"].as_u64().expect("expires");
    wait_for("the code's expiry", T, || {
        (schemas::now_ms() > expires).then_some(())
    });
    let out = enroll(&code, &controller, &fingerprint, &dir);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("enrollment code expired"),
        "{}",
        text(&out)
    );
    assert!(!dir.join("agent.toml").exists());
}

/// Local failures come before the code is sent: a data dir that cannot be made (a file where a
/// directory should be, which stops root too) leaves the code unspent; it then enrolls, read
/// from stdin (`-`), so that it is not on the command line.
#[test]
fn a_data_dir_that_cannot_be_made_does_not_spend_the_code() {
    use std::io::Write;
    let redis = Redis::start();
    let controller = Controller::start(&redis, ControllerOpts::default());
    let fingerprint = printed_fingerprint(&controller);
    let code = create_code(&redis, &["--gid", "2"]);
    let home = tempfile::tempdir().expect("tempdir");
    std::fs::write(home.path().join("file"), "x").expect("a file");
    let blocked = home.path().join("file").join("agent");
    let out = enroll(&code, &controller, &fingerprint, &blocked);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("the enrollment code was not used"),
        "{}",
        text(&out)
    );
    // An existing directory holding other things is refused too, and left as it was.
    let foreign = home.path().join("opt");
    std::fs::create_dir(&foreign).expect("a dir");
    std::fs::write(foreign.join("other"), "x").expect("a file");
    let out = enroll(&code, &controller, &fingerprint, &foreign);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("holds other things"), "{}", text(&out));

    let dir = home.path().join("agent");
    let mut child = Command::new(bin_dir().join("jsagent"))
        .args(["enroll", "-", "--controller", &controller.url()])
        .args(["--ca-fingerprint", &fingerprint])
        .arg("--data-dir")
        .arg(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("jsagent enroll runs");
    writeln!(child.stdin.take().expect("stdin"), "{code}").expect("the code written");
    let out = child.wait_with_output().expect("jsagent enroll ends");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("enrolled as agent 2:1"),
        "{}",
        text(&out)
    );
    assert!(dir.join("agent.toml").exists());
}
