//! The Redis ACL users of deploy/redis/users.acl: a real redis-server loads a copy of the file
//! (its password placeholders replaced by test passwords, hashed as the README says), the real
//! `jsacc` runs as user `jsacc`, a real `jsagent` does jobs, and a client that is user `client`
//! pushes a job and waits for its result, and is refused what could take over the agents.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};
use tests::{execute, free_port, wait_for, Cluster, ControllerOpts, RedisClient, RedisTarget};

const T: Duration = Duration::from_secs(60);
const JSACC_PASSWORD: &str = "jsacc-test-password";
const CLIENT_PASSWORD: &str = "client-test-password";
/// A user of the test's copy only, to read `ACL LOG`: the shipped file has no admin user.
const ADMIN_PASSWORD: &str = "admin-test-password";

/// A redis-server whose users are those of deploy/redis/users.acl; killed on drop.
struct AclRedis {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl AclRedis {
    fn start() -> AclRedis {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/redis/users.acl");
        let text = std::fs::read_to_string(&shipped).expect("deploy/redis/users.acl");
        for placeholder in [
            "SHA256_OF_THE_JSACC_PASSWORD",
            "SHA256_OF_THE_CLIENT_PASSWORD",
        ] {
            assert!(text.contains(placeholder), "{placeholder} in users.acl");
        }
        let acl = text
            .replace("SHA256_OF_THE_JSACC_PASSWORD", &sha256_hex(JSACC_PASSWORD))
            .replace(
                "SHA256_OF_THE_CLIENT_PASSWORD",
                &sha256_hex(CLIENT_PASSWORD),
            )
            + &format!(
                "user admin on #{} ~* &* +@all\n",
                sha256_hex(ADMIN_PASSWORD)
            );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("users.acl");
        std::fs::write(&file, acl).expect("write users.acl");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("redis.log")).expect("log file");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--aclfile")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("redis-server on PATH");
        let mut redis = AclRedis {
            port,
            child,
            _dir: dir,
        };
        let admin = redis.client_as("admin", ADMIN_PASSWORD);
        wait_for("redis-server with the ACL file", T, || {
            if let Ok(Some(status)) = redis.child.try_wait() {
                let log = std::fs::read_to_string(redis._dir.path().join("redis.log"));
                panic!(
                    "redis-server exited with {status}: {}",
                    log.unwrap_or_default()
                );
            }
            let mut conn = admin.blocking_checked()?;
            redis::cmd("PING").query::<String>(&mut conn).ok()
        });
        redis
    }

    fn url_as(&self, user: &str, password: &str) -> String {
        format!("redis://{user}:{password}@127.0.0.1:{}", self.port)
    }

    fn client_as(&self, user: &str, password: &str) -> RedisClient {
        RedisClient::new(&self.url_as(user, password))
    }

    /// `ACL LOG` entries (what some user was refused) as field → text.
    fn refusals(&self) -> Vec<HashMap<String, String>> {
        let mut conn = self.client_as("admin", ADMIN_PASSWORD).blocking();
        let entries: Vec<HashMap<String, redis::Value>> = redis::cmd("ACL")
            .arg("LOG")
            .query(&mut conn)
            .expect("ACL LOG");
        entries
            .into_iter()
            .map(|entry| {
                entry
                    .into_iter()
                    .map(|(k, v)| (k, redis::from_redis_value::<String>(v).unwrap_or_default()))
                    .collect()
            })
            .collect()
    }
}

impl Drop for AclRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The controller, `jsacc token` and the test's own view of the cluster are user `jsacc`.
impl RedisTarget for AclRedis {
    fn url(&self) -> String {
        self.url_as("jsacc", JSACC_PASSWORD)
    }
    fn jsacc_args(&self) -> Vec<String> {
        vec!["-r".to_owned(), RedisTarget::url(self)]
    }
    fn client(&self) -> RedisClient {
        RedisClient::new(&RedisTarget::url(self))
    }
    fn topology(&self) -> &'static str {
        "standalone"
    }
    fn pids(&self) -> Vec<u32> {
        vec![self.child.id()]
    }
}

