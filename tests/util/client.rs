//! A client that knows only DESIGN §3–§4: `LPUSH cmds_queue`, `BLPOP cmds_queue_<id>`.

use std::time::Duration;

use serde_json::Value;

pub struct RedisClient {
    client: redis::Client,
}

impl From<redis::Client> for RedisClient {
    fn from(client: redis::Client) -> RedisClient {
        RedisClient { client }
    }
}

impl RedisClient {
    pub fn new(url: &str) -> RedisClient {
        RedisClient {
            client: redis::Client::open(url).expect("redis url"),
        }
    }

    /// A synchronous connection without a read timeout (for `BLPOP`).
    pub fn blocking(&self) -> redis::Connection {
        self.client.get_connection().expect("redis connection")
    }

    /// A connection, or `None` while the server is not up yet.
    pub fn blocking_checked(&self) -> Option<redis::Connection> {
        self.client.get_connection().ok()
    }

    /// A list of JSON documents, without consuming it.
    fn json_list(&self, key: &str) -> Vec<Value> {
        let items: Vec<String> = redis::cmd("LRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query(&mut self.blocking())
            .expect("LRANGE");
        items
            .iter()
            .map(|s| serde_json::from_str(s).expect("JSON"))
            .collect()
    }

    pub fn push(&self, cmd: &Value) {
        self.push_raw(&cmd.to_string());
    }

    pub fn push_raw(&self, raw: &str) {
        let _: i64 = redis::cmd("LPUSH")
            .arg("cmds_queue")
            .arg(raw)
            .query(&mut self.blocking())
            .expect("LPUSH");
    }

    /// Waits for the next result of a job; `None` after `timeout`.
    pub fn result(&self, id: &str, timeout: Duration) -> Option<Value> {
        let mut conn = self.blocking();
        let got: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(format!("cmds_queue_{id}"))
            .arg(timeout.as_secs_f64())
            .query(&mut conn)
            .expect("BLPOP");
        got.map(|(_, v)| serde_json::from_str(&v).expect("result is JSON"))
    }

    /// Pushes a command and waits for its first result.
    pub fn run(&self, cmd: &Value, timeout: Duration) -> Value {
        self.push(cmd);
        let id = cmd["id"].as_str().expect("command has an id");
        self.result(id, timeout)
            .unwrap_or_else(|| panic!("no result for {cmd} within {timeout:?}"))
    }

    /// All results of a job currently in its list, without consuming them.
    pub fn results(&self, id: &str) -> Vec<Value> {
        self.json_list(&format!("cmds_queue_{id}"))
    }

    pub fn job_field(&self, id: &str, field: &str) -> Option<String> {
        redis::cmd("HGET")
            .arg(format!("job:{id}"))
            .arg(field)
            .query(&mut self.blocking())
            .expect("HGET")
    }

    /// Whether agent gid:nid has said hello (it is in `agents`).
    pub fn online(&self, gid: u64, nid: u64) -> bool {
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg("agents")
            .arg(format!("{gid}:{nid}"))
            .query(&mut self.blocking())
            .unwrap_or(None);
        score.is_some()
    }

    /// A hash field holding JSON, parsed.
    pub fn hget_json(&self, key: &str, field: &str) -> Option<Value> {
        let raw: Option<String> = redis::cmd("HGET")
            .arg(key)
            .arg(field)
            .query(&mut self.blocking())
            .expect("HGET");
        raw.map(|r| serde_json::from_str(&r).expect("JSON"))
    }

    /// The entries of a stream as (field → value) maps, oldest first.
    pub fn stream(&self, key: &str) -> Vec<std::collections::HashMap<String, String>> {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(key)
            .arg("-")
            .arg("+")
            .query(&mut self.blocking())
            .expect("XRANGE");
        reply
            .ids
            .into_iter()
            .map(|entry| {
                entry
                    .map
                    .into_iter()
                    .map(|(k, v)| (k, redis::from_redis_value::<String>(v).expect("text")))
                    .collect()
            })
            .collect()
    }

    pub fn dead_letters(&self) -> Vec<Value> {
        self.json_list("cmds_queue:dead")
    }

    pub fn llen(&self, key: &str) -> u64 {
        redis::cmd("LLEN")
            .arg(key)
            .query(&mut self.blocking())
            .expect("LLEN")
    }
}
