//! The parts of enrollment that need no controller: the end-to-end test (tests/e2e/enroll.rs)
//! runs the real `jsacc` and `jsagent`.

use super::*;

fn flags(controller: &str) -> EnrollFlags {
    EnrollFlags {
        code: "jse_x".into(),
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
    let chain = vec![cert.cert.der().to_vec()];
    let url = Url::parse("https://localhost:4000/").unwrap();
    write_files(&dir, &url, &granted, Some(&chain), false).unwrap();
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
