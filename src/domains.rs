//! Hostnames of a project: its default hostname, the aliases attached to it, and the
//! certificate and DNS state of each.
//! Changing an alias changes the route table: the caller refreshes routing after
//! `add_alias` and `remove_alias` (routing is a later service than this one).
//! Invariant: an alias belongs to exactly one project across all accounts, never lies
//! under the base domain (those names are Cantila's to assign), and a project has at most
//! `domains.max_aliases_per_project` of them.

use std::time::Duration;

use crate::{
    accounts::Actor,
    clock,
    config::DomainsConfig,
    error::{Error, Result},
    model::project::Project,
    names::Hostname,
    store::{self, aliases::StoredAlias, Store},
    tls::{CertificateState, Tls, TlsMode},
};

/// The domains service handle: the store the aliases live in, TLS for certificate state,
/// and the config values an alias is checked against.
#[derive(Clone)]
pub struct Domains {
    store: Store,
    tls: Tls,
    base_domain: String,
    console_hostname: Option<String>,
    config: DomainsConfig,
}

#[derive(Debug, Clone)]
pub struct Alias {
    pub hostname: String,
    pub created_at: String,
}

impl From<StoredAlias> for Alias {
    fn from(stored: StoredAlias) -> Self {
        Self {
            hostname: stored.hostname,
            created_at: stored.created_at,
        }
    }
}

/// Whether a hostname is the project's default one or an alias.
#[derive(Debug, Clone, Copy)]
pub enum DomainKind {
    Default,
    Alias,
}

/// A hostname with its certificate and DNS state.
#[derive(Debug, Clone)]
pub struct Domain {
    pub hostname: String,
    pub kind: DomainKind,
    /// `pending`, `issued`, `failed`, `self-signed`, `manual`, or `none` (TLS off or not
    /// requested yet).
    pub certificate_status: String,
    pub certificate_issuer: Option<String>,
    pub certificate_expires_at: Option<String>,
    pub certificate_error: Option<String>,
    /// The addresses the hostname resolves to from this server, when the lookup answers.
    pub resolves_to: Option<Vec<String>>,
}

impl Domains {
    pub fn new(
        store: Store,
        tls: Tls,
        base_domain: String,
        console_hostname: Option<String>,
        config: DomainsConfig,
    ) -> Self {
        Self {
            store,
            tls,
            base_domain,
            console_hostname,
            config,
        }
    }

    /// The actor's project, or not found (another account's project too).
    async fn project(&self, actor: &Actor, project_id: String) -> Result<Project> {
        let account_id = actor.account_id.clone();
        self.store
            .call(move |c| store::projects::owned(c, &account_id, &project_id))
            .await
    }

    pub async fn list_aliases(&self, actor: &Actor, project_id: String) -> Result<Vec<Alias>> {
        let project = self.project(actor, project_id).await?;
        let aliases = self
            .store
            .call(move |c| store::aliases::of_project(c, &project.id))
            .await?;
        Ok(aliases.into_iter().map(Alias::from).collect())
    }

    /// Attaches a hostname; once the caller has refreshed routing it routes, and a
    /// certificate is requested in the background when TLS is on. One beyond
    /// `domains.max_aliases_per_project` answers 409 naming the limit; the count is taken
    /// in the insert's transaction, so concurrent adds cannot pass it together.
    pub async fn add_alias(
        &self,
        actor: &Actor,
        project_id: String,
        hostname: Hostname,
    ) -> Result<Alias> {
        if hostname.is_within(&self.base_domain) {
            return Err(Error::Invalid(format!(
                "`{hostname}` is under the base domain `{}`, whose names Cantila assigns; use a domain of your own",
                self.base_domain
            )));
        }
        if self.console_hostname.as_deref() == Some(hostname.as_str()) {
            return Err(Error::Conflict(format!(
                "`{hostname}` is this server's console hostname ([console] in the config); choose another name"
            )));
        }
        let project = self.project(actor, project_id).await?;
        let stored = StoredAlias {
            hostname: hostname.as_str().to_owned(),
            project_id: project.id.clone(),
            created_at: clock::now(),
        };
        let audit = store::Audit::by(
            actor,
            "alias.add",
            format!("{}:{}", stored.project_id, stored.hostname),
        );
        let saved = stored.clone();
        let limit = self.config.max_aliases_per_project;
        self.store
            .write_audited(audit, move |tx| {
                let count = store::aliases::count_of_project(tx, &saved.project_id)?;
                if count >= limit {
                    return Err(Error::Conflict(format!(
                        "the project already has {count} aliases, the limit (domains.max_aliases_per_project = {limit}); remove one first"
                    )));
                }
                store::aliases::insert(tx, &saved)
            })
            .await?;
        Ok(stored.into())
    }

