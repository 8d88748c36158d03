use super::*;

fn flags(args: &[&str]) -> Flags {
    let argv = std::iter::once("jsagent").chain(args.iter().copied());
    Flags::try_parse_from(argv).unwrap()
}

/// The least flags an agent runs with (a loopback controller, agent 1:1).
fn base() -> Flags {
    flags(&[
        "--controller",
        "http://127.0.0.1",
        "--gid",
        "1",
        "--nid",
        "1",
    ])
}

fn file(text: &str) -> Result<FileConfig, ConfigError> {
    parse_file(Path::new("agent.toml"), text)
}

fn resolve(flags: Flags, file: FileConfig) -> Result<Config, ConfigError> {
    Config::resolve(flags, file, Some("t0ken".into()), "/opt/jsagent".into())
}

#[test]
fn unknown_key_is_an_error_naming_it() {
    let err = file("controller = \"http://x\"\nmax_jobz = 3\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_jobz"), "{err}");
    assert!(err.contains("agent.toml"), "{err}");
    let err = file("[interpreters]\nperl = \"perl\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("perl"), "{err}");
}

#[test]
fn every_documented_key_is_accepted() {
    let text = r#"
            controller = "http://127.0.0.1:4000"
            gid = 1
            nid = 5
            roles = ["storage", "web"]
            token_file = "/etc/jsagent/token"
            ca_cert = "/etc/jsagent/ca.pem"
            insecure_http = false
            data_dir = "/var/lib/jsagent"
            jumpscripts_dir = "/opt/jumpscripts"
            max_jobs = 4
            stats_interval = 30
            stats_flush_interval = 2.5
            statsd_listen = "127.0.0.1:8125"
            log_db_max_size = 1000000
            log_db_keep = 2
            loglevels_db = "1-9"
            loglevels_ac = "8,9"
            log_batch_size = 10
            log_flush_interval = 1
            output = false
            output_max_lines = 500
            [interpreters]
            python = "/usr/bin/python3"
            lua = "lua"
        "#;
    let cfg = file(text).unwrap();
    let cfg = Config::resolve(
        Flags::default(),
        FileConfig {
            token_file: None,
            ..cfg
        },
        Some("x".into()),
        "/r".into(),
    )
    .unwrap();
    assert_eq!((cfg.gid, cfg.nid, cfg.max_jobs), (1, 5, 4));
    assert_eq!(cfg.roles, ["storage", "web"]);
    assert_eq!(cfg.stats_flush_interval, Duration::from_millis(2500));
    assert_eq!(cfg.interpreters.python, "/usr/bin/python3");
    assert_eq!(cfg.statsd_listen, Some("127.0.0.1:8125".parse().unwrap()));
    assert_eq!((cfg.output, cfg.output_max_lines), (false, 500));
}

#[test]
fn live_output_is_on_by_default_and_the_flag_beats_the_file() {
    let base = [
        "--controller",
        "http://127.0.0.1",
        "--gid",
        "0",
        "--nid",
        "0",
    ];
    let cfg = resolve(flags(&base), FileConfig::default()).unwrap();
    assert_eq!((cfg.output, cfg.output_max_lines), (true, 10_000));
    let off = flags(&[&base[..], &["--output", "false"]].concat());
    assert!(!resolve(off, FileConfig::default()).unwrap().output);
    let on = flags(&[&base[..], &["--output", "true"]].concat());
    assert!(resolve(on, file("output = false").unwrap()).unwrap().output);
    let err = resolve(flags(&base), file("output_max_lines = 0").unwrap()).unwrap_err();
    assert!(err.to_string().contains("output_max_lines"), "{err}");
}

#[test]
fn the_shipped_example_config_is_accepted() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/agent.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let cfg = Config::resolve(
        Flags::default(),
        parse_file(&path, &text).unwrap(),
        None,
        "/".into(),
    );
    // Its token file does not exist here; everything before the token resolved.
    let err = cfg.unwrap_err().to_string();
    assert!(err.contains("cannot read token file"), "{err}");
}

