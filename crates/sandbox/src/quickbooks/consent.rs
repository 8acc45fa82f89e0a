//! Intuit's side of the authorization-code grant: the authorization endpoint
//! (`GET /connect/oauth2`, appcenter.intuit.com's path) and the exchange of a code at the
//! token endpoint. The protocol (query checks, codes, PKCE) is [`crate::authorization`]; this
//! module decides what Intuit allows (its scopes, a required `state`), what a consent covers
//! (one realm: the app's first) and what the redirect carries (`code`, `realmId`, `state`).
//!
//! There is no user: consent is given at once unless the app is set to deny it.

use super::tokens::{Issued, Lifetimes};
use super::{QuickBooksAppConfig, QuickBooksSim, lock};
use crate::authorization::{AuthorizeQuery, CodeExchange, ErrorPage, ExchangeError, Refusal};
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

/// The scope the simulated API needs.
const ACCOUNTING: &str = "com.intuit.quickbooks.accounting";

/// Intuit's scopes for QuickBooks Online apps.
const KNOWN_SCOPES: [&str; 7] = [
    ACCOUNTING,
    "com.intuit.quickbooks.payment",
    "openid",
    "profile",
    "email",
    "phone",
    "address",
];

/// What a code stands for until it is exchanged.
#[derive(Debug)]
pub(super) struct Consented {
    /// The company the user connected.
    realm: String,
}

/// `GET /connect/oauth2`.
pub(super) async fn authorize(
    State(sim): State<QuickBooksSim>,
    RawQuery(raw): RawQuery,
) -> Response {
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
            let realm = consented.realm.clone();
            let code = lock(&sim.shared.codes).issue(
                "AB11",
                &redirect,
                challenge,
                consented,
                ttl,
                Utc::now(),
            );
            lock(&app.state).authorizations += 1;
            redirect.grant(&[("code", &code), ("realmId", &realm)])
        }
    }
}

/// The challenge and what the consent covers, or why the request is refused.
fn decide(
    query: &AuthorizeQuery,
    config: &QuickBooksAppConfig,
) -> Result<(String, Consented), Refusal> {
    let challenge = query.code_challenge()?;
    let Some(requested) = query.scopes() else {
        return Err(Refusal::invalid_request("scope is missing"));
    };
    if let Some(unknown) = requested.iter().find(|s| !KNOWN_SCOPES.contains(s)) {
        return Err(Refusal::new(
            "invalid_scope",
            format!("{unknown:?} is not an Intuit scope"),
        ));
    }
    if !requested.contains(&ACCOUNTING) {
        return Err(Refusal::new(
            "invalid_scope",
            format!("the Accounting API needs the {ACCOUNTING} scope"),
        ));
    }
    if !query.has_state() {
        return Err(Refusal::invalid_request("state is missing"));
    }
    // The user picks a company at consent; the simulated one picks the app's first.
    let Some(realm) = config.realms.first() else {
        return Err(Refusal::access_denied());
    };
    if config.deny_consent {
        return Err(Refusal::access_denied());
    }
    Ok((
        challenge,
        Consented {
            realm: realm.clone(),
        },
    ))
}

/// `grant_type=authorization_code` for an authenticated client: the code redeemed and a new
/// refresh-token chain issued over its realm.
pub(super) fn exchange(
    sim: &QuickBooksSim,
    request: &CodeExchange<'_>,
    lifetimes: Lifetimes,
    now: DateTime<Utc>,
) -> Result<Issued, ExchangeError> {
    let consented = lock(&sim.shared.codes).redeem(request, now)?;
    Ok(lock(&sim.shared.tokens).consent(request.client_id, vec![consented.realm], lifetimes, now))
}
