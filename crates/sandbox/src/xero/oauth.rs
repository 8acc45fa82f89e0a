//! The identity side: grants (one user's consent to connect an app to some tenants), the
//! access tokens that expire, and the refresh tokens that rotate.
//!
//! Rotation follows Xero: every refresh returns a new refresh token; the one it replaces
//! (and any other still-current token of the same grant) stays usable for a grace period,
//! so a client that lost a refresh response can retry, then answers `invalid_grant`. An
//! unused refresh token also expires after its lifetime (Xero: 60 days).
//!
//! A grant comes from provisioning (a consent given before the test), from the
//! client-credentials grant of a custom connection, or from an authorization code exchanged
//! at the token endpoint (see `consent.rs`); the last carries the scopes the user agreed to,
//! and a refresh token only when they include `offline_access`.

use chrono::{DateTime, TimeDelta, Utc};
use std::collections::HashMap;
use uuid::Uuid;

/// Expired access tokens are remembered this long, so a late call still reads
/// `TokenExpired` rather than an unknown token.
const EXPIRED_ACCESS_MEMORY: TimeDelta = TimeDelta::days(1);

/// Issues between two sweeps of dead tokens.
const SWEEP_EVERY: u64 = 1_000;

/// The scope without which Xero issues no refresh token.
pub(crate) const OFFLINE_ACCESS: &str = "offline_access";

/// One consent: an app connected to some tenants.
#[derive(Debug)]
pub(crate) struct Grant {
    pub client_id: String,
    pub tenant_ids: Vec<String>,
    /// Shared by the connections authorised together, as `authEventId` on `/connections`.
    pub auth_event_id: Uuid,
    pub created: DateTime<Utc>,
    /// A custom connection's grant (client credentials): it covers exactly one tenant, so
    /// calls may leave out `xero-tenant-id`.
    pub client_credentials: bool,
    /// The refresh token most recently issued, the one a careful client holds.
    current_refresh: Option<String>,
    /// The scopes consented to at the authorization endpoint, answered by every token
    /// response of the grant; `None` for provisioned grants (the app's `scopes` then).
    scope: Option<String>,
}

#[derive(Debug)]
struct AccessToken {
    grant: u64,
    expires_at: DateTime<Utc>,
}

#[derive(Debug)]
struct RefreshToken {
    grant: u64,
    expires_at: DateTime<Utc>,
    /// Set once a newer token replaced this one: usable until then.
    superseded_until: Option<DateTime<Utc>>,
}

impl RefreshToken {
    fn usable(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at && self.superseded_until.is_none_or(|until| now < until)
    }
}

/// A successful token response.
#[derive(Debug)]
pub(crate) struct Issued {
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// The grant's consented scopes, when it has its own.
    pub scope: Option<String>,
}

/// How long what is issued lives, from the app's settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lifetimes {
    pub access: TimeDelta,
    pub refresh: TimeDelta,
    pub grace: TimeDelta,
}

/// What a bearer token is worth.
#[derive(Debug)]
pub(crate) enum Bearer<'a> {
    Valid(&'a Grant),
    Expired(DateTime<Utc>),
    Unknown,
}

#[derive(Debug, Default)]
pub(crate) struct TokenStore {
    grants: HashMap<u64, Grant>,
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshToken>,
    next_grant: u64,
    issued_since_sweep: u64,
}

impl TokenStore {
    /// Provisions a consent whose first refresh token is `refresh_token`. Provisioning the
    /// same token again for the same app widens its tenants; another app's token is refused.
    pub(crate) fn add_grant(
        &mut self,
        client_id: &str,
        tenant_ids: &[String],
        refresh_token: &str,
        lifetimes: Lifetimes,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        if let Some(existing) = self.refresh.get(refresh_token) {
            let grant = self
                .grants
                .get_mut(&existing.grant)
                .ok_or_else(|| "refresh token without a grant".to_owned())?;
            if grant.client_id != client_id {
                return Err("this refresh token belongs to another app".into());
            }
            for tenant in tenant_ids {
                if !grant.tenant_ids.contains(tenant) {
                    grant.tenant_ids.push(tenant.clone());
                }
            }
            return Ok(());
        }
        let id = self.new_grant(client_id, tenant_ids, false, now);
        self.refresh.insert(
            refresh_token.to_owned(),
            RefreshToken {
                grant: id,
                expires_at: now + lifetimes.refresh,
                superseded_until: None,
            },
        );
        if let Some(grant) = self.grants.get_mut(&id) {
            grant.current_refresh = Some(refresh_token.to_owned());
        }
        Ok(())
    }