#[test]
fn the_shipped_example_config_shows_every_key() {
    // The README sends readers to deploy/config/agent.toml for "every key with its default".
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/agent.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // serde names every field it knows in the error about an unknown one.
    let err = file("no_such_key = 1").unwrap_err().to_string();
    let (_, known) = err.split_once("expected one of").expect(&err);
    let keys: Vec<&str> = known.split('`').skip(1).step_by(2).collect();
    assert!(keys.contains(&"max_file_size"), "{err}");
    for key in keys {
        let shown = text.lines().any(|line| {
            let line = line.trim_start_matches(['#', ' ']);
            line.starts_with(&format!("{key} ="))
                || line.starts_with(&format!("[{key}]"))
                || line.starts_with(&format!("[[{key}]]"))
        });
        assert!(
            shown,
            "deploy/config/agent.toml does not show the key `{key}`"
        );
    }
}

#[test]
fn flags_override_the_file() {
    let f =
        file("controller = \"http://file:1\"\ngid = 1\nnid = 2\nmax_jobs = 3\nroles = [\"a\"]\n")
            .unwrap();
    let cfg = resolve(
        flags(&[
            "--nid",
            "7",
            "--controller",
            "http://127.0.0.2:2/",
            "--roles",
            "x, y,",
        ]),
        f,
    )
    .unwrap();
    assert_eq!(cfg.controller.as_str(), "http://127.0.0.2:2/");
    assert_eq!((cfg.gid, cfg.nid, cfg.max_jobs), (1, 7, 3));
    assert_eq!(cfg.roles, ["x", "y"]);
}

#[test]
fn defaults_apply() {
    let cfg = resolve(
        flags(&[
            "--controller",
            "http://127.0.0.1",
            "--gid",
            "0",
            "--nid",
            "0",
        ]),
        FileConfig::default(),
    )
    .unwrap();
    assert_eq!(cfg.max_jobs, 16);
    assert_eq!(cfg.stats_interval, Duration::from_secs(30));
    assert_eq!(cfg.log_db_max_size, 100_000_000);
    assert_eq!(cfg.log_db_keep, 5);
    assert_eq!(
        cfg.interpreters,
        Interpreters {
            python: "python3".into(),
            lua: "lua5.4".into()
        }
    );
    assert!(cfg.data_dir.is_absolute() && cfg.data_dir.ends_with("jsagent-data"));
    assert_eq!(cfg.jumpscripts_dir, cfg.data_dir.join("jumpscripts"));
}

#[test]
fn missing_settings_name_flag_env_and_key() {
    let err = resolve(Flags::default(), FileConfig::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--controller") && err.contains("JSAGENT_CONTROLLER"),
        "{err}"
    );
    let err = resolve(
        flags(&["--controller", "http://127.0.0.1", "--gid", "1"]),
        FileConfig::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("--nid") && err.contains("`nid`"), "{err}");
    let f = base();
    let err = Config::resolve(f, FileConfig::default(), None, "/".into())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("JSAGENT_TOKEN") && err.contains("--token-file"),
        "{err}"
    );
}

#[test]
fn https_needs_a_ca_cert() {
    let f = flags(&["--controller", "https://c:4000", "--gid", "1", "--nid", "1"]);
    let err = resolve(f, FileConfig::default()).unwrap_err().to_string();
    assert!(err.contains("--ca-cert"), "{err}");
}

