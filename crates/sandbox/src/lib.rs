//! ERP simulators for Passerelle's end-to-end tests and demo, served on loopback.
//!
//! Each simulator is faithful to the API its connector speaks (paths, auth, status codes,
//! error bodies, rate limits) and strict: it refuses whatever the real API may refuse, and
//! counts what it was asked to do, so a test can prove "every record created exactly once".
//! Faults (errors, latency, timeouts, malformed bodies, lost responses) are injected per
//! account.
//!
//! This crate depends on nothing of Passerelle's, so it cannot share a mistake with the
//! connectors it checks.

mod authorization;
pub mod custom_api;
pub mod dataverse;
mod fault_plan;
mod faults;
mod guard;
mod idempotency;
pub mod netsuite;
pub mod odoo;
mod problem;
pub mod quickbooks;
pub mod sage;
pub mod sap_b1;
pub mod xero;

use axum::Router;
use custom_api::CustomApiSim;
use dataverse::DataverseSim;
use netsuite::NetSuiteSim;
use odoo::OdooSim;
use quickbooks::QuickBooksSim;
use sage::SageSim;
use sap_b1::SapB1Sim;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use xero::XeroSim;

/// How long [`Sandbox::shutdown`] lets in-flight requests finish before cutting them off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid account: {0}")]
    InvalidAccount(String),
    #[error("invalid fault: {0}")]
    InvalidFault(String),
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    #[error("no account with API key {0:?}")]
    UnknownAccount(String),
    #[error("no collection {0:?} (products, customers, orders, invoices, inventory)")]
    UnknownCollection(String),
    #[error("no live {collection} record with id {id:?}")]
    UnknownRecord { collection: String, id: String },
    #[error("invalid Xero app: {0}")]
    InvalidApp(String),
    #[error("no Xero app with client id {0:?}")]
    UnknownApp(String),
    #[error("no Xero tenant {0:?}")]
    UnknownTenant(String),
    #[error("no Xero collection {0:?} (Contacts, Items, Invoices, Quotes)")]
    UnknownXeroCollection(String),
    #[error("no QuickBooks realm {0:?}")]
    UnknownRealm(String),
    #[error("no QuickBooks entity {0:?} (Item, Customer, Invoice, Estimate)")]
    UnknownQuickBooksEntity(String),
    #[error("invalid SAP B1 company: {0}")]
    InvalidCompany(String),
    #[error("no SAP B1 company database {0:?}")]
    UnknownCompany(String),
    #[error("invalid Dataverse environment: {0}")]
    InvalidEnvironment(String),
    #[error("no Dataverse environment {0:?}")]
    UnknownEnvironment(String),
    #[error(
        "no Dataverse table {0:?} (accounts, products, salesorders, salesorderdetails, invoices, invoicedetails, uomschedules, uoms, pricelevels)"
    )]
    UnknownDataverseTable(String),
    #[error("no SAP B1 collection {0:?} (Items, BusinessPartners, Orders, Invoices)")]
    UnknownSapB1Collection(String),
    #[error("invalid Odoo database: {0}")]
    InvalidDatabase(String),
    #[error("no Odoo database {0:?}")]
    UnknownDatabase(String),
    #[error("invalid NetSuite account: {0}")]
    InvalidNetSuiteAccount(String),
    #[error("no NetSuite account {0:?}")]
    UnknownNetSuiteAccount(String),
    #[error("no NetSuite record type {0:?} (inventoryItem, customer, salesOrder, invoice)")]
    UnknownNetSuiteRecordType(String),
    #[error("no NetSuite {record_type} with internal id {id:?}")]
    UnknownNetSuiteRecord { record_type: String, id: String },
    #[error(
        "no Odoo model {0:?} (product.product, res.partner, sale.order, sale.order.line, account.move, account.move.line, stock.location, stock.quant)"
    )]
    UnknownOdooModel(String),
    #[error("invalid Sage app: {0}")]
    InvalidSageApp(String),
    #[error("no Sage business {0:?}")]
    UnknownSageBusiness(String),
    #[error(
        "no Sage resource {0:?} (contacts, stock_items, stock_movements, sales_quotes, sales_estimates, sales_invoices)"
    )]
    UnknownSageResource(String),
}

/// The custom API simulator's routes under `/custom_api`. Unknown paths answer a
/// problem+json 404. [`sandbox_router`] serves every simulator.
///
/// Serving this yourself works, but call [`CustomApiSim::cancel_injected_waits`] before a
/// graceful shutdown, or a pending timeout fault holds it for minutes; [`Sandbox`] does so.
pub fn router(custom_api: &CustomApiSim) -> Router {
    Router::new()
        .nest("/custom_api", custom_api::routes(custom_api.clone()))
        .fallback(|uri: axum::http::Uri| async move {
            problem::Problem::not_found(format!("no route for {}", uri.path()))
        })
}

