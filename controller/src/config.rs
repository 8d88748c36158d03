//! Command-line flags (each with a `JSACC_*` environment variable) and the validated settings
//! the server runs with.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "jsacc",
    version,
    about = "jsacc, the agent controller: routes commands from the Redis list `cmds_queue` to node agents over HTTPS and writes their results to `cmds_queue_<id>`",
    long_about = None,
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  jsacc -p 4000 -r redis.example:6379    against an existing Redis\n  jsacc                                  with a private redis-server in ./jsacc-data\n  jsacc -r redis+sentinel://s1:26379,s2:26379,s3:26379/jsacc    on a Sentinel set\n  jsacc -r redis+cluster://n1:7000,n2:7000,n3:7000    on a Redis Cluster\n  jsacc token add --gid 1 --nid 5 -r redis.example:6379    print a token for agent 1:5"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Sub>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Sub {
    /// Manage agent tokens (only their SHA-256 is stored, in the Redis hash `auth:agents`).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Manage operator accounts (viewer, operator, admin); only their token's SHA-256 is stored.
    #[command(subcommand, after_help = USER_EXAMPLES)]
    User(UserCmd),
    /// Manage enrollment codes: one-time codes a new machine trades for an agent token
    /// (`jsagent enroll CODE …`); only their SHA-256 is stored, in the Redis hash `auth:enroll`.
    #[command(subcommand, after_help = ENROLL_EXAMPLES)]
    Enroll(EnrollCmd),
    /// Run a whole local cluster in one process: a private Redis, a controller and one agent;
    /// Ctrl-C stops all of it.
    #[command(long_about = DEV_ABOUT, after_help = DEV_EXAMPLES)]
    Dev(DevArgs),
}

const DEV_ABOUT: &str = "Runs a local cluster for trying jsacc out or developing against it, \
like `nomad agent -dev`: a private redis-server (data, password and URL under --data-dir), a \
controller in this process (HTTPS on 127.0.0.1 with the self-signed certificate of --data-dir), \
and one jsagent child with a freshly minted token that trusts that certificate. Once the agent \
has said hello it prints the `export` line that points jsctl at this Redis, a sample command, and \
the line `jsacc dev: ready`.

Ctrl-C or SIGTERM stops the agent (SIGKILL after 30 s), then the controller, then the Redis, and \
exits 0. An agent that exits by itself ends it all with exit code 1, except with exit code 75 (its \
`restart` command): then it is started again. If jsacc dev itself is SIGKILLed, its children are \
left running: the next start on the same --data-dir reuses the Redis (SIGTERM the old agent). One \
jsacc dev at a time runs on a data dir (<data-dir>/dev.pid).

The controller's JSACC_* tuning variables apply; JSACC_REDIS and the TLS, bind, port and data-dir \
settings do not. JSAGENT_* variables other than JSAGENT_LOG are not passed to the agent.";

const DEV_EXAMPLES: &str = "Examples:
  jsacc dev                           data in ./jsacc-data/dev, port 4000 or the next free one
  jsacc dev -p 4100 --roles web,db    an agent with two roles
  jsacc dev >dev.log 2>&1 &           in the background (as deploy/quickstart.sh does)";

/// `jsacc dev`: the settings a local cluster needs; everything else is chosen for it.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Directory for all of it: the private Redis (redis/, redis.url), the certificate (tls/),
    /// the agent's config, token, log and data (agent-G-N*), and dev.pid.
    #[arg(long, default_value = "./jsacc-data/dev", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Controller port on 127.0.0.1 [default: 4000, or the next free one up to 4099].
    #[arg(short = 'p', long, value_name = "PORT")]
    pub port: Option<u16>,
    /// The jsagent executable [default: the one next to this jsacc, else jsagent on PATH].
    #[arg(long, value_name = "PATH")]
    pub agent_bin: Option<PathBuf>,
    /// Grid id of the agent.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub gid: u64,
    /// Node id of the agent.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub nid: u64,
    /// Roles the agent's token grants (and its config claims), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "ROLE,…", value_parser = parse_role)]
    pub roles: Vec<String>,
}

