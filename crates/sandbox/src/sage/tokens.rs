//! Grants and tokens as Sage's identity service runs them: an access token lives five
//! minutes; a refresh token is **single-use**: every refresh answers a new one and the
//! presented one is dead at once (no grace period, unlike Xero and Intuit), and an unused
//! one dies 31 days after it was issued.
//!
//! A grant (one user's consent to one app) starts from provisioning
//! ([`super::SageAppConfig::refresh_token`]) or from an authorization code exchanged at the
//! token endpoint (`consent.rs`). What a grant reaches (the app's businesses) is looked up
//! at each request, not frozen here.

use chrono::{DateTime, TimeDelta, Utc};
use std::collections::HashMap;
use uuid::Uuid;

/// What a consent allows: Sage has two scopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    FullAccess,
    ReadOnly,
}

impl Scope {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "full_access" => Some(Self::FullAccess),
            "readonly" => Some(Self::ReadOnly),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::FullAccess => "full_access",
            Self::ReadOnly => "readonly",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Lifetimes {
    pub access: TimeDelta,
    pub refresh: TimeDelta,
}

#[derive(Debug)]
struct Grant {
    client_id: String,
    scope: Scope,
    /// The consenting user's id, answered as `requested_by_id`.
    user_id: String,
}

#[derive(Debug)]
struct AccessToken {
    grant: u64,
    expires_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RefreshState {
    Live,
    /// Exchanged once already: presenting it again is the mistake a client must never make.
    Used,
    Revoked,
}

#[derive(Debug)]
struct RefreshToken {
    grant: u64,
    expires_at: DateTime<Utc>,
    state: RefreshState,
}

/// A token answer.
#[derive(Debug)]
pub(crate) struct Issued {
    pub access_token: String,
    pub refresh_token: String,
    pub scope: Scope,
    pub requested_by_id: String,
}

/// Why a refresh was refused; all answer `invalid_grant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefreshRefusal {
    /// Never issued, or another app's.
    Unknown,
    /// Presented after it was already exchanged.
    Reused,
    Revoked,
    Expired,
}

/// What a bearer token is worth.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Bearer {
    Valid { client_id: String, scope: Scope },
    Expired,
    Unknown,
}

#[derive(Debug, Default)]
pub(crate) struct TokenStore {
    grants: HashMap<u64, Grant>,
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshToken>,
    next_grant: u64,
}

impl TokenStore {
    /// Provisions a consent (full access) whose live refresh token is `token`.
    pub(crate) fn add_grant(
        &mut self,
        client_id: &str,
        token: &str,
        lifetimes: Lifetimes,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        if let Some(existing) = self.refresh.get(token) {
            let owner = self
                .grants
                .get(&existing.grant)
                .map(|g| g.client_id.as_str());
            if owner != Some(client_id) {
                return Err("this refresh token belongs to another app".into());
            }
            return Ok(());
        }
        let grant = self.new_grant(client_id, Scope::FullAccess);
        self.insert_refresh(token.to_owned(), grant, lifetimes, now);
        Ok(())
    }

    /// An authorization code exchanged: a new grant, an access and a refresh token.
    pub(crate) fn consent(
        &mut self,
        client_id: &str,
        scope: Scope,
        lifetimes: Lifetimes,
        now: DateTime<Utc>,
    ) -> Issued {
        let grant = self.new_grant(client_id, scope);
        self.issue(grant, lifetimes, now)
    }

    /// `grant_type=refresh_token`: the presented token is spent whatever the outcome of a
    /// live one, and a fresh pair is issued.
    pub(crate) fn refresh(
        &mut self,
        client_id: &str,
        token: &str,
        lifetimes: Lifetimes,
        now: DateTime<Utc>,
    ) -> Result<Issued, RefreshRefusal> {
        let presented = self.refresh.get_mut(token).ok_or(RefreshRefusal::Unknown)?;
        let grant = presented.grant;
        let ours = self
            .grants
            .get(&grant)
            .is_some_and(|g| g.client_id == client_id);
        if !ours {
            return Err(RefreshRefusal::Unknown);
        }
        match presented.state {
            RefreshState::Used => return Err(RefreshRefusal::Reused),
            RefreshState::Revoked => return Err(RefreshRefusal::Revoked),
            RefreshState::Live if now >= presented.expires_at => {
                return Err(RefreshRefusal::Expired);
            }
            RefreshState::Live => presented.state = RefreshState::Used,
        }
        Ok(self.issue(grant, lifetimes, now))
    }

    pub(crate) fn bearer(&self, token: &str, now: DateTime<Utc>) -> Bearer {
        let Some(access) = self.access.get(token) else {
            return Bearer::Unknown;
        };
        if now >= access.expires_at {
            return Bearer::Expired;
        }
        match self.grants.get(&access.grant) {
            Some(grant) => Bearer::Valid {
                client_id: grant.client_id.clone(),
                scope: grant.scope,
            },
            None => Bearer::Unknown,
        }
    }