/// Every simulator's routes: the custom API under `/custom_api` (as [`router`]), Xero
/// under `/xero`, SAP Business One under `/sap_b1` and QuickBooks Online under
/// `/quickbooks`, Dataverse (Dynamics 365) under `/dataverse`, Odoo under `/odoo`,
/// NetSuite under `/netsuite` and Sage Business Cloud Accounting under `/sage`. What
/// [`Sandbox`] serves.
///
/// Call every simulator's `cancel_injected_waits` before a graceful shutdown of a server you
/// built with this.
// One argument per simulator: a new simulator is one more argument, not a new API.
#[allow(clippy::too_many_arguments)]
pub fn sandbox_router(
    custom_api: &CustomApiSim,
    xero: &XeroSim,
    sap_b1: &SapB1Sim,
    quickbooks: &QuickBooksSim,
    dataverse: &DataverseSim,
    odoo: &OdooSim,
    netsuite: &NetSuiteSim,
    sage: &SageSim,
) -> Router {
    router(custom_api)
        .nest("/xero", xero::routes(xero.clone()))
        .nest("/sap_b1", sap_b1::routes(sap_b1.clone()))
        .nest("/quickbooks", quickbooks::routes(quickbooks.clone()))
        .nest("/dataverse", dataverse::routes(dataverse.clone()))
        .nest("/odoo", odoo::routes(odoo.clone()))
        .nest("/netsuite", netsuite::routes(netsuite.clone()))
        .nest("/sage", sage::routes(sage.clone()))
}

