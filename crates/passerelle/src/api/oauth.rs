//! OAuth consent for the ERPs whose tokens come from a person (Xero, QuickBooks): the admin
//! asks for an authorization URL (`oauth/start`), their browser consents at the ERP, and the
//! ERP sends it back to `oauth/callback` with a code and our `state`. The callback checks the
//! state (issued by us, once, within ten minutes), trades the code for tokens with the PKCE
//! verifier, seals them into the integration's credentials and sends the browser on to
//! `[api] oauth_return_url`.

use super::auth::Admin;
use super::problem::Problem;
use super::{ApiState, Params, parse_id};
use crate::service::{self, FieldError, FieldsInput};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use passerelle_connectors::consent;
use passerelle_core::{IntegrationId, IntegrationType};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::sync::Arc;
use utoipa::IntoParams;

/// How long a consent may take.
const CONSENT_LIFETIME: chrono::Duration = chrono::Duration::minutes(10);

/// Where to send the admin's browser.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsentStart {
    pub authorization_url: String,
    /// Our `state`, which the ERP hands back to the callback (also inside the URL).
    pub state: String,
    /// The callback address the ERP's app must list as a redirect URI.
    pub redirect_uri: String,
    pub expires_at: DateTime<Utc>,
}

fn random_token(bytes: usize) -> String {
    let mut buffer = vec![0_u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buffer)
}

fn state_hash(state: &str) -> [u8; 32] {
    sha2::Sha256::digest(state.as_bytes()).into()
}

fn redirect_uri(state: &ApiState) -> String {
    format!(
        "{}/api/v1/oauth/callback",
        state.settings.api.public_url.trim_end_matches('/')
    )
}

#[utoipa::path(post, path = "/integrations/{id}/oauth/start", tag = "oauth",
    params(("id" = i64, Path, description = "integration id")),
    responses((status = 200, body = ConsentStart), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn start(
    State(state): State<Arc<ApiState>>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<Json<ConsentStart>, Problem> {
    let id = parse_id::<IntegrationId>(&id, "integration")?;
    let integration = state.store.tenant_integration(caller.tenant, id).await?;
    let profile = consent::profile(
        integration.integration_type,
        integration.settings.as_ref(),
        &state.connectors,
    )
    .map_err(|e| Problem::field("settings", e))?
    .ok_or_else(|| {
        Problem::field(
            "type",
            format!(
                "{} credentials do not come from a consent; set them directly",
                integration.integration_type.display_name()
            ),
        )
    })?;
    let client_id = integration
        .open_credentials(&state.vault)?
        .and_then(|c| c.get_str("client_id").map(str::to_owned))
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            Problem::field(
                "credentials",
                "set the app's client_id and client_secret first; the consent brings the tokens",
            )
        })?;
    let consent_state = random_token(32);
    let verifier = random_token(48);
    let redirect = redirect_uri(&state);
    let expires_at = state.store.now() + CONSENT_LIFETIME;
    state
        .store
        .begin_consent(
            &state.vault,
            &integration,
            &state_hash(&consent_state),
            &verifier,
            &redirect,
            expires_at,
        )
        .await?;
    let url = profile.authorization_url(&client_id, &redirect, &consent_state, &verifier);
    tracing::info!(integration_id = id.0, "consent started");
    Ok(Json(ConsentStart {
        authorization_url: url.to_string(),
        state: consent_state,
        redirect_uri: redirect,
        expires_at,
    }))
}

/// What the ERP sends the browser back with (RFC 6749 §4.1.2; `realmId` is Intuit's).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    pub state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    #[serde(rename = "realmId")]
    #[param(rename = "realmId")]
    pub realm_id: Option<String>,
}

