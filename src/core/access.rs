//! Who may do what over HTTP, decided: the daemon binds to loopback by default; bound beyond it, mutating requests
//! need the configured token, and read-only ones are open or closed by a config choice. The rule is one pure function
//! ([`Access::decide`]); the web layer's guard reads the request and acts on the decision.
//!
//! Tokens are compared in constant time over their SHA-256 digests (so the length leaks nothing either) and are never
//! printed: [`Token`]'s and [`Access`]'s `Debug` show `<redacted>`.

use std::fmt;
use std::net::SocketAddr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A configured token as read from a config file or flag: kept as given, printed as `<redacted>`.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    pub fn new(token: String) -> Self {
        Self(token)
    }
    /// The token itself, for [`Access::new`] only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The access configuration of one daemon.
#[derive(Clone, PartialEq, Eq)]
pub struct Access {
    /// Bound only to a loopback address (127.0.0.0/8, ::1).
    pub loopback: bool,
    /// SHA-256 of the configured token; the token itself is not kept.
    token: Option<[u8; 32]>,
    /// Read-only routes need no token even when one is configured or the daemon is bound beyond loopback.
    pub public_read: bool,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("loopback", &self.loopback)
            .field("token", &self.token.map(|_| "<redacted>"))
            .field("public_read", &self.public_read)
            .finish()
    }
}

/// What a request is allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// A token is configured and this request did not present it (or presented a wrong one): 401.
    NeedToken,
    /// Bound beyond loopback with no token configured, or a cross-site browser request: 403, nothing to present.
    Refuse,
}

/// The kind of request, as the rule sees it: one that only reads, or one that changes something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Mutate,
}

impl Access {
    /// `token`: the configured token, if any (empty counts as none). `public_read`: read-only routes stay open.
    pub fn new(bind: SocketAddr, token: Option<&str>, public_read: bool) -> Self {
        let token = token.filter(|t| !t.is_empty()).map(digest);
        Self { loopback: bind.ip().is_loopback(), token, public_read }
    }

    /// Open access: loopback, no token (what tests and a single-user laptop use).
    pub fn local() -> Self {
        Self { loopback: true, token: None, public_read: true }
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `presented` is the configured token, in constant time.
    pub fn token_matches(&self, presented: &str) -> bool {
        match &self.token {
            Some(want) => bool::from(digest(presented).ct_eq(want)),
            None => false,
        }
    }

    /// The rule. `presented` is the token the request carried (header or cookie); `cross_site` whether the browser
    /// marked it as coming from another site.
    pub fn decide(&self, kind: Kind, presented: Option<&str>, cross_site: bool) -> Decision {
        let valid = presented.is_some_and(|t| self.token_matches(t));
        match kind {
            Kind::Read => {
                if valid || self.public_read || (self.loopback && self.token.is_none()) {
                    Decision::Allow
                } else if self.token.is_some() {
                    Decision::NeedToken
                } else {
                    Decision::Refuse
                }
            }
            Kind::Mutate => {
                if valid {
                    Decision::Allow
                } else if self.token.is_some() {
                    Decision::NeedToken
                } else if self.loopback && !cross_site {
                    Decision::Allow
                } else {
                    Decision::Refuse
                }
            }
        }
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_rule() {
        use Decision::*;
        use Kind::*;
        let local = Access::new(addr("127.0.0.1:8470"), None, false);
        assert!(local.loopback);
        assert_eq!(local.decide(Read, None, false), Allow);
        assert_eq!(local.decide(Mutate, None, false), Allow);
        assert_eq!(local.decide(Mutate, None, true), Refuse, "cross-site posts to loopback are refused");

        let open = Access::new(addr("0.0.0.0:8470"), None, false);
        assert_eq!(open.decide(Mutate, None, false), Refuse, "beyond loopback without a token nothing mutates");
        assert_eq!(open.decide(Mutate, Some("x"), false), Refuse);
        assert_eq!(open.decide(Read, None, false), Refuse);
        let open_reads = Access::new(addr("0.0.0.0:8470"), None, true);
        assert_eq!(open_reads.decide(Read, None, false), Allow);
        assert_eq!(open_reads.decide(Mutate, None, false), Refuse);

        let guarded = Access::new(addr("[::]:8470"), Some("s3cret"), true);
        assert_eq!(guarded.decide(Read, None, false), Allow);
        assert_eq!(guarded.decide(Mutate, None, false), NeedToken);
        assert_eq!(guarded.decide(Mutate, Some("s3cre"), false), NeedToken);
        assert_eq!(guarded.decide(Mutate, Some("s3cret"), false), Allow);
        assert_eq!(guarded.decide(Mutate, Some("s3cret"), true), Allow, "a valid token is the proof");
        let closed = Access::new(addr("10.1.2.3:8470"), Some("s3cret"), false);
        assert_eq!(closed.decide(Read, None, false), NeedToken);
        assert_eq!(closed.decide(Read, Some("s3cret"), false), Allow);

        let local_token = Access::new(addr("127.0.0.1:1"), Some("t"), true);
        assert_eq!(local_token.decide(Mutate, None, false), NeedToken, "a configured token binds on loopback too");
        assert!(Access::new(addr("[::1]:1"), None, false).loopback);
        assert!(!Access::new(addr("[::1]:1"), Some(""), false).has_token(), "an empty token is no token");
    }

    #[test]
    fn debug_never_shows_the_token() {
        let a = Access::new(addr("0.0.0.0:1"), Some("hunter2-token"), false);
        let s = format!("{a:?}");
        assert!(!s.contains("hunter2") && s.contains("<redacted>"), "{s}");
        let t = format!("{:?}", Token::new("hunter2-token".into()));
        assert!(!t.contains("hunter2"), "{t}");
    }
}
