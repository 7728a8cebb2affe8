//! Who may do what over HTTP, decided: the daemon binds to loopback by default; bound beyond it, mutating requests
//! need the configured token, and read-only ones are open or closed by a config choice. The rule is one pure function
//! ([`Access::decide`]); the web layer's guard reads the request and acts on the decision.
//!
//! A shared daemon lists users (teams), each with its own token: a request's user comes from its token ([`Users`],
//! [`admit`]), a member sees and changes only its own sessions ([`Caller::sees`]; others' answer 404, so ids do not
//! leak), an admin sees everything, and the board stays public. With no users listed, the single-user rule above
//! applies unchanged and every request acts as the daemon's own user.
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

/// What a user may do: a member acts on its own sessions only; an admin (the organisers) sees and stops everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    #[default]
    Member,
    Admin,
}

/// One user as the daemon's config (or `$RUSH_HOME/users.yaml`) lists it: its name, the SHA-256 of its token (hex),
/// how many GPU slots it may hold at once (none: no cap) and its role.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub name: String,
    pub token_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    #[serde(default)]
    pub role: Role,
}

/// Why a list of users cannot be used, naming the user and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsersError {
    #[error("users[{index}].name: {message}")]
    Name { index: usize, message: String },
    #[error("users[{index}] ({name}).token_sha256: expected 64 hex digits (the SHA-256 of the token), got {got:?}")]
    Digest { index: usize, name: String, got: String },
    #[error("users: {name:?} is listed twice")]
    Twice { name: String },
    #[error("users: {first} and {second} have the same token")]
    SameToken { first: String, second: String },
}

/// The users of a shared daemon, with their token digests decoded; empty on a single-user daemon.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Users {
    entries: Vec<(UserEntry, [u8; 32])>,
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.entries.iter().map(|(u, _)| (&u.name, u.role, u.gpus))).finish()
    }
}

impl Users {
    /// Checks names (as session ids need them), digests, and that no name or token is listed twice.
    pub fn new(entries: Vec<UserEntry>) -> Result<Users, UsersError> {
        let mut out: Vec<(UserEntry, [u8; 32])> = Vec::with_capacity(entries.len());
        for (index, entry) in entries.into_iter().enumerate() {
            super::session::validate_name(&entry.name)
                .map_err(|e| UsersError::Name { index, message: e.to_string() })?;
            let bad = || UsersError::Digest { index, name: entry.name.clone(), got: entry.token_sha256.clone() };
            let bytes = hex::decode(entry.token_sha256.trim()).map_err(|_| bad())?;
            let digest: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
            if out.iter().any(|(u, _)| u.name == entry.name) {
                return Err(UsersError::Twice { name: entry.name });
            }
            if let Some((u, _)) = out.iter().find(|(_, d)| *d == digest) {
                return Err(UsersError::SameToken { first: u.name.clone(), second: entry.name });
            }
            out.push((entry, digest));
        }
        Ok(Users { entries: out })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> impl Iterator<Item = &UserEntry> {
        self.entries.iter().map(|(u, _)| u)
    }

    pub fn get(&self, name: &str) -> Option<&UserEntry> {
        self.entries().find(|u| u.name == name)
    }

    /// The user whose token `presented` is. Every entry is compared, in constant time each, so the time says nothing
    /// about which user (or whether any) matched.
    pub fn identify(&self, presented: &str) -> Option<&UserEntry> {
        let want = digest(presented);
        let mut found = None;
        for (user, d) in &self.entries {
            if bool::from(d.ct_eq(&want)) {
                found = Some(user);
            }
        }
        found
    }
}

/// Who a request acts as: the user its token names, or the daemon's own user on a single-user daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user: String,
    pub role: Role,
}

impl Caller {
    /// The daemon's own user on a single-user daemon (or its legacy `token`): sees and does everything.
    pub fn owner(user: &str) -> Caller {
        Caller { user: user.to_string(), role: Role::Admin }
    }

