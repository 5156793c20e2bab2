//! TLS to PostgreSQL: a server that refuses TCP without TLS, a private CA given with
//! `RETRO_PG_CA_FILE`; an unknown CA or `sslmode=disable` are clear errors, never a downgrade.

use crate::common::{command, retro};

#[test]
fn tls_connections_verify_the_server_and_never_downgrade() {
    let server = pgtest::PgServer::start_with_tls();
    let ca = server.ca_file().unwrap();
    let db = server.create_database();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let url = format!("{db}?sslmode=require");

    // With the CA: everything works (and the server accepts TLS connections only).
    for args in [
        vec!["init", url.as_str()],
        vec![
            "--depot",
            &url,
            "apply",
            &command("accounts/a", "open", r#"{"owner":"A"}"#),
        ],
        vec!["--depot", &url, "log", "--oneline"],
        vec!["--depot", &url, "fsck"],
    ] {
        let out = retro(w, &args)
            .env("RETRO_PG_CA_FILE", &ca)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "retro {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Without it, the certificate does not verify.
    let out = retro(w, &["--depot", &url, "log"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("retro: error: could not connect to PostgreSQL"),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");

    // Without TLS, the server refuses (pg_hba: hostnossl reject).
    let plain = format!("{db}?sslmode=disable");
    let out = retro(w, &["--depot", &plain, "log"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not connect to PostgreSQL"));

    // A CA file that does not exist is named in the error.
    let out = retro(w, &["--depot", &url, "log"])
        .env("RETRO_PG_CA_FILE", w.join("missing.pem"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("RETRO_PG_CA_FILE") && stderr.contains("missing.pem"),
        "{stderr}"
    );
}
