//! OAuth 2 grants as Intuit runs them: a refresh answers a fresh one-hour access token and,
//! once the refresh token is old enough, a *new* refresh token; the replaced one keeps working
//! for a grace period (answering the newest token of its chain), then `invalid_grant`.
//!
//! A chain starts from provisioning (a consent given before the test) or from an
//! authorization code exchanged at the token endpoint (see `consent.rs`).

use chrono::{DateTime, TimeDelta, Utc};
use std::collections::HashMap;
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
pub(super) struct Lifetimes {
    pub access: TimeDelta,
    pub refresh: TimeDelta,
    pub rotation: TimeDelta,
    pub grace: TimeDelta,
}

#[derive(Debug)]
struct RefreshGrant {
    client_id: String,
    realms: Vec<String>,
    issued: DateTime<Utc>,
    expires: DateTime<Utc>,
    /// When a newer token replaced this one, and which.
    replaced: Option<(DateTime<Utc>, String)>,
}

#[derive(Debug)]
struct AccessGrant {
    client_id: String,
    realms: Vec<String>,
    expires: DateTime<Utc>,
}

/// What a successful refresh answers.
#[derive(Debug)]
pub(super) struct Issued {
    pub access_token: String,
    pub expires_in: i64,
    pub refresh_token: String,
    pub refresh_expires_in: i64,
}

/// Why a bearer token was refused.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    Unknown,
    Expired,
}

#[derive(Debug, Default)]
pub(super) struct TokenStore {
    refresh: HashMap<String, RefreshGrant>,
    access: HashMap<String, AccessGrant>,
}

impl TokenStore {
    pub(super) fn add_grant(
        &mut self,
        client_id: &str,
        realms: &[String],
        token: &str,
        lifetimes: Lifetimes,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        if let Some(existing) = self.refresh.get(token)
            && existing.client_id != client_id
        {
            return Err("refresh_token already belongs to another app".into());
        }
        self.refresh.insert(
            token.to_owned(),
            RefreshGrant {
                client_id: client_id.to_owned(),
                realms: realms.to_vec(),
                issued: now,
                expires: now + lifetimes.refresh,
                replaced: None,
            },
        );
        Ok(())
    }

    /// A `refresh_token` grant; `Err` is `invalid_grant`.
    pub(super) fn refresh(
        &mut self,
        client_id: &str,
        token: &str,
        lifetimes: Lifetimes,
        now: DateTime<Utc>,
    ) -> Result<Issued, ()> {
        let grant = self.refresh.get(token).ok_or(())?;
        if grant.client_id != client_id || now >= grant.expires {
            return Err(());
        }
        let realms = grant.realms.clone();
        // A replaced token, within its grace: answer the newest token of its chain.
        let current = match &grant.replaced {
            Some((at, _)) if now > *at + lifetimes.grace => return Err(()),
            Some(_) => {
                let mut newest = token.to_owned();
                while let Some((_, next)) =
                    self.refresh.get(&newest).and_then(|g| g.replaced.clone())
                {
                    newest = next;
                }
                newest
            }
            None if now - grant.issued >= lifetimes.rotation => {
                let fresh = format!("AB11{}", Uuid::new_v4().simple());
                if let Some(old) = self.refresh.get_mut(token) {
                    old.replaced = Some((now, fresh.clone()));
                }
                self.refresh.insert(
                    fresh.clone(),
                    RefreshGrant {
                        client_id: client_id.to_owned(),
                        realms: realms.clone(),
                        issued: now,
                        expires: now + lifetimes.refresh,
                        replaced: None,
                    },
                );
                fresh
            }
            None => token.to_owned(),
        };
        // 100 days, rolling: every use pushes the expiry back.
        if let Some(g) = self.refresh.get_mut(&current) {
            g.expires = now + lifetimes.refresh;
        }
        Ok(self.issue(client_id, realms, current, lifetimes, now))
    }

    /// An authorization code exchanged: a new chain over `realms` whose first refresh token
    /// is fresh, and an access token.
    pub(super) fn consent(
        &mut self,
        client_id: &str,
        realms: Vec<String>,
        lifetimes: Lifetimes,
        now: DateTime<Utc>,
    ) -> Issued {
        let refresh_token = format!("AB11{}", Uuid::new_v4().simple());
        self.refresh.insert(
            refresh_token.clone(),
            RefreshGrant {
                client_id: client_id.to_owned(),
                realms: realms.clone(),
                issued: now,
                expires: now + lifetimes.refresh,
                replaced: None,
            },
        );
        self.issue(client_id, realms, refresh_token, lifetimes, now)
    }

