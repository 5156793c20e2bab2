//! Bearer tokens by route class, as a layer: every route belongs to a [`Class`], and
//! [`router`](crate::router) wraps it in [`require`] for that class.
//!
//! | class | routes | needs |
//! | --- | --- | --- |
//! | read | every `GET` but the admin ones | the read, write or admin token, when a read token is set; else nothing |
//! | write | `POST /apply` | the write or admin token, when one of them is set; else the read token, when only it is set; else nothing |
//! | admin | `GET /admin/…` | the admin token, when set; else the write token, when set; else the read token, when set; else nothing |
//!
//! So a higher token opens every lower class, a lone read token guards the whole server, and
//! without an admin token the write token is also the admin token. Tokens are compared as
//! SHA-256 digests, in full and in constant time: no prefix, suffix or length passes, and the
//! timing tells nothing of a token.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

use crate::error::ApiError;

/// What a route does, and so which token it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// Reads the depot.
    Read,
    /// Changes the depot through commands.
    Write,
    /// Operates the server or the depot (`GET /admin/stats`; later redaction, gc).
    Admin,
}

impl Class {
    /// `read`, `write` or `admin` (the OpenAPI tag of the class's routes).
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Read => "read",
            Class::Write => "write",
            Class::Admin => "admin",
        }
    }

    fn routes(self) -> &'static str {
        match self {
            Class::Read => "reads",
            Class::Write => "writes",
            Class::Admin => "admin routes",
        }
    }
}

/// The bearer tokens, one per class; `None` (or an empty string) for none.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Needed by reads (any token opens them); reads are open without it.
    pub read: Option<String>,
    /// Needed by writes (`POST /apply`); the admin token also opens them.
    pub write: Option<String>,
    /// Needed by admin routes.
    pub admin: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |t: &Option<String>| t.as_ref().map(|_| "<set>");
        f.debug_struct("Tokens")
            .field("read", &shown(&self.read))
            .field("write", &shown(&self.write))
            .field("admin", &shown(&self.admin))
            .finish()
    }
}

type Digest = [u8; 32];

fn digest(token: &[u8]) -> Digest {
    Sha256::digest(token).into()
}

/// The tokens' digests (the tokens themselves are not kept).
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    read: Option<Digest>,
    write: Option<Digest>,
    admin: Option<Digest>,
}

impl Keys {
    pub(crate) fn new(tokens: &Tokens) -> Keys {
        let key = |t: &Option<String>| {
            t.as_deref()
                .filter(|t| !t.is_empty())
                .map(|t| digest(t.as_bytes()))
        };
        Keys {
            read: key(&tokens.read),
            write: key(&tokens.write),
            admin: key(&tokens.admin),
        }
    }

    /// The digests a route of `class` accepts; `None` when it is open.
    pub(crate) fn accepted(&self, class: Class) -> Option<Vec<Digest>> {
        let set =
            |keys: &[Option<Digest>]| -> Vec<Digest> { keys.iter().flatten().copied().collect() };
        let keys = match class {
            Class::Read => match self.read {
                None => Vec::new(),
                Some(_) => set(&[self.read, self.write, self.admin]),
            },
            Class::Write => match set(&[self.write, self.admin]) {
                up if up.is_empty() => set(&[self.read]),
                up => up,
            },
            Class::Admin => set(&[self.admin.or(self.write).or(self.read)]),
        };
        (!keys.is_empty()).then_some(keys)
    }

    /// Whether `class` is open to anyone.
    pub(crate) fn is_open(&self, class: Class) -> bool {
        self.accepted(class).is_none()
    }

    /// Lets the request through, or says why not: 401 without a known token, 403 with a token
    /// of a class below the route's.
    pub(crate) fn check(&self, class: Class, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(accepted) = self.accepted(class) else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        if let Some(given) = given {
            let given = digest(given);
            if matches_any(&accepted, &given) {
                return Ok(());
            }
            let known: Vec<Digest> = [self.read, self.write, self.admin]
                .into_iter()
                .flatten()
                .collect();
            if matches_any(&known, &given) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!(
                        "this token does not open {}; they need a {} token",
                        class.routes(),
                        class.as_str()
                    ),
                ));
            }
        }
        Err(ApiError {
            challenge: true,
            ..ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!(
                    "this server requires 'Authorization: Bearer <token>' for {}",
                    class.routes()
                ),
            )
        })
    }
}