    /// Nobody: a public read (the board) without a token. Sees no session.
    pub fn anonymous() -> Caller {
        Caller { user: String::new(), role: Role::Member }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whose sessions alone this caller sees in a list: None for an admin (everyone's).
    pub fn only(&self) -> Option<String> {
        (!self.is_admin()).then(|| self.user.clone())
    }

    /// Whether this caller may see (and act on) what `owner` owns: its own, or everything for an admin.
    pub fn sees(&self, owner: &str) -> bool {
        self.is_admin() || (!self.user.is_empty() && self.user == owner)
    }
}

/// What the guard does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Allow(Caller),
    NeedToken,
    Refuse,
}

/// The whole rule. With no users listed it is [`Access::decide`], acting as the daemon's own user (`owner`). With
/// users listed every request needs a user's token (or the legacy `token`, which acts as `owner`, an admin), except
/// `public` reads (the board), which anyone may make.
pub fn admit(
    access: &Access,
    users: &Users,
    owner: &str,
    kind: Kind,
    presented: Option<&str>,
    cross_site: bool,
    public: bool,
) -> Admission {
    if users.is_empty() {
        return match access.decide(kind, presented, cross_site) {
            Decision::Allow => Admission::Allow(Caller::owner(owner)),
            Decision::NeedToken => Admission::NeedToken,
            Decision::Refuse => Admission::Refuse,
        };
    }
    let user = presented.and_then(|t| users.identify(t));
    let legacy = presented.is_some_and(|t| access.token_matches(t));
    match (user, legacy) {
        (Some(u), _) => Admission::Allow(Caller { user: u.name.clone(), role: u.role }),
        (None, true) => Admission::Allow(Caller::owner(owner)),
        (None, false) if public && kind == Kind::Read => Admission::Allow(Caller::anonymous()),
        (None, false) => Admission::NeedToken,
    }
}

/// A new token (64 hex digits from the OS-seeded generator) and the SHA-256 to list for it.
pub fn new_token() -> (String, String) {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    let token = hex::encode(bytes);
    let digest = hex::encode(digest(&token));
    (token, digest)
}

/// The hex SHA-256 of a token, as `token_sha256` lists it.
pub fn token_sha256(token: &str) -> String {
    hex::encode(digest(token))
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
    fn three_teams() -> (Users, [String; 3]) {
        let tokens = ["alpha-token".to_string(), "bravo-token".to_string(), "org-token".to_string()];
        let entry = |name: &str, token: &str, gpus, role| UserEntry {
            name: name.into(),
            token_sha256: token_sha256(token),
            gpus,
            role,
        };
        let users = Users::new(vec![
            entry("team01", &tokens[0], Some(2), Role::Member),
            entry("team02", &tokens[1], Some(1), Role::Member),
            entry("org", &tokens[2], None, Role::Admin),
        ])
        .unwrap();
        (users, tokens)
    }

    /// The rule once per role: a member is itself and sees only its own, an admin sees all, no token reads only the
    /// board, a wrong token is no token, and the legacy token acts as the daemon's own user.
    #[test]
    fn admission_per_role() {
        use Kind::*;
        let (users, [a, _b, org]) = three_teams();
        let access = Access::new(addr("0.0.0.0:8470"), Some("legacy"), false);
        let admit = |kind, token: Option<&str>, public| admit(&access, &users, "host", kind, token, false, public);

        let Admission::Allow(member) = admit(Mutate, Some(&a), false) else { panic!("a member's token is admitted") };
        assert_eq!((member.user.as_str(), member.role), ("team01", Role::Member));
        assert!(member.sees("team01") && !member.sees("team02") && !member.sees("org"));

        let Admission::Allow(admin) = admit(Read, Some(&org), false) else { panic!("an admin's token is admitted") };
        assert!(admin.is_admin() && admin.sees("team01") && admin.sees("team02"));

        assert_eq!(admit(Read, None, false), Admission::NeedToken, "a shared daemon shows nothing without a token");
        assert_eq!(admit(Mutate, None, true), Admission::NeedToken, "public routes are read-only");
        assert_eq!(admit(Read, Some("alpha-toke"), false), Admission::NeedToken);
        let Admission::Allow(anyone) = admit(Read, None, true) else { panic!("the board is public") };
        assert!(!anyone.sees("team01") && !anyone.sees(""), "an anonymous reader sees no session");
        assert_eq!(admit(Mutate, Some("legacy"), false), Admission::Allow(Caller::owner("host")));

        // no users listed: today's single-user rule, as the daemon's own user
        let local = Access::new(addr("127.0.0.1:8470"), None, true);
        let none = Users::default();
        assert_eq!(
            super::admit(&local, &none, "me", Mutate, None, false, false),
            Admission::Allow(Caller::owner("me"))
        );
        assert_eq!(super::admit(&local, &none, "me", Mutate, None, true, false), Admission::Refuse);
    }

    #[test]
    fn a_users_list_is_checked_naming_the_user_and_field() {
        let entry = |name: &str, digest: &str| UserEntry {
            name: name.into(),
            token_sha256: digest.into(),
            gpus: None,
            role: Role::Member,
        };
        let d = token_sha256("t");
        let err = Users::new(vec![entry("team01", "abc")]).unwrap_err().to_string();
        assert!(err.contains("users[0] (team01).token_sha256") && err.contains("\"abc\""), "{err}");
        let err = Users::new(vec![entry("../x", &d)]).unwrap_err().to_string();
        assert!(err.starts_with("users[0].name"), "{err}");
        let err = Users::new(vec![entry("a", &d), entry("a", &token_sha256("u"))]).unwrap_err().to_string();
        assert!(err.contains("\"a\" is listed twice"), "{err}");
        let err = Users::new(vec![entry("a", &d), entry("b", &d)]).unwrap_err().to_string();
        assert!(err.contains("a and b have the same token"), "{err}");
        let (token, digest) = new_token();
        assert_eq!((token.len(), digest.len()), (64, 64));
        assert_eq!(token_sha256(&token), digest);
        assert_ne!(new_token().0, token);
        let users = Users::new(vec![entry("a", &digest)]).unwrap();
        assert!(!format!("{users:?}").contains(&digest), "Debug shows names, not digests");
    }
}
