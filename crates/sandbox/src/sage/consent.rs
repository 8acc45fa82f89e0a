//! Sage's side of the authorization-code grant: the authorization endpoint
//! (`GET /oauth2/auth/central`, www.sageone.com's path) and the exchange of a code at the
//! token endpoint. The protocol (query checks, codes, PKCE) is [`crate::authorization`];
//! this module decides what Sage allows (`scope` is exactly `full_access` or `readonly`;
//! `filter`, `country` and `locale` are accepted and ignored) and what the redirect carries
//! (`code`, `country`, `state`; the v3.0 guide shows `country`, unverified for v3.1).
//!
//! There is no user: consent is given at once unless the app is set to deny it.

use super::tokens::{Issued, Lifetimes, Scope};
use super::{SageAppConfig, SageSim, lock};
use crate::authorization::{AuthorizeQuery, CodeExchange, ErrorPage, ExchangeError, Refusal};
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

/// What a code stands for until it is exchanged.
#[derive(Debug)]
pub(super) struct Consented {
    scope: Scope,
}

/// `GET /oauth2/auth/central`.
pub(super) async fn authorize(State(sim): State<SageSim>, RawQuery(raw): RawQuery) -> Response {
    let query = AuthorizeQuery::parse(raw.as_deref());
    let client_id = match query.client_id() {
        Ok(id) => id,
        Err(page) => return page.into_response(),
    };
    let Some(app) = sim.app(client_id) else {
        return ErrorPage::new("unauthorized_client", "Unknown client").into_response();
    };
    let (redirect, decision, ttl) = {
        let state = lock(&app.state);
        let redirect = match query.redirect(client_id, &state.config.redirect_uris) {
            Ok(redirect) => redirect,
            Err(page) => return page.into_response(),
        };
        let decision = decide(&query, &state.config);
        (redirect, decision, state.config.authorization_code_ttl())
    };
    match decision {
        Err(refusal) => {
            lock(&app.state).refused_authorizations += 1;
            redirect.refuse(&refusal)
        }
        Ok((challenge, consented)) => {
            let code =
                lock(&sim.shared.codes).issue("", &redirect, challenge, consented, ttl, Utc::now());
            lock(&app.state).authorizations += 1;
            redirect.grant(&[("code", &code), ("country", "gb")])
        }
    }
}

fn decide(query: &AuthorizeQuery, config: &SageAppConfig) -> Result<(String, Consented), Refusal> {
    let challenge = query.code_challenge()?;
    let scope = match query.scopes().as_deref() {
        None => return Err(Refusal::invalid_request("scope is missing")),
        Some([one]) => Scope::parse(one).ok_or_else(|| {
            Refusal::new(
                "invalid_scope",
                format!("{one:?} is not a Sage Accounting scope (full_access or readonly)"),
            )
        })?,
        Some(_) => {
            return Err(Refusal::new(
                "invalid_scope",
                "scope is one of full_access or readonly",
            ));
        }
    };
    if config.deny_consent || config.businesses.is_empty() {
        return Err(Refusal::access_denied());
    }
    Ok((challenge, Consented { scope }))
}

/// `grant_type=authorization_code` for an authenticated client.
pub(super) fn exchange(
    sim: &SageSim,
    request: &CodeExchange<'_>,
    lifetimes: Lifetimes,
    now: DateTime<Utc>,
) -> Result<Issued, ExchangeError> {
    let consented = lock(&sim.shared.codes).redeem(request, now)?;
    Ok(lock(&sim.shared.tokens).consent(request.client_id, consented.scope, lifetimes, now))
}