const USER_EXAMPLES: &str =
    "Roles: viewer reads everything; operator also submits and kills jobs; \
admin also manages agent tokens and accounts.

Examples:
  jsacc user add alice --role operator    print alice's token (shown only once)
  jsacc user list                         name, role, when added
  jsacc user revoke alice                 her token stops working";

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Add an account and print its token on the last line; it is shown only once.
    Add(UserAddArgs),
    /// List the accounts: name, role, when added.
    List(UserListArgs),
    /// Remove an account: its token is refused from then on.
    Revoke(UserArgs),
}

#[derive(Debug, Args)]
pub struct UserArgs {
    /// The account's name (letters, digits, `-`, `_`, `.`, `@`; at most 64).
    #[arg(value_parser = parse_user_name)]
    pub name: String,
    #[command(flatten)]
    pub redis: RedisArgs,
}

#[derive(Debug, Args)]
pub struct UserAddArgs {
    #[command(flatten)]
    pub user: UserArgs,
    /// What the account may do: viewer, operator or admin.
    #[arg(long)]
    pub role: crate::users::Role,
}

#[derive(Debug, Args)]
pub struct UserListArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
}

fn parse_user_name(s: &str) -> Result<String, String> {
    crate::users::check_name(s)?;
    Ok(s.to_owned())
}

const ENROLL_EXAMPLES: &str = "Examples:
  jsacc enroll create --gid 1 --roles web         a code for the next free node of grid 1
  jsacc enroll create --gid 1 --nid 5 --ttl 600   a code for node 1:5, valid 10 minutes
  jsacc enroll create --gid 2 --uses 20           20 machines of grid 2, with one code
  jsacc enroll list                               live codes (hash prefix, grant, uses left)
  jsacc enroll revoke 3f2a9c1b07de                a code stops working
On the new machine: jsagent enroll CODE --controller URL --ca-fingerprint SHA256";

#[derive(Debug, Subcommand)]
pub enum EnrollCmd {
    /// Create a code and print it on the last line; it is shown only once.
    Create(EnrollCreateArgs),
    /// List the live codes: hash prefix, grid, node, roles, uses left, expiry (never a code).
    List(EnrollListArgs),
    /// Delete a code by the prefix of its hash that `list` shows: it is refused from then on.
    Revoke(EnrollRevokeArgs),
}

#[derive(Debug, Args)]
pub struct EnrollCreateArgs {
    /// Grid id of the agents it enrolls.
    #[arg(long)]
    pub gid: u64,
    /// Node id it enrolls; without it, each use takes the next free one of the grid (one above
    /// the highest node that has a token).
    #[arg(long)]
    pub nid: Option<u64>,
    /// Roles the agents' tokens grant, comma-separated (as `jsacc token add --roles`).
    #[arg(long, value_delimiter = ',', value_name = "ROLE,…", value_parser = parse_role)]
    pub roles: Vec<String>,
    /// Seconds the code works (1 to 2592000, 30 days).
    #[arg(long, default_value_t = 3600, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=2_592_000))]
    pub ttl: u64,
    /// Machines that may enroll with it (1 to 1000).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub uses: u32,
    #[command(flatten)]
    pub redis: RedisArgs,
}

#[derive(Debug, Args)]
pub struct EnrollListArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
}

#[derive(Debug, Args)]
pub struct EnrollRevokeArgs {
    /// The start of the code's hash, as `jsacc enroll list` shows it (at least 6 hex digits).
    #[arg(value_parser = parse_code_prefix, value_name = "PREFIX")]
    pub prefix: String,
    #[command(flatten)]
    pub redis: RedisArgs,
}