    /// A new access token over `realms`, answered with `refresh_token`.
    fn issue(
        &mut self,
        client_id: &str,
        realms: Vec<String>,
        refresh_token: String,
        lifetimes: Lifetimes,
        now: DateTime<Utc>,
    ) -> Issued {
        let access_token = format!("eyJ{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        self.access
            .retain(|_, g| g.expires + TimeDelta::days(1) > now);
        self.access.insert(
            access_token.clone(),
            AccessGrant {
                client_id: client_id.to_owned(),
                realms,
                expires: now + lifetimes.access,
            },
        );
        Issued {
            access_token,
            expires_in: lifetimes.access.num_seconds(),
            refresh_token,
            refresh_expires_in: lifetimes.refresh.num_seconds(),
        }
    }

    /// The realms a bearer token may reach.
    pub(super) fn authorize(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<(String, Vec<String>), Refusal> {
        let grant = self.access.get(token).ok_or(Refusal::Unknown)?;
        if now >= grant.expires {
            return Err(Refusal::Expired);
        }
        Ok((grant.client_id.clone(), grant.realms.clone()))
    }

    pub(super) fn expire_access_tokens(&mut self, client_id: &str, now: DateTime<Utc>) -> usize {
        let mut live = 0;
        for grant in self.access.values_mut() {
            if grant.client_id == client_id && grant.expires > now {
                grant.expires = now;
                live += 1;
            }
        }
        live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lifetimes(rotation: i64, grace: i64) -> Lifetimes {
        Lifetimes {
            access: TimeDelta::hours(1),
            refresh: TimeDelta::days(100),
            rotation: TimeDelta::seconds(rotation),
            grace: TimeDelta::seconds(grace),
        }
    }

    #[test]
    fn a_rotated_token_answers_the_newest_within_its_grace_then_dies() {
        let mut store = TokenStore::default();
        let t0 = Utc::now();
        let l = lifetimes(0, 10);
        store.add_grant("c", &["1".into()], "rt0", l, t0).unwrap();
        let first = store.refresh("c", "rt0", l, t0).unwrap();
        assert_ne!(first.refresh_token, "rt0");
        let again = store
            .refresh("c", "rt0", l, t0 + TimeDelta::seconds(5))
            .unwrap();
        assert_eq!(again.refresh_token, first.refresh_token);
        assert!(
            store
                .refresh("c", "rt0", l, t0 + TimeDelta::seconds(11))
                .is_err()
        );
        assert!(store.refresh("other", &first.refresh_token, l, t0).is_err());
    }

    #[test]
    fn a_consent_starts_a_chain_the_refresh_grant_continues() {
        let mut store = TokenStore::default();
        let t0 = Utc::now();
        let l = lifetimes(3600, 10);
        let issued = store.consent("c", vec!["1".into()], l, t0);
        assert!(issued.refresh_token.starts_with("AB11"));
        assert_eq!(
            store.authorize(&issued.access_token, t0),
            Ok(("c".to_owned(), vec!["1".to_owned()]))
        );
        let refreshed = store.refresh("c", &issued.refresh_token, l, t0).unwrap();
        assert_eq!(refreshed.refresh_token, issued.refresh_token);
        assert!(
            store
                .refresh("other", &issued.refresh_token, l, t0)
                .is_err()
        );
    }

    #[test]
    fn a_young_token_is_kept_and_access_tokens_expire() {
        let mut store = TokenStore::default();
        let t0 = Utc::now();
        let l = lifetimes(3600, 10);
        store.add_grant("c", &["1".into()], "rt0", l, t0).unwrap();
        let issued = store.refresh("c", "rt0", l, t0).unwrap();
        assert_eq!(issued.refresh_token, "rt0");
        assert!(store.authorize(&issued.access_token, t0).is_ok());
        assert_eq!(
            store.authorize(&issued.access_token, t0 + TimeDelta::hours(2)),
            Err(Refusal::Expired)
        );
        assert_eq!(store.expire_access_tokens("c", t0), 1);
    }
}