/// A running sandbox server on loopback. Dropping it stops it too, without waiting.
#[derive(Debug)]
pub struct Sandbox {
    addr: SocketAddr,
    custom_api: CustomApiSim,
    xero: XeroSim,
    sap_b1: SapB1Sim,
    quickbooks: QuickBooksSim,
    dataverse: DataverseSim,
    odoo: OdooSim,
    netsuite: NetSuiteSim,
    sage: SageSim,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl Sandbox {
    /// Binds `127.0.0.1:port` (0 = any free port) and serves every simulator. Returns once
    /// listening.
    pub async fn start(port: u16) -> Result<Sandbox, SandboxError> {
        let bind_error = |source| SandboxError::Bind { port, source };
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let custom_api = CustomApiSim::new();
        let xero = XeroSim::new();
        let sap_b1 = SapB1Sim::new();
        let quickbooks = QuickBooksSim::new();
        let dataverse = DataverseSim::new();
        let odoo = OdooSim::new();
        let netsuite = NetSuiteSim::new();
        let sage = SageSim::new();
        let app = sandbox_router(
            &custom_api,
            &xero,
            &sap_b1,
            &quickbooks,
            &dataverse,
            &odoo,
            &netsuite,
            &sage,
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let serving = axum::serve(listener, app).with_graceful_shutdown(async move {
                // A dropped sender means the Sandbox is gone: stop as well.
                let _ = stopped.await;
            });
            if let Err(error) = serving.await {
                tracing::error!(%error, "sandbox server failed");
            }
        });
        tracing::info!(%addr, "sandbox listening");
        Ok(Sandbox {
            addr,
            custom_api,
            xero,
            sap_b1,
            quickbooks,
            dataverse,
            odoo,
            netsuite,
            sage,
            stop: Some(stop),
            server: Some(server),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL of the custom API simulator, e.g. `http://127.0.0.1:41234/custom_api`: what
    /// goes in an integration's `settings.api_url`.
    pub fn custom_api_url(&self) -> String {
        format!("http://{}/custom_api", self.addr)
    }

    /// In-process access to the custom API simulator's accounts, records, faults and stats.
    pub fn custom_api(&self) -> &CustomApiSim {
        &self.custom_api
    }

    /// Base URL of the Xero simulator, e.g. `http://127.0.0.1:41234/xero`: the API is at
    /// `{base}/api.xro/2.0`, the authorization endpoint at `{base}/identity/connect/authorize`,
    /// the token endpoint at `{base}/identity/connect/token` and the tenant connections at
    /// `{base}/connections`.
    pub fn xero_url(&self) -> String {
        format!("http://{}/xero", self.addr)
    }

    /// In-process access to the Xero simulator's apps, tenants, records, faults and stats.
    pub fn xero(&self) -> &XeroSim {
        &self.xero
    }

    /// Base URL of the SAP Business One simulator, e.g. `http://127.0.0.1:41234/sap_b1`:
    /// what goes in an integration's `settings.server`; the Service Layer is at
    /// `{base}/b1s/v1`.
    pub fn sap_b1_url(&self) -> String {
        format!("http://{}/sap_b1", self.addr)
    }

    /// In-process access to the SAP B1 simulator's companies, records, faults and stats.
    pub fn sap_b1(&self) -> &SapB1Sim {
        &self.sap_b1
    }

    /// Base URL of the QuickBooks Online simulator, e.g. `http://127.0.0.1:41234/quickbooks`:
    /// the API is at `{base}/v3/company/{realmId}/…` (what goes in `settings.api_url`), the
    /// authorization endpoint at `{base}/connect/oauth2` and the token endpoint at
    /// `{base}/oauth2/v1/tokens/bearer`.
    pub fn quickbooks_url(&self) -> String {
        format!("http://{}/quickbooks", self.addr)
    }

    /// In-process access to the QuickBooks simulator's apps, realms, records, faults and stats.
    pub fn quickbooks(&self) -> &QuickBooksSim {
        &self.quickbooks
    }

    /// Base URL of the Dataverse simulator, e.g. `http://127.0.0.1:41234/dataverse`: an
    /// environment's URL (`settings.environment_url`) is `{base}/env/{org}` (Web API at
    /// `{base}/env/{org}/api/data/v9.2`), the token endpoint of a tenant
    /// `{base}/login/{tenant}/oauth2/v2.0/token`.
    pub fn dataverse_url(&self) -> String {
        format!("http://{}/dataverse", self.addr)
    }

    /// In-process access to the Dataverse simulator's environments, rows, faults and stats.
    pub fn dataverse(&self) -> &DataverseSim {
        &self.dataverse
    }

    /// Base URL of the Odoo simulator, e.g. `http://127.0.0.1:41234/odoo`: XML-RPC at
    /// `{base}/xmlrpc/2/common` and `{base}/xmlrpc/2/object`, JSON-2 at
    /// `{base}/json/2/{model}/{method}`.
    pub fn odoo_url(&self) -> String {
        format!("http://{}/odoo", self.addr)
    }

    /// In-process access to the Odoo simulator's databases, records, faults and stats.
    pub fn odoo(&self) -> &OdooSim {
        &self.odoo
    }

    /// REST base of a NetSuite account of the simulator, e.g.
    /// `http://127.0.0.1:41234/netsuite/1234567-sb1` for `1234567_SB1`: what goes in an
    /// integration's `settings.api_url` (it stands for
    /// `https://1234567-sb1.suitetalk.api.netsuite.com`). The record API is at
    /// `{base}/services/rest/record/v1`, SuiteQL at `{base}/services/rest/query/v1/suiteql`,
    /// the M2M token endpoint at `{base}/services/rest/auth/oauth2/v1/token`.
    pub fn netsuite_url(&self, account_id: &str) -> String {
        format!(
            "http://{}/netsuite/{}",
            self.addr,
            netsuite::url_form(account_id)
        )
    }

    /// In-process access to the NetSuite simulator's accounts, records, faults and stats.
    pub fn netsuite(&self) -> &NetSuiteSim {
        &self.netsuite
    }

    /// Base URL of the Sage Business Cloud Accounting simulator, e.g.
    /// `http://127.0.0.1:41234/sage`: the API is at `{base}/v3.1` (standing for
    /// `https://api.accounting.sage.com/v3.1`), the authorization endpoint at
    /// `{base}/oauth2/auth/central` and the token endpoint at `{base}/oauth/token`.
    pub fn sage_url(&self) -> String {
        format!("http://{}/sage", self.addr)
    }

    /// In-process access to the Sage simulator's apps, businesses, records, faults and stats.
    pub fn sage(&self) -> &SageSim {
        &self.sage
    }

    /// Stops serving: no new connections; requests in flight (injected waits cut short)
    /// get a few seconds to finish.
    pub async fn shutdown(mut self) {
        self.begin_shutdown();
        if let Some(mut server) = self.server.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
                .await
                .is_err()
        {
            tracing::warn!("sandbox requests still running after the grace period; aborting");
            server.abort();
        }
    }

    fn begin_shutdown(&mut self) {
        self.custom_api.cancel_injected_waits();
        self.xero.cancel_injected_waits();
        self.quickbooks.cancel_injected_waits();
        self.sap_b1.cancel_injected_waits();
        self.dataverse.cancel_injected_waits();
        self.odoo.cancel_injected_waits();
        self.netsuite.cancel_injected_waits();
        self.sage.cancel_injected_waits();
        if let Some(stop) = self.stop.take() {
            // The server may already be gone; nothing left to stop then.
            let _ = stop.send(());
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}