fn parse_code_prefix(s: &str) -> Result<String, String> {
    crate::enroll::check_prefix(s)?;
    Ok(s.to_ascii_lowercase())
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create (or replace) the token of an agent and print it on the last line; it is shown only once.
    Add(TokenAddArgs),
    /// Revoke the token of an agent: its requests are refused from then on (within a few seconds).
    Revoke(TokenArgs),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Grid id of the agent.
    #[arg(long)]
    pub gid: u64,
    /// Node id of the agent.
    #[arg(long)]
    pub nid: u64,
    #[command(flatten)]
    pub redis: RedisArgs,
}

#[derive(Debug, Args)]
pub struct TokenAddArgs {
    #[command(flatten)]
    pub agent: TokenArgs,
    /// Roles the token grants, comma-separated (letters, digits, `-`, `_`, `.`): commands for a
    /// role go only to agents whose token grants it. Roles an agent claims in its own config
    /// beyond these are ignored (its hello answer warns). Without --roles the agent has none.
    #[arg(long, value_delimiter = ',', value_name = "ROLE,…", value_parser = parse_role)]
    pub roles: Vec<String>,
}

fn parse_role(s: &str) -> Result<String, String> {
    let role = s.trim();
    crate::auth::check_role(role)?;
    Ok(role.to_owned())
}

