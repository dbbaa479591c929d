//! Certificate requests for served hostnames: a step after each refresh, never part of
//! building the table. Each hostname the refresh found served without a certificate (and
//! the console's) is handed to TLS in the background, at most one request per hostname in
//! flight; when one succeeds the table is rebuilt, so the redirect to HTTPS starts.

use std::{collections::HashSet, sync::Mutex};

use super::Routing;
use crate::tls::TlsMode;

/// The hostnames with a certificate request in flight, so refreshes do not start another.
#[derive(Debug, Default)]
pub(super) struct InFlight(Mutex<HashSet<String>>);

impl InFlight {
    /// Marks `host` as requested; false when a request for it is already in flight.
    fn start(&self, host: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host.to_owned())
    }

    fn finish(&self, host: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(host);
    }
}

impl Routing {
    /// Asks for a certificate for each of `hostnames` in the background when TLS is on;
    /// the TLS module keeps the outcome (and backs off after failures), visible on the
    /// project's domains.
    pub(super) fn request_certificates(&self, hostnames: Vec<String>) {
        if self.shared.tls.mode() == TlsMode::Off {
            return;
        }
        for host in hostnames {
            if !self.shared.certificates.start(&host) {
                continue;
            }
            let routing = self.clone();
            tokio::spawn(async move {
                match routing.shared.tls.ensure_certificate(&host).await {
                    Ok(_) => {
                        tracing::info!(%host, "certificate ready");
                        // The redirect to HTTPS starts with the next table.
                        let refresh = routing.clone();
                        tokio::spawn(async move {
                            let _ = refresh.refresh().await;
                        });
                    }
                    // `ensure_certificate` logged it, once per change of the hostname's
                    // state; a line per refresh would let one tenant's many hostnames
                    // flood the log.
                    Err(err) => {
                        tracing::debug!(%host, error = %err, "certificate request failed")
                    }
                }
                routing.shared.certificates.finish(&host);
            });
        }
    }
}
