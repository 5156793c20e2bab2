//! The Host check (DNS rebinding: a page of another site that resolves its name to this machine
//! must not reach the API).

use std::net::SocketAddr;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};

use crate::error::ApiError;

/// The Host headers the server answers (DNS rebinding: a page of another site that resolves its
/// name to this machine must not reach the API).
pub(crate) struct Hosts {
    pub(crate) any: bool,
    port: u16,
    /// Names accepted alone or with the listening port.
    names: Vec<String>,
    /// `name:port` values accepted exactly.
    exact: Vec<String>,
}

impl Hosts {
    pub(crate) fn new(bound: SocketAddr, allow: &[String]) -> Hosts {
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
            .map(str::to_owned)
            .into();
        if !bound.ip().is_unspecified() {
            names.push(match bound.ip() {
                std::net::IpAddr::V4(ip) => ip.to_string(),
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            });
        }
        let mut hosts = Hosts {
            any: false,
            port: bound.port(),
            names,
            exact: Vec::new(),
        };
        for host in allow {
            let host = host.trim().to_ascii_lowercase();
            if host == "*" {
                hosts.any = true;
            } else if split_host(&host).is_some_and(|(_, port)| !port.is_empty()) {
                hosts.exact.push(host);
            } else {
                hosts.names.push(host);
            }
        }
        hosts
    }

    pub(crate) fn allows(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        let host = host.to_ascii_lowercase();
        if self.exact.contains(&host) {
            return true;
        }
        let Some((name, port)) = split_host(&host) else {
            return false;
        };
        let port_ok = port.is_empty() || port.parse::<u16>().ok() == Some(self.port);
        port_ok && self.names.iter().any(|n| n == name)
    }
}

/// `name[:port]` or `[v6][:port]` → (name, port digits or "").
fn split_host(host: &str) -> Option<(&str, &str)> {
    if host.starts_with('[') {
        let end = host.find(']')? + 1;
        let rest = &host[end..];
        return match rest.strip_prefix(':') {
            Some(port) => Some((&host[..end], port)),
            None if rest.is_empty() => Some((&host[..end], "")),
            None => None,
        };
    }
    Some(host.rsplit_once(':').unwrap_or((host, "")))
}

pub(crate) fn check_host(hosts: &Hosts, headers: &HeaderMap) -> Result<(), ApiError> {
    let host = headers.get(header::HOST).map(HeaderValue::to_str);
    match host {
        Some(Ok(host)) if hosts.allows(host) => Ok(()),
        Some(Ok(host)) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "host_not_allowed",
            format!(
                "Host '{}' is not one this server answers; start it with --allow-host NAME to accept it",
                host.escape_debug()
            ),
        )),
        Some(Err(_)) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "host_not_allowed",
            "the Host header is not ASCII",
        )),
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "host_not_allowed",
            "a Host header is required",
        )),
    }
}