/// Compares `given` with every digest in full (no early exit), in constant time.
fn matches_any(keys: &[Digest], given: &Digest) -> bool {
    let mut found = 0u8;
    for key in keys {
        let diff = key
            .iter()
            .zip(given.iter())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b));
        found |= u8::from(std::hint::black_box(diff) == 0);
    }
    found == 1
}

/// The layer's state: the keys and the class of the routes it wraps.
#[derive(Clone)]
pub(crate) struct Guard {
    pub(crate) keys: std::sync::Arc<Keys>,
    pub(crate) class: Class,
}

/// The token check, as middleware (`axum::middleware::from_fn_with_state`).
pub(crate) async fn require(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    match guard.keys.check(guard.class, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(err) => err.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        headers
    }

    fn status(keys: &Keys, class: Class, headers: &HeaderMap) -> u16 {
        match keys.check(class, headers) {
            Ok(()) => 200,
            Err(err) => err.status.as_u16(),
        }
    }

    fn tokens(read: Option<&str>, write: Option<&str>, admin: Option<&str>) -> Keys {
        Keys::new(&Tokens {
            read: read.map(str::to_owned),
            write: write.map(str::to_owned),
            admin: admin.map(str::to_owned),
        })
    }

    #[test]
    fn every_class_is_open_without_tokens_and_empty_tokens_are_none() {
        for keys in [
            tokens(None, None, None),
            tokens(Some(""), Some(""), Some("")),
        ] {
            for class in [Class::Read, Class::Write, Class::Admin] {
                assert_eq!(status(&keys, class, &HeaderMap::new()), 200);
            }
        }
    }

    #[test]
    fn higher_tokens_open_lower_classes_and_not_the_reverse() {
        let keys = tokens(Some("r"), Some("w"), Some("a"));
        let none = HeaderMap::new();
        let (r, w, a, x) = (bearer("r"), bearer("w"), bearer("a"), bearer("x"));
        assert_eq!(
            [&none, &r, &w, &a, &x].map(|h| status(&keys, Class::Read, h)),
            [401, 200, 200, 200, 401]
        );
        assert_eq!(
            [&none, &r, &w, &a, &x].map(|h| status(&keys, Class::Write, h)),
            [401, 403, 200, 200, 401]
        );
        assert_eq!(
            [&none, &r, &w, &a, &x].map(|h| status(&keys, Class::Admin, h)),
            [401, 403, 403, 200, 401]
        );
    }

    #[test]
    fn a_missing_class_token_falls_back_as_documented() {
        // Only a write token (`--token`, as before): reads open, admin takes the write token.
        let keys = tokens(None, Some("w"), None);
        assert_eq!(status(&keys, Class::Read, &HeaderMap::new()), 200);
        assert_eq!(status(&keys, Class::Write, &HeaderMap::new()), 401);
        assert_eq!(status(&keys, Class::Admin, &bearer("w")), 200);
        // Only a read token: it guards everything.
        let keys = tokens(Some("r"), None, None);
        for class in [Class::Read, Class::Write, Class::Admin] {
            assert_eq!(status(&keys, class, &HeaderMap::new()), 401);
            assert_eq!(status(&keys, class, &bearer("r")), 200);
        }
        // Only an admin token: reads open, writes and admin need it.
        let keys = tokens(None, None, Some("a"));
        assert_eq!(status(&keys, Class::Read, &HeaderMap::new()), 200);
        assert_eq!(status(&keys, Class::Write, &HeaderMap::new()), 401);
        assert_eq!(status(&keys, Class::Write, &bearer("a")), 200);
        assert_eq!(status(&keys, Class::Admin, &bearer("a")), 200);
    }

    #[test]
    fn prefixes_suffixes_and_other_schemes_are_refused() {
        let keys = tokens(None, Some("s3cret"), None);
        for given in ["s3cre", "s3cret ", "s3cretX", "S3CRET", ""] {
            assert_eq!(
                status(&keys, Class::Write, &bearer(given)),
                401,
                "{given:?}"
            );
        }
        let mut basic = HeaderMap::new();
        basic.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic s3cret"),
        );
        assert_eq!(status(&keys, Class::Write, &basic), 401);
        assert_eq!(status(&keys, Class::Write, &bearer("s3cret")), 200);
    }
}