/// The browser's next stop: the configured page, or ours.
fn back_to(state: &ApiState, integration: IntegrationId, outcome: Result<(), String>) -> Response {
    let base = if state.settings.api.oauth_return_url.is_empty() {
        format!(
            "{}/api/v1/oauth/connected",
            state.settings.api.public_url.trim_end_matches('/')
        )
    } else {
        state.settings.api.oauth_return_url.clone()
    };
    let mut url = match url::Url::parse(&base) {
        Ok(url) => url,
        Err(e) => return Problem::internal(format!("api.oauth_return_url: {e}")).into_response(),
    };
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("integration", &integration.to_string());
        match &outcome {
            Ok(()) => query.append_pair("status", "connected"),
            Err(e) => query.append_pair("status", "error").append_pair("error", e),
        };
    }
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(url.as_str()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

#[utoipa::path(get, path = "/oauth/callback", tag = "oauth", security(()), params(CallbackQuery),
    responses((status = 303, description = "on to `[api] oauth_return_url` with `integration` and `status`"),
        (status = 400, body = Problem, description = "a state we did not issue, already used or expired")))]
pub async fn callback(
    State(state): State<Arc<ApiState>>,
    Params(q): Params<CallbackQuery>,
) -> Result<Response, Problem> {
    let forged = || {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "this consent's state was not issued by us, was used already or expired; start the connection again",
        )
    };
    let consent_state = q
        .state
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(forged)?;
    let pending = state
        .store
        .take_consent(&state.vault, &state_hash(consent_state))
        .await?
        .ok_or_else(forged)?;
    let id = pending.integration_id;
    let outcome = complete(&state, &pending, &q).await;
    match &outcome {
        Ok(()) => tracing::info!(integration_id = id.0, "consent completed; tokens stored"),
        Err(e) => tracing::warn!(integration_id = id.0, error = %e, "consent failed"),
    }
    Ok(back_to(&state, id, outcome))
}

/// Exchanges the code and stores the tokens; the error is what the return page shows.
async fn complete(
    state: &ApiState,
    pending: &passerelle_store::PendingConsent,
    q: &CallbackQuery,
) -> Result<(), String> {
    if let Some(error) = &q.error {
        return Err(match &q.error_description {
            Some(d) => format!("{error}: {d}"),
            None => error.clone(),
        });
    }
    let code = q
        .code
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or("the ERP sent no code")?;
    let integration = state
        .store
        .tenant_integration(pending.tenant_id, pending.integration_id)
        .await
        .map_err(|e| e.to_string())?;
    let settings = integration.settings.clone();
    if integration.integration_type == IntegrationType::QuickBooks
        && let Some(realm) = &q.realm_id
    {
        let configured = settings
            .as_ref()
            .and_then(|s| s.get("realm_id"))
            .and_then(|r| r.as_str());
        if configured.is_some_and(|c| c != realm) {
            return Err(format!(
                "the consent was given for QuickBooks company {realm}, not the configured realm_id {}",
                configured.unwrap_or_default()
            ));
        }
    }
    let profile = consent::profile(
        integration.integration_type,
        settings.as_ref(),
        &state.connectors,
    )
    .map_err(|e| e.to_string())?
    .ok_or("the integration's type takes no consent")?;
    let credentials = integration
        .open_credentials(&state.vault)
        .map_err(|e| e.to_string())?
        .ok_or("the integration has no client credentials")?;
    let tokens = profile
        .exchange_code(
            &state.connectors,
            &credentials,
            code,
            &pending.redirect_uri,
            &pending.code_verifier,
        )
        .await
        .map_err(|e| e.to_string())?;
    let fields = FieldsInput {
        credentials: Some(serde_json::Value::Object(tokens.expose().clone())),
        ..FieldsInput::default()
    };
    service::update(
        &state.store,
        Some(&state.vault),
        &state.connectors,
        &integration,
        None,
        &fields,
    )
    .await
    .map(|_| ())
    .map_err(|e| match e {
        service::ServiceError::Fields(errors) => errors
            .iter()
            .map(|FieldError { field, message }| format!("{field}: {message}"))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    })
}

#[utoipa::path(get, path = "/oauth/connected", tag = "oauth", security(()),
    responses((status = 200, description = "the page a browser lands on after a consent, when `[api] oauth_return_url` is not set")))]
pub async fn connected() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "The connection attempt is over: its outcome is in this page's address (status=connected or status=error). You may close this window.\n",
    )
}