    /// Ends every live access token of the app now; returns how many there were.
    pub(crate) fn expire_access_tokens(&mut self, client_id: &str, now: DateTime<Utc>) -> usize {
        let grants = &self.grants;
        let mut expired = 0;
        for token in self.access.values_mut() {
            let ours = grants
                .get(&token.grant)
                .is_some_and(|g| g.client_id == client_id);
            if ours && token.expires_at > now {
                token.expires_at = now;
                expired += 1;
            }
        }
        expired
    }

    /// Revokes every live refresh token of the app (the user disconnected it); returns how
    /// many there were.
    pub(crate) fn revoke_refresh_tokens(&mut self, client_id: &str) -> usize {
        let grants = &self.grants;
        let mut revoked = 0;
        for token in self.refresh.values_mut() {
            let ours = grants
                .get(&token.grant)
                .is_some_and(|g| g.client_id == client_id);
            if ours && token.state == RefreshState::Live {
                token.state = RefreshState::Revoked;
                revoked += 1;
            }
        }
        revoked
    }

    fn new_grant(&mut self, client_id: &str, scope: Scope) -> u64 {
        self.next_grant += 1;
        self.grants.insert(
            self.next_grant,
            Grant {
                client_id: client_id.to_owned(),
                scope,
                user_id: Uuid::new_v4().to_string(),
            },
        );
        self.next_grant
    }

    fn insert_refresh(
        &mut self,
        token: String,
        grant: u64,
        lifetimes: Lifetimes,
        now: DateTime<Utc>,
    ) {
        self.refresh.insert(
            token,
            RefreshToken {
                grant,
                expires_at: now + lifetimes.refresh,
                state: RefreshState::Live,
            },
        );
    }

    fn issue(&mut self, grant: u64, lifetimes: Lifetimes, now: DateTime<Utc>) -> Issued {
        // Dead access tokens are forgotten a day after they died (a late call still reads
        // "expired" meanwhile).
        self.access
            .retain(|_, t| now < t.expires_at + TimeDelta::days(1));
        let access_token = format!("sat_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        self.access.insert(
            access_token.clone(),
            AccessToken {
                grant,
                expires_at: now + lifetimes.access,
            },
        );
        let refresh_token = format!("srt_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        self.insert_refresh(refresh_token.clone(), grant, lifetimes, now);
        let (scope, requested_by_id) = self
            .grants
            .get(&grant)
            .map(|g| (g.scope, g.user_id.clone()))
            .unwrap_or((Scope::ReadOnly, String::new()));
        Issued {
            access_token,
            refresh_token,
            scope,
            requested_by_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lifetimes() -> Lifetimes {
        Lifetimes {
            access: TimeDelta::minutes(5),
            refresh: TimeDelta::days(31),
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn sage_refresh_tokens_are_single_use_without_grace() {
        let mut store = TokenStore::default();
        store.add_grant("app", "rt0", lifetimes(), at(0)).unwrap();
        let first = store.refresh("app", "rt0", lifetimes(), at(1)).unwrap();
        assert_ne!(first.refresh_token, "rt0");
        assert_eq!(first.scope, Scope::FullAccess);
        assert_eq!(
            store.refresh("app", "rt0", lifetimes(), at(2)).unwrap_err(),
            RefreshRefusal::Reused
        );
        assert_eq!(
            store
                .refresh("other", &first.refresh_token, lifetimes(), at(2))
                .unwrap_err(),
            RefreshRefusal::Unknown
        );
        let second = store
            .refresh("app", &first.refresh_token, lifetimes(), at(3))
            .unwrap();
        assert_eq!(second.requested_by_id, first.requested_by_id);
        assert_eq!(store.revoke_refresh_tokens("app"), 1);
        assert_eq!(
            store
                .refresh("app", &second.refresh_token, lifetimes(), at(4))
                .unwrap_err(),
            RefreshRefusal::Revoked
        );
    }

    #[test]
    fn sage_tokens_expire() {
        let mut store = TokenStore::default();
        let issued = store.consent("app", Scope::ReadOnly, lifetimes(), at(0));
        assert_eq!(
            store.bearer(&issued.access_token, at(299)),
            Bearer::Valid {
                client_id: "app".into(),
                scope: Scope::ReadOnly
            }
        );
        assert_eq!(store.bearer(&issued.access_token, at(300)), Bearer::Expired);
        assert_eq!(store.bearer("nope", at(0)), Bearer::Unknown);
        let refreshed = store.refresh("app", &issued.refresh_token, lifetimes(), at(1));
        let fresh = refreshed.unwrap();
        assert_eq!(store.expire_access_tokens("app", at(2)), 2);
        assert_eq!(store.bearer(&fresh.access_token, at(2)), Bearer::Expired);
        let month = 31 * 24 * 3600;
        assert_eq!(
            store
                .refresh("app", &fresh.refresh_token, lifetimes(), at(1 + month))
                .unwrap_err(),
            RefreshRefusal::Expired
        );
    }
}