#[test]
fn token_file_wins_over_env_and_is_trimmed() {
    let dir = std::env::temp_dir().join(format!("jsagent-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("token");
    std::fs::write(&path, "s3cret\n").unwrap();
    let f = base();
    let f = Flags {
        token_file: Some(path.clone()),
        ..f
    };
    let cfg = Config::resolve(f, FileConfig::default(), Some("env".into()), "/".into()).unwrap();
    assert_eq!(cfg.token.secret(), "s3cret");
    assert!(!format!("{cfg:?}").contains("s3cret"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_values_are_explained() {
    let err = resolve(
        Flags {
            max_jobs: Some(0),
            ..base()
        },
        FileConfig::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("max_jobs"), "{err}");
    let err = resolve(
        Flags {
            controller: Some("ftp://x".into()),
            ..base()
        },
        FileConfig::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("ftp://x"), "{err}");
    let err = resolve(base(), file("stats_interval = -1").unwrap()).unwrap_err();
    assert!(err.to_string().contains("stats_interval"), "{err}");
    let err = file("gid = \"one\"").unwrap_err();
    assert!(err.to_string().contains("gid"), "{err}");
}

/// Issue 10 item 10: a duration key near u64::MAX was taken, then the stats flush and the
/// process sampler panicked adding it to a clock (and the job waited for its result forever).
#[test]
fn duration_keys_have_an_upper_bound_named_in_the_error() {
    for key in [
        "stats_interval",
        "stats_flush_interval",
        "log_flush_interval",
        "restart_backoff_max",
    ] {
        for value in ["9223372036854775807", "1e20", "315360001"] {
            let err = resolve(base(), file(&format!("{key} = {value}")).unwrap()).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(key) && text.contains("at most 315360000"),
                "{key} = {value}: {text}"
            );
        }
        assert!(resolve(base(), file(&format!("{key} = 315360000")).unwrap()).is_ok());
    }
}

/// Issue 10: `log_batch_size = 0` and the other count and size keys were taken unchecked (0
/// silently raised to 1, or a log store rotated after every write; a huge `max_jobs` panicked
/// the supervisor).
#[test]
fn count_and_size_keys_are_bounded_naming_the_key() {
    let refused = |text: &str| {
        resolve(base(), file(text).expect(text))
            .expect_err(text)
            .to_string()
    };
    for (key, low, high, range) in [
        ("max_jobs", "0", "10001", "1 to 10000"),
        (
            "log_db_max_size",
            "0",
            "1099511627777",
            "65536 to 1099511627776 bytes",
        ),
        ("log_db_keep", "", "10001", "0 to 10000"),
        ("log_batch_size", "0", "100001", "1 to 100000"),
        ("output_max_lines", "0", "1000000001", "1 to 1000000000"),
        (
            "max_file_size",
            "0",
            "9223372036854775807",
            "1 to 1099511627776 bytes",
        ),
    ] {
        for value in [low, high].into_iter().filter(|v| !v.is_empty()) {
            let err = refused(&format!("{key} = {value}"));
            assert!(
                err.contains(key) && err.contains(range) && err.ends_with(&format!("not {value}")),
                "{key} = {value}: {err}"
            );
        }
        // Negative or fractional: refused by the file's types, naming the key.
        let err = file(&format!("{key} = -1")).unwrap_err().to_string();
        assert!(err.contains(key), "{key} = -1: {err}");
        let err = file(&format!("{key} = 1.5")).unwrap_err().to_string();
        assert!(err.contains(key), "{key} = 1.5: {err}");
    }
    // The flag is bounded as its key is.
    let err = resolve(
        flags(&[
            "--max-jobs",
            "100000",
            "--controller",
            "http://127.0.0.1",
            "--gid",
            "1",
            "--nid",
            "1",
        ]),
        FileConfig::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("--max-jobs") && err.contains("1 to 10000"),
        "{err}"
    );
    // The bounds themselves are taken.
    let text = "max_jobs = 10000\nlog_db_max_size = 65536\nlog_db_keep = 0\n\
        log_batch_size = 100000\noutput_max_lines = 1\nmax_file_size = 1099511627776\n";
    let cfg = resolve(base(), file(text).unwrap()).unwrap();
    assert_eq!(
        (
            cfg.max_jobs,
            cfg.log_db_max_size,
            cfg.log_db_keep,
            cfg.log_batch_size
        ),
        (10_000, 65_536, 0, 100_000)
    );
    assert_eq!((cfg.output_max_lines, cfg.max_file_size), (1, 1 << 40));
}

fn url(raw: &str) -> Url {
    Url::parse(raw).unwrap()
}

#[test]
fn loopback_hosts_are_this_machine_only() {
    for this in [
        "http://127.0.0.1:4000",
        "http://127.9.8.7",
        "http://[::1]:4000/x",
        "http://localhost:4000",
        "http://LocalHost.:1",
        "http://[::ffff:127.0.0.1]",
    ] {
        assert!(is_loopback(&url(this)), "{this}");
    }
    for other in [
        "http://128.0.0.1",
        "http://10.0.0.5:4000",
        "http://[::2]",
        "http://localhost.example.com",
        "http://mylocalhost",
        "http://controller:4000",
    ] {
        assert!(!is_loopback(&url(other)), "{other}");
    }
}

#[test]
fn plain_http_off_this_machine_is_refused_with_what_to_do() {
    let f = flags(&[
        "--controller",
        "http://10.0.0.5:4000",
        "--gid",
        "1",
        "--nid",
        "1",
    ]);
    let err = resolve(f, FileConfig::default()).unwrap_err();
    assert!(matches!(err, ConfigError::PlainHttp(_)), "{err}");
    let err = err.to_string();
    for hint in [
        "http://10.0.0.5:4000",
        "in clear",
        "https://",
        "--ca-cert",
        "--insecure-http",
        "JSAGENT_INSECURE_HTTP",
        "insecure_http",
    ] {
        assert!(err.contains(hint), "{hint}: {err}");
    }
    // Loopback needs no flag; https needs none either.
    let f = flags(&[
        "--controller",
        "http://127.0.0.1:4000",
        "--gid",
        "1",
        "--nid",
        "1",
    ]);
    assert!(resolve(f, FileConfig::default()).is_ok());
}

#[test]
fn insecure_http_allows_plain_http_from_flag_or_file() {
    let args = [
        "--controller",
        "http://10.0.0.5:4000",
        "--gid",
        "1",
        "--nid",
        "1",
    ];
    let f = flags(&[&args[..], &["--insecure-http"]].concat());
    assert!(resolve(f, FileConfig::default()).is_ok());
    let cfg = resolve(flags(&args), file("insecure_http = true").unwrap()).unwrap();
    assert_eq!(cfg.controller.as_str(), "http://10.0.0.5:4000/");
    assert!(resolve(flags(&args), file("insecure_http = false").unwrap()).is_err());
}

#[test]
fn help_documents_insecure_http_and_its_variable() {
    use clap::CommandFactory;
    let help = Flags::command().render_long_help().to_string();
    assert!(help.contains("--insecure-http"), "{help}");
    assert!(help.contains("JSAGENT_INSECURE_HTTP"), "{help}");
}

#[test]
fn an_unreadable_ca_cert_is_a_config_error_at_start() {
    let f = flags(&[
        "--controller",
        "https://127.0.0.1:4000",
        "--gid",
        "1",
        "--nid",
        "1",
        "--ca-cert",
        "/nonexistent/ca.pem",
    ]);
    let err = resolve(f, FileConfig::default()).unwrap_err();
    assert!(matches!(err, ConfigError::Trust(_)), "{err}");
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}

#[test]
fn job_tables_become_config_jobs_of_the_resolved_agent() {
    let f = file(
        "controller = \"http://127.0.0.1\"\ngid = 1\nnid = 5\n\
         [[job]]\nid = \"backup\"\ncmd = \"/bin/true\"\nevery = 60\n",
    )
    .unwrap();
    // The flag's node id wins over the file's, in the job ids too.
    let cfg = resolve(flags(&["--nid", "7"]), f).unwrap();
    assert_eq!(cfg.jobs.len(), 1);
    assert_eq!(cfg.jobs[0].id, "cfg:1:7:backup");
    let err = resolve(
        Flags::default(),
        file(
            "controller = \"http://127.0.0.1\"\ngid = 1\nnid = 5\n[[job]]\nid = \"b\"\nevry = 6\n",
        )
        .unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("job[1] (id \"b\"): unknown key `evry`"),
        "{err}"
    );
}