    /// `grant_type=refresh_token`: `None` is `invalid_grant` (unknown, expired, replaced for
    /// longer than the grace period, or another app's token).
    pub(crate) fn refresh(
        &mut self,
        client_id: &str,
        token: &str,
        lifetimes: Lifetimes,
        now: DateTime<Utc>,
    ) -> Option<Issued> {
        let presented = self.refresh.get(token)?;
        let grant_id = presented.grant;
        let grant = self.grants.get(&grant_id)?;
        if grant.client_id != client_id || !presented.usable(now) {
            return None;
        }
        let scope = grant.scope.clone();
        let superseded = now + lifetimes.grace;
        let current = grant.current_refresh.clone();
        for replaced in [Some(token.to_owned()), current].into_iter().flatten() {
            if let Some(old) = self.refresh.get_mut(&replaced) {
                old.superseded_until = Some(
                    old.superseded_until
                        .map_or(superseded, |u| u.min(superseded)),
                );
            }
        }
        let fresh = format!("xrt_{}", Uuid::new_v4().simple());
        self.refresh.insert(
            fresh.clone(),
            RefreshToken {
                grant: grant_id,
                expires_at: now + lifetimes.refresh,
                superseded_until: None,
            },
        );
        if let Some(grant) = self.grants.get_mut(&grant_id) {
            grant.current_refresh = Some(fresh.clone());
        }
        let access_token = self.issue_access(grant_id, lifetimes, now);
        Some(Issued {
            access_token,
            refresh_token: Some(fresh),
            scope,
        })
    }

    /// An authorization code exchanged: a new grant over `tenant_ids` with the consented
    /// `scope`, an access token, and a refresh token when the scope has `offline_access`
    /// (without it Xero issues none).
    pub(crate) fn consent(
        &mut self,
        client_id: &str,
        tenant_ids: &[String],
        scope: String,
        lifetimes: Lifetimes,
        now: DateTime<Utc>,
    ) -> Issued {
        let grant_id = self.new_grant(client_id, tenant_ids, false, now);
        let refresh_token = scope.split(' ').any(|s| s == OFFLINE_ACCESS).then(|| {
            let token = format!("xrt_{}", Uuid::new_v4().simple());
            self.refresh.insert(
                token.clone(),
                RefreshToken {
                    grant: grant_id,
                    expires_at: now + lifetimes.refresh,
                    superseded_until: None,
                },
            );
            token
        });
        if let Some(grant) = self.grants.get_mut(&grant_id) {
            grant.current_refresh.clone_from(&refresh_token);
            grant.scope = Some(scope.clone());
        }
        Issued {
            access_token: self.issue_access(grant_id, lifetimes, now),
            refresh_token,
            scope: Some(scope),
        }
    }

    /// `grant_type=client_credentials` (a custom connection): a fresh grant over the app's
    /// tenants, an access token and no refresh token.
    pub(crate) fn client_credentials(
        &mut self,
        client_id: &str,
        tenant_ids: &[String],
        lifetimes: Lifetimes,
        now: DateTime<Utc>,
    ) -> Issued {
        let grant = self.new_grant(client_id, tenant_ids, true, now);
        Issued {
            access_token: self.issue_access(grant, lifetimes, now),
            refresh_token: None,
            scope: None,
        }
    }