/// Runs `cmd` as the client; the server's refusal code, if any.
fn refusal(client: &RedisClient, cmd: &redis::Cmd) -> Option<String> {
    let mut conn = client.blocking();
    cmd.query::<redis::Value>(&mut conn)
        .err()
        .map(|e| e.code().unwrap_or("?").to_owned())
}

#[test]
fn the_acl_users_run_jobs_and_fence_the_client() {
    let c = Cluster::start_on(
        AclRedis::start(),
        &[&["web"]],
        ControllerOpts::default(),
        "stats_flush_interval = 0.5\n",
    );
    let client = c.redis.client_as("client", CLIENT_PASSWORD);

    // A job pushed and waited for as `client`; it logs (forwarded at level 7) and counts (level 10).
    let mut cmd = execute(
        1,
        1,
        "sh",
        &["-c", "echo hello; echo 7::careful; echo '10::runs:1|c'"],
    );
    cmd["args"]["domain"] = json!("acl");
    cmd["args"]["name"] = json!("test");
    cmd["args"]["max_wait"] = json!(600);
    let id = cmd["id"].as_str().expect("id").to_owned();
    client.push(&cmd);
    let Some(r) = client.result(&id, T) else {
        panic!(
            "no result within {T:?}; refused: {:#?}\n{}\n{}",
            c.redis.refusals(),
            c.controller.logs(),
            c.dump()
        );
    };
    assert_eq!(r["state"], "OK", "{r}\n{}", c.dump());
    assert!(
        r["streams"][0].as_str().unwrap_or("").contains("hello"),
        "{r}"
    );
    assert_eq!(client.job_field(&id, "state").as_deref(), Some("OK"));
    assert!(client.online(1, 1), "the client reads `agents`");

    // Enrollment as user `jsacc`: a code (`auth:enroll`), then its redemption (the redeem
    // script, `HKEYS auth:agents`, the claim of a node and its token).
    let out = std::process::Command::new(tests::bin_dir().join("jsacc"))
        .args(["enroll", "create", "--gid", "5"])
        .args(c.redis.jsacc_args())
        .output()
        .expect("jsacc enroll create runs");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let code = stdout.lines().last().expect("a code").trim().to_owned();
    let answer: serde_json::Value = c
        .controller
        .http()
        .post(format!("{}/v1/enroll", c.controller.url()))
        .json(&json!({"code": code}))
        .send()
        .expect("POST /v1/enroll")
        .json()
        .expect("JSON");
    assert_eq!(
        answer["nid"],
        1,
        "{answer}; refused: {:#?}",
        c.redis.refusals()
    );

    // Role routing, and what the client reads besides results: logs, stats, agent hashes.
    let by_role =
        json!({"id": uuid::Uuid::new_v4().to_string(), "gid": 1, "role": "web", "cmd": "ping"});
    assert_eq!(client.run(&by_role, T)["state"], "OK");
    wait_for("the forwarded log message", T, || {
        (!client.stream("log.acl.test").is_empty()).then_some(())
    });
    wait_for("the job's counter in stats:{1:1}:latest", T, || {
        let latest: HashMap<String, String> =
            client.query(redis::cmd("HGETALL").arg("stats:{1:1}:latest"));
        latest
            .keys()
            .any(|k| k.starts_with("acl.test.runs"))
            .then_some(())
    });
    let hostname: Option<String> =
        client.query(redis::cmd("HGET").arg("agent:{1:1}").arg("hostname"));
    assert!(hostname.is_some(), "the client reads agent hashes");
    // The controller's own reads for /metrics and /metrics/agents (loopback) run as `jsacc` too.
    for path in ["/metrics", "/metrics/agents"] {
        let _ = c
            .controller
            .http()
            .get(format!("{}{path}", c.controller.url()))
            .send();
    }

    // What would let the client run anything anywhere, or lose every job, is refused.
    let refused = [
        redis::cmd("HSET")
            .arg("auth:agents")
            .arg("1:1")
            .arg("x")
            .clone(),
        redis::cmd("LPUSH")
            .arg("agent:{1:1}:queue")
            .arg(cmd.to_string())
            .clone(),
        redis::cmd("FLUSHALL").clone(),
    ];
    for forbidden in &refused {
        assert_eq!(
            refusal(&client, forbidden).as_deref(),
            Some("NOPERM"),
            "{forbidden:?}"
        );
    }
    let anonymous = RedisClient::new(&format!("redis://127.0.0.1:{}", c.redis.port));
    assert_eq!(
        refusal(&anonymous, &redis::cmd("PING")).as_deref(),
        Some("NOAUTH"),
        "the default user is off"
    );

    // Nothing the controller, `jsacc token` or the client library needed was refused: the only
    // refusals logged are the three above. (`client|setinfo` is what redis-rs asks on every
    // connection and ignores the answer to; Redis 7.2+ logs it.)
    let unexpected: Vec<_> = c
        .redis
        .refusals()
        .into_iter()
        .filter(|e| e.get("object").map(String::as_str) != Some("client|setinfo"))
        .filter(|e| {
            let object = e.get("object").map(String::as_str).unwrap_or("");
            !(e.get("username").map(String::as_str) == Some("client")
                && ["hset", "flushall", "agent:{1:1}:queue"].contains(&object))
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "refused: {unexpected:#?}\n{}",
        c.controller.logs()
    );
}

/// The commands user `jsacc` is granted (`+name` rules of its line in users.acl).
fn granted_to_jsacc() -> Vec<String> {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/redis/users.acl");
    let text = std::fs::read_to_string(shipped).expect("deploy/redis/users.acl");
    let line = text
        .lines()
        .find(|l| l.starts_with("user jsacc "))
        .expect("a jsacc user");
    line.split(' ')
        .filter_map(|rule| rule.strip_prefix('+'))
        .map(str::to_owned)
        .collect()
}

/// A fast check that needs no process: every command the controller's Lua scripts call, and
/// every `redis::cmd("…")` in its sources, is granted to `jsacc` (the end-to-end test above
/// covers redis-rs's typed commands on the paths it runs).
#[test]
fn users_acl_grants_jsacc_every_command_in_its_sources() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../controller/src");
    let mut files = Vec::new();
    for dir in [src.clone(), src.join("lua")] {
        for entry in std::fs::read_dir(&dir).expect("controller sources") {
            files.push(entry.expect("entry").path());
        }
    }
    let granted = granted_to_jsacc();
    let mut missing = Vec::new();
    for file in files.iter().filter(|f| f.is_file()) {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // The private redis-server's own start-up (CONFIG GET dir, SHUTDOWN) is not jsacc's user.
        if name == "private_redis.rs" {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("source");
        let openers = [
            "redis.call('",
            "redis.pcall('",
            "redis.call(\"",
            "redis::cmd(\"",
        ];
        for opener in openers {
            for (_, rest) in text
                .match_indices(opener)
                .map(|(i, _)| text.split_at(i + opener.len()))
            {
                let command: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
                let command = command.to_ascii_lowercase();
                // `redis::cmd("CLUSTER").arg("SLOTS")`: the grant may be of the subcommand.
                let subcommand = rest[command.len()..]
                    .strip_prefix("\")")
                    .and_then(|r| r.trim_start().strip_prefix(".arg(\""))
                    .map(|r| {
                        let sub: String = r.chars().take_while(|c| *c != '"').collect();
                        sub.to_ascii_lowercase()
                    });
                let ok = granted.contains(&command)
                    || subcommand.is_some_and(|s| granted.contains(&format!("{command}|{s}")));
                // SENTINEL goes to the sentinels, whose users are their own (not this file's).
                if !ok && !command.is_empty() && command != "sentinel" {
                    missing.push(format!("{command} ({name})"));
                }
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "not granted to jsacc in users.acl: {missing:?}"
    );
}
