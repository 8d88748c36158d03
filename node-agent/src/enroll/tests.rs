//! The parts of enrollment that need no controller: the end-to-end test (tests/e2e/enroll.rs)
//! runs the real `jsacc` and `jsagent`.

use super::*;

fn flags(controller: &str) -> EnrollFlags {
    EnrollFlags {
        code: Some("jse_x".into()),
        controller: controller.into(),
        ca_fingerprint: None,
        data_dir: None,
        nid: None,
        insecure_http: false,
        install_service: false,
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jsagent-enroll-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn plain_http_is_refused_unless_loopback_or_insecure() {
    assert!(controller_url(&flags("http://127.0.0.1:4000")).is_ok());
    let e = controller_url(&flags("http://ctl.example:4000")).unwrap_err();
    assert!(e.to_string().contains("--insecure-http"), "{e}");
    let mut insecure = flags("http://ctl.example:4000");
    insecure.insecure_http = true;
    assert!(controller_url(&insecure).is_ok());
    assert!(controller_url(&flags("ftp://x")).is_err());
}

#[test]
fn an_enrolled_data_dir_is_refused_naming_the_agent() {
    let dir = temp_dir("enrolled");
    let config = dir.join("agent.toml");
    assert!(refuse_enrolled(&config, &dir).is_ok());
    std::fs::write(&config, "gid = 3\nnid = 9\n").unwrap();
    let e = refuse_enrolled(&config, &dir).unwrap_err().to_string();
    assert!(e.contains("already enrolled as 3:9"), "{e}");
    assert!(e.contains(&format!("delete {}", dir.display())), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_written_config_runs_the_agent() {
    let dir = temp_dir("written");
    let granted = Granted {
        gid: 2,
        nid: 7,
        roles: vec!["web".into()],
        token: "jsa_secret".into(),
    };
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let der = cert.cert.der().to_vec();
    let url = Url::parse("https://localhost:4000/").unwrap();
    write_files(&dir, &url, &granted, Some(&der), false).unwrap();
    let flags = crate::config::Flags {
        config: Some(dir.join("agent.toml")),
        ..Default::default()
    };
    let config = crate::config::Config::load(flags).expect("the written config loads");
    assert_eq!((config.gid, config.nid), (2, 7));
    assert_eq!(config.roles, ["web"]);
    assert_eq!(config.token.secret(), "jsa_secret");
    assert_eq!(config.data_dir, dir);
    assert!(config.trust.is_some());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in ["token", "agent.toml"] {
            let mode = std::fs::metadata(dir.join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }
    assert!(refuse_enrolled(&dir.join("agent.toml"), &dir).is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_refusal_shows_the_controllers_message() {
    let body = br#"{"error":"used_code","message":"enrollment code already used"}"#;
    assert_eq!(
        refusal(reqwest::StatusCode::FORBIDDEN, body),
        "enrollment code already used"
    );
    assert_eq!(
        refusal(reqwest::StatusCode::BAD_GATEWAY, b"proxy down"),
        "502 Bad Gateway: proxy down"
    );
}

#[test]
fn the_code_comes_from_the_argument_stdin_or_the_environment() {
    let no_stdin = || -> std::io::Result<String> { panic!("stdin read") };
    let env = || Some("jse_env".to_owned());
    assert_eq!(
        enroll_code(Some("jse_arg"), env(), no_stdin).unwrap(),
        "jse_arg"
    );
    assert_eq!(enroll_code(None, env(), no_stdin).unwrap(), "jse_env");
    let stdin = || Ok("  jse_stdin\n".to_owned());
    assert_eq!(enroll_code(Some("-"), env(), stdin).unwrap(), "jse_stdin");
    let e = enroll_code(None, None, no_stdin).unwrap_err().to_string();
    assert!(e.contains(CODE_ENV), "{e}");
    assert!(enroll_code(Some("-"), None, || Ok("\n".to_owned())).is_err());
}

#[test]
fn a_new_data_dir_is_made_and_restricted() {
    let parent = temp_dir("prepare-new");
    let dir = parent.join("a").join("jsagent");
    prepare_dir(&dir).unwrap();
    assert!(dir.is_dir());
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "the probe is gone"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        // Only the directory this command made.
        assert_ne!(mode(&parent.join("a")), 0o700);
    }
    std::fs::remove_dir_all(parent).unwrap();
}

#[test]
fn an_existing_directory_that_is_not_jsagents_is_refused_and_left_alone() {
    let dir = temp_dir("prepare-foreign");
    std::fs::write(dir.join("something-else"), "x").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let e = prepare_dir(&dir).unwrap_err().to_string();
    assert!(e.contains("holds other things (something-else)"), "{e}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "not restricted");
    }
    // An empty one, or one holding jsagent's files (a failed enrollment), is taken.
    std::fs::remove_file(dir.join("something-else")).unwrap();
    prepare_dir(&dir).unwrap();
    std::fs::write(dir.join("token"), "x").unwrap();
    std::fs::create_dir(dir.join("logs")).unwrap();
    prepare_dir(&dir).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_data_dir_that_cannot_be_made_is_refused_before_the_code_is_sent() {
    let parent = temp_dir("prepare-blocked");
    // A file where a directory should be: fails even for root.
    std::fs::write(parent.join("file"), "x").unwrap();
    let e = prepare_dir(&parent.join("file").join("jsagent")).unwrap_err();
    assert!(matches!(e, EnrollError::NotWritable { .. }), "{e:?}");
    assert!(
        e.to_string().contains("the enrollment code was not used"),
        "{e}"
    );
    std::fs::remove_dir_all(parent).unwrap();
}