#[derive(Debug, Args, Clone)]
pub struct RedisArgs {
    /// Redis to use: HOST:PORT; redis://[USER:PASS@]HOST:PORT[/DB] (rediss:// for TLS);
    /// redis+sentinel://[USER:PASS@]H:P[,H:P…]/MASTER[/DB] (the sentinels, and the name they
    /// monitor the primary under: failovers are followed); redis+cluster://[USER:PASS@]H:P[,H:P…]
    /// (any nodes of a Redis Cluster). rediss+sentinel:// and rediss+cluster:// speak TLS.
    /// Without it, the private redis-server of --data-dir is used (started if needed).
    #[arg(
        short = 'r',
        long = "redis",
        env = "JSACC_REDIS",
        value_name = "HOST:PORT|URL"
    )]
    pub redis: Option<String>,
    /// Replicas that must confirm a write (Redis `WAIT`) before jsacc acknowledges it: the
    /// answer to an agent's result, logs or stats, and taking a routed command off its routing
    /// list. When fewer confirm within --redis-wait-ms, the agent is answered 503 (it retries)
    /// and a command stays to be routed again. Default: 1 for sentinel and cluster targets
    /// (a failover then loses nothing acknowledged), 0 for a single server.
    #[arg(long, env = "JSACC_REDIS_WAIT_REPLICAS", value_name = "N")]
    pub redis_wait_replicas: Option<usize>,
    /// Milliseconds a write may wait for --redis-wait-replicas replicas.
    #[arg(
        long,
        env = "JSACC_REDIS_WAIT_MS",
        default_value_t = 500,
        value_name = "MS",
        value_parser = milliseconds()
    )]
    pub redis_wait_ms: u64,
    /// PEM CA certificate that signed the Redis server's certificate, for a rediss:// URL whose
    /// server the system's trust store does not know.
    #[arg(long, env = "JSACC_REDIS_CA", value_name = "PEM")]
    pub redis_ca: Option<PathBuf>,
    /// Directory for the self-signed certificate and the private redis-server's data.
    #[arg(
        long,
        env = "JSACC_DATA_DIR",
        default_value = "./jsacc-data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// TCP port of the HTTPS service the agents connect to.
    #[arg(short = 'p', long, env = "JSACC_PORT", default_value_t = 4000)]
    pub port: u16,
    /// Address to listen on.
    #[arg(
        long,
        env = "JSACC_BIND",
        default_value = "0.0.0.0",
        value_name = "ADDR"
    )]
    pub bind: IpAddr,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// PEM certificate (chain) to serve; with --tls-key. Without both, a self-signed certificate
    /// is generated once into <data-dir>/tls and its path and fingerprint are printed.
    #[arg(long, env = "JSACC_TLS_CERT", requires = "tls_key", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "JSACC_TLS_KEY", requires = "tls_cert", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS (tokens then cross the network in clear: tests and
    /// TLS-terminating proxies only).
    #[arg(long, env = "JSACC_INSECURE_HTTP", conflicts_with_all = ["tls_cert", "tls_key"])]
    pub insecure_http: bool,
    /// Seconds a command handed to an agent may stay unacknowledged before it is delivered again.
    #[arg(
        long,
        env = "JSACC_LEASE",
        default_value_t = 60,
        value_name = "SECS",
        value_parser = seconds()
    )]
    pub lease: u64,
    /// Seconds results (`cmds_queue_<id>`) and job records (`job:<id>`) are kept.
    #[arg(
        long,
        env = "JSACC_RESULT_TTL",
        default_value_t = 86_400,
        value_name = "SECS",
        value_parser = seconds()
    )]
    pub result_ttl: u64,
    /// Largest body of an agent's result or logs post, in bytes; larger ones are answered 413
    /// (agents keep each result under 1 MiB and split batches). A hello takes at most 64 KiB.
    #[arg(
        long,
        env = "JSACC_MAX_BODY",
        default_value_t = 16 << 20,
        value_name = "BYTES",
        value_parser = bytes()
    )]
    pub max_body: usize,
    /// Largest body of an agent's stats post, in bytes (stats are written in chunks, but a
    /// smaller post keeps Redis responsive).
    #[arg(
        long,
        env = "JSACC_MAX_STATS_BODY",
        default_value_t = 4 << 20,
        value_name = "BYTES",
        value_parser = bytes()
    )]
    pub max_stats_body: usize,
    /// Largest command routed from `cmds_queue`, in bytes; a larger one is dead-lettered and
    /// answered `ERROR` (it would not fit an agent's poll).
    #[arg(
        long,
        env = "JSACC_MAX_COMMAND",
        default_value_t = 8 << 20,
        value_name = "BYTES",
        value_parser = bytes()
    )]
    pub max_command: usize,
    /// Seconds a client has to send a request's headers (a connection that does not is closed).
    #[arg(
        long,
        env = "JSACC_HEADER_TIMEOUT",
        default_value_t = 10,
        value_name = "SECS",
        value_parser = seconds()
    )]
    pub header_timeout: u64,
    /// Seconds an agent has to send a request's whole body once its token is accepted.
    #[arg(
        long,
        env = "JSACC_BODY_TIMEOUT",
        default_value_t = 60,
        value_name = "SECS",
        value_parser = seconds()
    )]
    pub body_timeout: u64,
    /// Most connections served at once, 1 to 1000000; more are closed as soon as they are
    /// accepted (each agent keeps one or two open).
    #[arg(
        long,
        env = "JSACC_MAX_CONNECTIONS",
        default_value_t = 10_000,
        value_name = "N",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_CONNECTIONS)
    )]
    pub max_connections: usize,
    /// File holding the token Prometheus must send (`Authorization: Bearer …`) for `/metrics`
    /// and `/metrics/agents` (at least 16 characters). Without it they answer only requests from
    /// a loopback address.
    #[arg(long, env = "JSACC_METRICS_TOKEN_FILE", value_name = "FILE")]
    pub metrics_token_file: Option<PathBuf>,
    /// Times a command is tried when Redis refuses its writes with an error that is not an
    /// outage (a key of the wrong type, say) before it is dead-lettered, 1 to 1000.
    #[arg(
        long,
        env = "JSACC_ROUTE_TRIES",
        default_value_t = 5,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..=MAX_ROUTE_TRIES)
    )]
    pub route_tries: u32,
    /// Most commands moved from `cmds_queue` per routing step, 1 to 10000.
    #[arg(
        long,
        env = "JSACC_ROUTE_BATCH",
        default_value_t = 256,
        value_name = "N",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_ROUTE_BATCH)
    )]
    pub route_batch: usize,
    /// Length cap of `cmds_queue:dead`.
    #[arg(
        long,
        env = "JSACC_DEAD_MAXLEN",
        default_value_t = 10_000,
        value_name = "N",
        value_parser = count()
    )]
    pub dead_maxlen: usize,
    /// Seconds since its last poll within which an agent counts as live (for `role` routing and metrics).
    #[arg(
        long,
        env = "JSACC_LIVE_WINDOW",
        default_value_t = 90,
        value_name = "SECS",
        value_parser = seconds()
    )]
    pub live_window: u64,
    /// Lines kept of one job's live output (`output:<id>`, all its agents together); past it,
    /// one marker line says the output was capped (each result still has the last lines).
    #[arg(
        long,
        env = "JSACC_OUTPUT_MAXLEN",
        default_value_t = 10_000,
        value_name = "N",
        value_parser = count()
    )]
    pub output_maxlen: usize,
    /// Bytes of lines kept of one job's live output (all its agents together); past it, as
    /// past --output-maxlen, one marker line and nothing more.
    #[arg(
        long,
        env = "JSACC_OUTPUT_MAXBYTES",
        default_value_t = 16 << 20,
        value_name = "BYTES",
        value_parser = bytes()
    )]
    pub output_maxbytes: usize,
    /// Length cap (`MAXLEN ~`) of each `log.<domain>.<name>` stream and of `alerts`.
    #[arg(
        long,
        env = "JSACC_LOG_MAXLEN",
        default_value_t = 100_000,
        value_name = "N",
        value_parser = count()
    )]
    pub log_maxlen: usize,
    /// Approximate length cap of each agent's stats stream `stats:{gid:nid}` (flushed batches).
    #[arg(
        long,
        env = "JSACC_STATS_MAXLEN",
        default_value_t = 10_000,
        value_name = "N",
        value_parser = count()
    )]
    pub stats_maxlen: usize,
    /// Largest `data` of a forwarded log message, in bytes; a longer one is cut at a UTF-8
    /// boundary and ends with `… [cut: N bytes]` (N: the bytes left out).
    #[arg(
        long,
        env = "JSACC_LOG_MAX_MESSAGE",
        default_value_t = 64 << 10,
        value_name = "BYTES",
        value_parser = bytes()
    )]
    pub log_max_message: usize,
    /// Seconds a log stream (`log.<domain>.<name>`, `alerts`) and its `{…}:seq` mark live after
    /// their last append: a stream idle that long disappears.
    #[arg(
        long,
        env = "JSACC_LOG_TTL",
        default_value_t = 7 * 86_400,
        value_name = "SECS",
        value_parser = seconds()
    )]
    pub log_ttl: u64,
    /// Most metric names kept in an agent's `stats:{gid:nid}:latest`; the values of further
    /// names are not stored (counted in the answer's `dropped_metrics` and in
    /// `jsacc_stats_metrics_dropped_total`).
    #[arg(
        long,
        env = "JSACC_STATS_MAX_METRICS",
        default_value_t = 10_000,
        value_name = "N",
        value_parser = count()
    )]
    pub stats_max_metrics: usize,
    /// Seconds an agent's stats keys (`stats:{gid:nid}`, `:latest`, `:seen`) live after its
    /// last stats post.
    #[arg(
        long,
        env = "JSACC_STATS_TTL",
        default_value_t = 7 * 86_400,
        value_name = "SECS",
        value_parser = seconds()
    )]
    pub stats_ttl: u64,
}