    /// Detaches a hostname; it stops routing once the caller has refreshed routing, and
    /// then `forget_certificate` drops its certificate.
    pub async fn remove_alias(
        &self,
        actor: &Actor,
        project_id: String,
        hostname: String,
    ) -> Result<()> {
        let project = self.project(actor, project_id).await?;
        let audit = store::Audit::by(actor, "alias.remove", format!("{}:{hostname}", project.id));
        self.store
            .write_audited(audit, move |tx| {
                if !store::aliases::delete(tx, &project.id, &hostname)? {
                    return Err(Error::NotFound(format!(
                        "hostname `{hostname}` is not an alias of project `{}`",
                        project.id
                    )));
                }
                Ok(())
            })
            .await
    }

    /// Forgets a removed alias's certificate in the background.
    pub fn forget_certificate(&self, hostname: String) {
        let tls = self.tls.clone();
        tokio::spawn(async move {
            if let Err(err) = tls.forget(&hostname).await {
                tracing::warn!(host = %hostname, error = %err, "forgetting a removed alias's certificate");
            }
        });
    }

    /// Every hostname that reaches the project, with certificate and DNS state.
    pub async fn list_domains(&self, actor: &Actor, project_id: String) -> Result<Vec<Domain>> {
        let project = self.project(actor, project_id).await?;
        let mut hosts = vec![(
            project.default_hostname(&self.base_domain),
            DomainKind::Default,
        )];
        let id = project.id.clone();
        let aliases = self
            .store
            .call(move |c| store::aliases::of_project(c, &id))
            .await?;
        hosts.extend(
            aliases
                .into_iter()
                .map(|alias| (alias.hostname, DomainKind::Alias)),
        );
        let mut domains = Vec::with_capacity(hosts.len());
        for (hostname, kind) in hosts {
            domains.push(self.describe(hostname, kind).await);
        }
        Ok(domains)
    }

    async fn describe(&self, hostname: String, kind: DomainKind) -> Domain {
        let status = self.tls.status(&hostname);
        let state = self.tls.state(&hostname);
        let (certificate_status, certificate_error) = match (&status, &state, self.tls.mode()) {
            (Some(status), _, _) => (status.source.as_str().to_owned(), None),
            (None, Some(CertificateState::Pending), _) => ("pending".to_owned(), None),
            (None, Some(CertificateState::Failed { reason, .. }), _) => {
                ("failed".to_owned(), Some(reason.clone()))
            }
            (None, Some(CertificateState::Issued { .. }), _) => ("issued".to_owned(), None),
            (None, None, TlsMode::Off) => ("none".to_owned(), None),
            (None, None, TlsMode::Acme | TlsMode::SelfSigned) => ("pending".to_owned(), None),
        };
        Domain {
            certificate_issuer: status.as_ref().map(|s| s.issuer.clone()),
            certificate_expires_at: status.as_ref().map(|s| s.not_after.clone()),
            resolves_to: resolve(&hostname).await,
            hostname,
            kind,
            certificate_status,
            certificate_error,
        }
    }
}

/// The addresses `hostname` resolves to from this server; empty when the lookup fails,
/// `None` when it does not answer within two seconds.
async fn resolve(hostname: &str) -> Option<Vec<String>> {
    let lookup = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::lookup_host((hostname.to_owned(), 443)),
    )
    .await;
    match lookup {
        Ok(Ok(addresses)) => {
            let mut ips: Vec<String> = addresses.map(|a| a.ip().to_string()).collect();
            ips.sort();
            ips.dedup();
            Some(ips)
        }
        Ok(Err(_)) => Some(Vec::new()),
        Err(_) => None,
    }
}