    pub(crate) fn bearer(&self, token: &str, now: DateTime<Utc>) -> Bearer<'_> {
        let Some(access) = self.access.get(token) else {
            return Bearer::Unknown;
        };
        if now >= access.expires_at {
            return Bearer::Expired(access.expires_at);
        }
        match self.grants.get(&access.grant) {
            Some(grant) => Bearer::Valid(grant),
            None => Bearer::Unknown,
        }
    }

    /// Ends every live access token of the app now; returns how many there were.
    pub(crate) fn expire_access_tokens(&mut self, client_id: &str, now: DateTime<Utc>) -> usize {
        let mut expired = 0;
        for token in self.access.values_mut() {
            let ours = self
                .grants
                .get(&token.grant)
                .is_some_and(|g| g.client_id == client_id);
            if ours && token.expires_at > now {
                token.expires_at = now;
                expired += 1;
            }
        }
        expired
    }

    fn new_grant(
        &mut self,
        client_id: &str,
        tenant_ids: &[String],
        client_credentials: bool,
        now: DateTime<Utc>,
    ) -> u64 {
        self.next_grant += 1;
        self.grants.insert(
            self.next_grant,
            Grant {
                client_id: client_id.to_owned(),
                tenant_ids: tenant_ids.to_vec(),
                auth_event_id: Uuid::new_v4(),
                created: now,
                client_credentials,
                current_refresh: None,
                scope: None,
            },
        );
        self.next_grant
    }

    fn issue_access(&mut self, grant: u64, lifetimes: Lifetimes, now: DateTime<Utc>) -> String {
        self.sweep(now);
        let token = format!("xat_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
        self.access.insert(
            token.clone(),
            AccessToken {
                grant,
                expires_at: now + lifetimes.access,
            },
        );
        token
    }

    fn sweep(&mut self, now: DateTime<Utc>) {
        self.issued_since_sweep += 1;
        if self.issued_since_sweep < SWEEP_EVERY {
            return;
        }
        self.issued_since_sweep = 0;
        self.access
            .retain(|_, token| now < token.expires_at + EXPIRED_ACCESS_MEMORY);
        self.refresh.retain(|_, token| token.usable(now));
        let access = &self.access;
        let refresh = &self.refresh;
        self.grants.retain(|id, _| {
            access.values().any(|t| t.grant == *id) || refresh.values().any(|t| t.grant == *id)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lifetimes(grace_secs: i64) -> Lifetimes {
        Lifetimes {
            access: TimeDelta::minutes(30),
            refresh: TimeDelta::days(60),
            grace: TimeDelta::seconds(grace_secs),
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn a_replaced_refresh_token_works_only_during_the_grace_period() {
        let mut store = TokenStore::default();
        let tenants = vec!["t".to_owned()];
        store
            .add_grant("app", &tenants, "rt-0", lifetimes(60), at(0))
            .unwrap();
        let first = store.refresh("app", "rt-0", lifetimes(60), at(1)).unwrap();
        let rt1 = first.refresh_token.unwrap();
        assert_ne!(rt1, "rt-0");
        // The response was lost: the old token is retried within the grace period.
        let retried = store.refresh("app", "rt-0", lifetimes(60), at(30)).unwrap();
        let rt2 = retried.refresh_token.unwrap();
        // rt1 was current when rt-0 was retried: it is now replaced too, with its own grace.
        assert!(store.refresh("app", &rt1, lifetimes(60), at(80)).is_some());
        assert!(
            store
                .refresh("app", "rt-0", lifetimes(60), at(61))
                .is_none()
        );
        assert!(store.refresh("app", &rt1, lifetimes(60), at(200)).is_none());
        assert!(
            store
                .refresh("other-app", &rt2, lifetimes(60), at(81))
                .is_none()
        );
    }

    #[test]
    fn access_tokens_expire_and_can_be_expired_early() {
        let mut store = TokenStore::default();
        let tenants = vec!["t".to_owned()];
        let issued = store.client_credentials("app", &tenants, lifetimes(0), at(0));
        assert!(issued.refresh_token.is_none());
        let token = issued.access_token;
        assert!(matches!(store.bearer(&token, at(10)), Bearer::Valid(g) if g.client_id == "app"));
        assert!(matches!(store.bearer(&token, at(1800)), Bearer::Expired(t) if t == at(1800)));
        assert!(matches!(store.bearer("nope", at(0)), Bearer::Unknown));
        assert_eq!(store.expire_access_tokens("app", at(5)), 1);
        assert!(matches!(store.bearer(&token, at(5)), Bearer::Expired(_)));
        assert_eq!(store.expire_access_tokens("app", at(6)), 0);
    }

    #[test]
    fn a_consent_gets_a_refresh_token_only_with_offline_access() {
        let mut store = TokenStore::default();
        let tenants = vec!["t".to_owned()];
        let offline = store.consent(
            "app",
            &tenants,
            "offline_access accounting.contacts".into(),
            lifetimes(0),
            at(0),
        );
        let refresh = offline.refresh_token.unwrap();
        let refreshed = store.refresh("app", &refresh, lifetimes(0), at(1)).unwrap();
        assert_eq!(
            refreshed.scope.as_deref(),
            Some("offline_access accounting.contacts")
        );
        assert!(matches!(
            store.bearer(&offline.access_token, at(1)),
            Bearer::Valid(g) if g.tenant_ids == tenants && !g.client_credentials
        ));
        let online = store.consent(
            "app",
            &tenants,
            "accounting.contacts".into(),
            lifetimes(0),
            at(0),
        );
        assert!(online.refresh_token.is_none());
        assert!(matches!(
            store.bearer(&online.access_token, at(1)),
            Bearer::Valid(_)
        ));
    }

    #[test]
    fn unused_refresh_tokens_expire() {
        let mut store = TokenStore::default();
        let short = Lifetimes {
            refresh: TimeDelta::seconds(10),
            ..lifetimes(0)
        };
        store.add_grant("app", &[], "rt", short, at(0)).unwrap();
        assert!(store.refresh("app", "rt", short, at(10)).is_none());
    }
}