/// Settings of a running controller, resolved from [`ServeArgs`].
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub lease: Duration,
    pub result_ttl: Duration,
    pub max_body: usize,
    pub max_stats_body: usize,
    pub max_command: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    /// SHA-256 of the metrics token (`--metrics-token-file`).
    pub metrics_token: Option<String>,
    pub route_tries: u32,
    pub route_batch: usize,
    pub dead_maxlen: usize,
    pub live_window: Duration,
    /// Longest park of one long-poll, whatever `wait` the agent asks for.
    pub max_wait: Duration,
    /// How often a parked poll looks at Redis even without a wake-up (pub/sub can miss one).
    pub recheck: Duration,
    /// Results kept per job (a recurring job posts one per run).
    pub max_results: usize,
    /// Length cap of the log streams and `alerts`.
    pub log_maxlen: usize,
    pub output_maxlen: usize,
    pub output_maxbytes: usize,
    pub stats_maxlen: usize,
    /// Longest `data` of a log message appended (longer ones are cut).
    pub log_max_message: usize,
    /// Lifetime of a log stream and its mark after its last append.
    pub log_ttl: Duration,
    /// Most fields of an agent's `stats:{g:n}:latest`.
    pub stats_max_metrics: usize,
    /// Lifetime of an agent's stats keys after its last post.
    pub stats_ttl: Duration,
    /// Replicas that must confirm a write before it is acknowledged (`WAIT`).
    pub wait_replicas: usize,
    pub wait_timeout: Duration,
}

