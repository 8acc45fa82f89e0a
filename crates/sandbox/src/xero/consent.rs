//! Xero's side of the authorization-code grant: the authorization endpoint
//! (`GET /identity/connect/authorize`, login.xero.com's path) and the exchange of a code at
//! the token endpoint. The protocol (query checks, codes, PKCE) is [`crate::authorization`];
//! this module decides what Xero allows (its scopes, no custom connection), what a consent
//! covers (every tenant of the app) and what the redirect carries (`code`, `scope`,
//! `session_state`, `state`).
//!
//! There is no user: consent is given at once unless the app is set to deny it.

use super::oauth::{Issued, Lifetimes};
use super::{XeroAppConfig, XeroSim, lock};
use crate::authorization::{AuthorizeQuery, CodeExchange, ErrorPage, ExchangeError, Refusal};
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The scopes Xero's Accounting API document lists (`xero_accounting.yaml`,
/// `securitySchemes`), and `offline_access` for a refresh token. Other Xero APIs (payroll,
/// files, assets, projects) are not simulated, so their scopes are refused.
const KNOWN_SCOPES: [&str; 17] = [
    "offline_access",
    "openid",
    "profile",
    "email",
    "accounting.attachments",
    "accounting.attachments.read",
    "accounting.budgets.read",
    "accounting.contacts",
    "accounting.contacts.read",
    "accounting.journals.read",
    "accounting.reports.read",
    "accounting.reports.tenninetynine.read",
    "accounting.settings",
    "accounting.settings.read",
    "accounting.transactions",
    "accounting.transactions.read",
    "paymentservices",
];

/// What a code stands for until it is exchanged.
#[derive(Debug)]
pub(super) struct Consented {
    /// Lower-case ids of the tenants the app was connected to at consent.
    tenant_ids: Vec<String>,
    /// The consented scopes, space-separated, in the order asked, each once.
    scope: String,
}

/// `GET /identity/connect/authorize`.
pub(super) async fn authorize(State(sim): State<XeroSim>, RawQuery(raw): RawQuery) -> Response {
    let query = AuthorizeQuery::parse(raw.as_deref());
    let client_id = match query.client_id() {
        Ok(id) => id,
        Err(page) => return page.into_response(),
    };
    let Some(app) = sim.app(client_id) else {
        return ErrorPage::new(
            "unauthorized_client",
            "Unknown client or client not enabled",
        )
        .into_response();
    };
    let (redirect, decision, ttl) = {
        let state = lock(&app.state);
        let redirect = match query.redirect(client_id, &state.config.redirect_uris) {
            Ok(redirect) => redirect,
            Err(page) => return page.into_response(),
        };
        let decision = decide(&query, &state.config).map(|(challenge, scope)| {
            let consented = Consented {
                tenant_ids: state.tenant_ids(),
                scope,
            };
            (challenge, consented)
        });
        (redirect, decision, state.config.authorization_code_ttl())
    };
    match decision {
        Err(refusal) => {
            lock(&app.state).refused_authorizations += 1;
            redirect.refuse(&refusal)
        }
        Ok((challenge, consented)) => {
            let scope = consented.scope.clone();
            let code =
                lock(&sim.shared.codes).issue("", &redirect, challenge, consented, ttl, Utc::now());
            lock(&app.state).authorizations += 1;
            // IdentityServer's OpenID session state: opaque to the client.
            let session_state = format!("{}.{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
            redirect.grant(&[
                ("code", &code),
                ("scope", &scope),
                ("session_state", &session_state),
            ])
        }
    }
}

/// The challenge and the consented scope, or why the request is refused.
fn decide(query: &AuthorizeQuery, config: &XeroAppConfig) -> Result<(String, String), Refusal> {
    let challenge = query.code_challenge()?;
    if config.custom_connection {
        return Err(Refusal::new(
            "unauthorized_client",
            "a custom connection is authorized with client_credentials",
        ));
    }
    let Some(requested) = query.scopes() else {
        return Err(Refusal::invalid_request("scope is missing"));
    };
    if let Some(unknown) = requested.iter().find(|s| !KNOWN_SCOPES.contains(s)) {
        return Err(Refusal::new(
            "invalid_scope",
            format!("{unknown:?} is not a Xero Accounting API scope"),
        ));
    }
    if config.deny_consent {
        return Err(Refusal::access_denied());
    }
    let mut scopes: Vec<&str> = Vec::new();
    for scope in requested {
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    Ok((challenge, scopes.join(" ")))
}

/// `grant_type=authorization_code` for an authenticated client: the code redeemed and a new
/// grant issued over what it stands for.
pub(super) fn exchange(
    sim: &XeroSim,
    request: &CodeExchange<'_>,
    lifetimes: Lifetimes,
    now: DateTime<Utc>,
) -> Result<Issued, ExchangeError> {
    let consented = lock(&sim.shared.codes).redeem(request, now)?;
    Ok(lock(&sim.shared.tokens).consent(
        request.client_id,
        &consented.tenant_ids,
        consented.scope,
        lifetimes,
        now,
    ))
}