impl Config {
    /// `default_wait_replicas`: the target's default for `--redis-wait-replicas`.
    pub fn from_args(args: &ServeArgs, default_wait_replicas: usize) -> Config {
        Config {
            wait_replicas: args
                .redis
                .redis_wait_replicas
                .unwrap_or(default_wait_replicas),
            wait_timeout: Duration::from_millis(args.redis.redis_wait_ms.max(1)),
            listen: SocketAddr::new(args.bind, args.port),
            lease: Duration::from_secs(args.lease.max(1)),
            result_ttl: Duration::from_secs(args.result_ttl.max(1)),
            max_body: args.max_body,
            max_stats_body: args.max_stats_body,
            max_command: args.max_command.max(1024),
            header_timeout: Duration::from_secs(args.header_timeout.max(1)),
            body_timeout: Duration::from_secs(args.body_timeout.max(1)),
            max_connections: args.max_connections,
            route_tries: args.route_tries,
            route_batch: args.route_batch,
            dead_maxlen: args.dead_maxlen.max(1),
            live_window: Duration::from_secs(args.live_window.max(1)),
            log_maxlen: args.log_maxlen.max(1),
            output_maxlen: args.output_maxlen.max(1),
            output_maxbytes: args.output_maxbytes.max(MAX_LINE_BYTES),
            stats_maxlen: args.stats_maxlen.max(1),
            log_max_message: args.log_max_message.max(MIN_LOG_MESSAGE),
            log_ttl: Duration::from_secs(args.log_ttl.max(1)),
            stats_max_metrics: args.stats_max_metrics.max(1),
            stats_ttl: Duration::from_secs(args.stats_ttl.max(1)),
            ..Config::default()
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 4000)),
            lease: Duration::from_secs(60),
            result_ttl: Duration::from_secs(86_400),
            max_body: 16 << 20,
            max_stats_body: 4 << 20,
            max_command: 8 << 20,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            metrics_token: None,
            route_tries: 5,
            route_batch: 256,
            dead_maxlen: 10_000,
            live_window: Duration::from_secs(90),
            max_wait: Duration::from_secs(60),
            recheck: Duration::from_secs(5),
            max_results: 100,
            log_maxlen: 100_000,
            output_maxlen: 10_000,
            output_maxbytes: 16 << 20,
            stats_maxlen: 10_000,
            log_max_message: 64 << 10,
            log_ttl: Duration::from_secs(7 * 86_400),
            stats_max_metrics: 10_000,
            stats_ttl: Duration::from_secs(7 * 86_400),
            wait_replicas: 0,
            wait_timeout: Duration::from_millis(500),
        }
    }
}

/// Longest duration flag, in seconds (10 years, as for a command's arguments): far beyond any
/// real setting, and far from where adding it to a clock overflows (a panic on every request)
/// or Redis refuses it as a TTL (every write failing).
pub const MAX_SECONDS: u64 = schemas::args::MAX_SECONDS;
/// Largest length cap flag (streams, lists, metric names): past `i64::MAX` Redis refuses it.
pub const MAX_COUNT: usize = 1_000_000_000;
/// Largest byte size flag (1 GiB; Redis takes no string over 512 MiB anyway).
pub const MAX_BYTES: usize = 1 << 30;

/// Largest `--max-connections` (each takes a file descriptor and some memory).
pub const MAX_CONNECTIONS: u64 = 1_000_000;
/// Largest `--route-tries` (a command Redis keeps refusing is tried at most this often).
pub const MAX_ROUTE_TRIES: i64 = 1000;
/// Largest `--route-batch` (one routing step's commands are held in memory together).
pub const MAX_ROUTE_BATCH: u64 = 10_000;

/// A duration flag in seconds: at most [`MAX_SECONDS`] (clap's error names the flag).
fn seconds() -> clap::builder::RangedU64ValueParser<u64> {
    clap::builder::RangedU64ValueParser::new().range(0..=MAX_SECONDS)
}

/// A duration flag in milliseconds: at most [`MAX_SECONDS`] as milliseconds.
fn milliseconds() -> clap::builder::RangedU64ValueParser<u64> {
    clap::builder::RangedU64ValueParser::new().range(0..=MAX_SECONDS * 1000)
}

/// A length cap flag: at most [`MAX_COUNT`].
fn count() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(0..=MAX_COUNT as u64)
}

/// A size flag in bytes: at most [`MAX_BYTES`].
fn bytes() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(0..=MAX_BYTES as u64)
}

/// Smallest `--log-max-message`: room for the cut mark and some text.
pub const MIN_LOG_MESSAGE: usize = 64;

/// Smallest `--output-maxbytes`: one longest line.
const MAX_LINE_BYTES: usize = schemas::output::MAX_LINE;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_flags_parse() {
        let cli = Cli::try_parse_from(["jsacc", "-p", "4100", "-r", "localhost:6380"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.port, 4100);
        assert_eq!(cli.serve.redis.redis.as_deref(), Some("localhost:6380"));
    }

    #[test]
    fn token_add_parses() {
        let cli =
            Cli::try_parse_from(["jsacc", "token", "add", "--gid", "1", "--nid", "5"]).unwrap();
        let Some(Sub::Token(TokenCmd::Add(a))) = cli.command else {
            panic!("not token add")
        };
        assert_eq!((a.agent.gid, a.agent.nid), (1, 5));
        assert!(a.roles.is_empty());
        let cli = Cli::try_parse_from([
            "jsacc", "token", "add", "--gid", "1", "--nid", "5", "--roles", "web, db",
        ])
        .unwrap();
        let Some(Sub::Token(TokenCmd::Add(a))) = cli.command else {
            panic!("not token add")
        };
        assert_eq!(a.roles, ["web", "db"]);
        let bad = [
            "jsacc", "token", "add", "--gid", "1", "--nid", "5", "--roles", "a b",
        ];
        assert!(Cli::try_parse_from(bad).is_err());
    }

    #[test]
    fn enroll_create_parses_with_bounds() {
        let cli = Cli::try_parse_from(["jsacc", "enroll", "create", "--gid", "2"]).unwrap();
        let Some(Sub::Enroll(EnrollCmd::Create(a))) = cli.command else {
            panic!("not enroll create")
        };
        assert_eq!((a.gid, a.nid, a.ttl, a.uses), (2, None, 3600, 1));
        let ok = [
            "jsacc", "enroll", "create", "--gid", "2", "--nid", "3", "--roles", "web,db", "--ttl",
            "60", "--uses", "5",
        ];
        assert!(Cli::try_parse_from(ok).is_ok());
        for bad in [
            ["--ttl", "0"],
            ["--ttl", "2592001"],
            ["--uses", "0"],
            ["--uses", "1001"],
            ["--roles", "a b"],
        ] {
            let args = ["jsacc", "enroll", "create", "--gid", "1", bad[0], bad[1]];
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?}");
        }
        assert!(Cli::try_parse_from(["jsacc", "enroll", "revoke", "abc"]).is_err());
        assert!(Cli::try_parse_from(["jsacc", "enroll", "revoke", "ABCDEF12"]).is_ok());
    }

    #[test]
    fn dev_parses_with_defaults() {
        let cli = Cli::try_parse_from(["jsacc", "dev"]).unwrap();
        let Some(Sub::Dev(d)) = cli.command else {
            panic!("not dev")
        };
        assert_eq!((d.gid, d.nid, d.port), (1, 1, None));
        assert_eq!(d.data_dir, PathBuf::from("./jsacc-data/dev"));
        let cli = Cli::try_parse_from(["jsacc", "dev", "-p", "4100", "--roles", "web,db"]).unwrap();
        let Some(Sub::Dev(d)) = cli.command else {
            panic!("not dev")
        };
        assert_eq!(
            (d.port, d.roles),
            (Some(4100), vec!["web".into(), "db".into()])
        );
    }

    /// Issue 10: a duration flag near u64::MAX was taken, then every connection panicked adding
    /// it to a clock (`--header-timeout`, `--body-timeout`) or Redis refused every write with it
    /// as a TTL (`--result-ttl`); a length cap past i64::MAX made Redis refuse every XADD.
    #[test]
    fn durations_and_sizes_have_upper_bounds_named_in_the_error() {
        let huge = u64::MAX.to_string();
        for flag in [
            "--lease",
            "--result-ttl",
            "--header-timeout",
            "--body-timeout",
            "--live-window",
            "--log-ttl",
            "--stats-ttl",
            "--redis-wait-ms",
            "--max-body",
            "--max-stats-body",
            "--max-command",
            "--output-maxbytes",
            "--log-max-message",
            "--dead-maxlen",
            "--output-maxlen",
            "--log-maxlen",
            "--stats-maxlen",
            "--stats-max-metrics",
            "--max-connections",
            "--route-tries",
            "--route-batch",
        ] {
            let err = Cli::try_parse_from(["jsacc", flag, huge.as_str()])
                .expect_err(flag)
                .to_string();
            assert!(err.contains(flag), "{flag}: {err}");
        }
        // Counts that make no sense at 0 were raised to 1 without a word: refused instead,
        // with the range.
        for (flag, max) in [
            ("--max-connections", MAX_CONNECTIONS),
            ("--route-tries", MAX_ROUTE_TRIES as u64),
            ("--route-batch", MAX_ROUTE_BATCH),
        ] {
            let err = Cli::try_parse_from(["jsacc", flag, "0"])
                .expect_err(flag)
                .to_string();
            assert!(
                err.contains(flag) && err.contains(&format!("1..={max}")),
                "{flag}: {err}"
            );
            let over = (max + 1).to_string();
            assert!(Cli::try_parse_from(["jsacc", flag, over.as_str()]).is_err());
            let max = max.to_string();
            assert!(
                Cli::try_parse_from(["jsacc", flag, "1"]).is_ok(),
                "{flag} 1"
            );
            assert!(
                Cli::try_parse_from(["jsacc", flag, max.as_str()]).is_ok(),
                "{flag} {max}"
            );
        }
        let ten_years = MAX_SECONDS.to_string();
        let cli = Cli::try_parse_from(["jsacc", "--header-timeout", ten_years.as_str()]).unwrap();
        assert_eq!(cli.serve.header_timeout, MAX_SECONDS);
        let over = (MAX_SECONDS + 1).to_string();
        assert!(Cli::try_parse_from(["jsacc", "--result-ttl", over.as_str()]).is_err());
        // The defaults are within the bounds.
        let cli = Cli::try_parse_from(["jsacc"]).unwrap();
        assert_eq!(
            (cli.serve.result_ttl, cli.serve.max_body),
            (86_400, 16 << 20)
        );
        let s = &cli.serve;
        assert_eq!(
            (s.max_connections, s.route_tries, s.route_batch),
            (10_000, 5, 256)
        );
    }

    #[test]
    fn cert_without_key_is_refused() {
        assert!(Cli::try_parse_from(["jsacc", "--tls-cert", "c.pem"]).is_err());
        assert!(Cli::try_parse_from([
            "jsacc",
            "--insecure-http",
            "--tls-cert",
            "c",
            "--tls-key",
            "k"
        ])
        .is_err());
    }
}
