//! `cantila admin`: account and token bootstrap straight on the data directory, for the
//! operator on the server. Safe while the daemon runs: SQLite's WAL and busy timeout
//! serialise the two writers. `restore` is the exception: it runs with the daemon stopped,
//! onto a data directory without state.

use clap::Subcommand;

use crate::{
    accounts::{self, Actor},
    config::Overrides,
    names::{Handle, Scope, TokenName},
    state_restore::{self, RestoreRequest, Source},
    store::Store,
};

use super::{output, AdminArgs};

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Accounts.
    #[command(subcommand)]
    Account(AccountCommand),
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Restore Cantila's own state from a state backup onto an empty data directory (a
    /// new server), with the daemon stopped. ARCHIVE is a .cstate file, s3://BUCKET/KEY or
    /// s3://BUCKET/latest (the bucket of [backups.s3]). The passphrase comes from
    /// CANTILA_STATE_BACKUP_PASSPHRASE or [state_backup] passphrase_file.
    Restore {
        archive: String,
        /// The old server's secret.key, needed when the archive is unencrypted.
        #[arg(long, value_name = "FILE")]
        secret_key: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Back up Cantila's own state now (safe while the daemon runs): the database, the
    /// installation id and, with a passphrase (CANTILA_STATE_BACKUP_PASSPHRASE or
    /// [state_backup] passphrase_file), secret.key, the certificates and the config file;
    /// copied to S3 and verified when [backups.s3] is on.
    Backup {
        /// Write the archive here instead of <data_dir>/state-backups/<id>.cstate.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create an account; prints its id.
    Create { handle: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a token; prints only the token on stdout.
    Create {
        #[arg(long)]
        account: String,
        /// read, deploy or admin.
        #[arg(long)]
        scope: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// List an account's tokens (never their secrets).
    List {
        #[arg(long)]
        account: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id.
    Revoke {
        #[arg(long)]
        account: String,
        id: String,
    },
}

pub fn run(args: AdminArgs) -> anyhow::Result<()> {
    let config = args.paths.load(Overrides::default())?;
    // A restore writes into a data directory without a store: only the other commands
    // open (and so create) one.
    let open = || Store::open(&config.data_dir);
    match args.command {
        AdminCommand::Restore {
            archive,
            secret_key,
            json,
        } => restore(&config, &archive, secret_key, json)?,
        AdminCommand::Account(AccountCommand::Create { handle }) => {
            let store = open()?;
            let account = accounts::create_account(&store, Handle::parse(&handle)?)?;
            println!("{}", account.id);
        }
        AdminCommand::Token(TokenCommand::Create {
            account,
            scope,
            name,
        }) => {
            let store = open()?;
            let scope = Scope::parse(&scope)?;
            let name = name.as_deref().map(TokenName::parse).transpose()?;
            let account = accounts::account_by_handle(&store, &Handle::parse(&account)?)?;
            let token =
                accounts::create_token_blocking(&store, &Actor::operator(&account), scope, name)?;
            println!("{}", token.secret);
        }
        AdminCommand::Token(TokenCommand::List { account, json }) => {
            let store = open()?;
            let account = accounts::account_by_handle(&store, &Handle::parse(&account)?)?;
            let tokens = accounts::list_tokens_blocking(&store, &account)?;
            let views: Vec<_> = tokens
                .iter()
                .map(crate::api::tokens::TokenView::from)
                .collect();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "tokens": views }))?
                );
            } else {
                output::print_tokens(&serde_json::to_value(&views)?);
            }
        }
        AdminCommand::Backup { out, json } => {
            super::state_backup::backup(&config, open()?, out, json)?
        }
        AdminCommand::Token(TokenCommand::Revoke { account, id }) => {
            let store = open()?;
            let account = accounts::account_by_handle(&store, &Handle::parse(&account)?)?;
            accounts::revoke_token_blocking(&store, &Actor::operator(&account), &id)?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

/// `cantila admin restore`: runs the restore and prints what came back and what to do next.
fn restore(
    config: &crate::config::Config,
    archive: &str,
    secret_key: Option<std::path::PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    let source = Source::parse(archive).map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let restored = runtime.block_on(state_restore::restore(
        config,
        RestoreRequest { source, secret_key },
    ))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&restored)?);
        return Ok(());
    }
    println!(
        "restored {} into {}",
        restored.archive,
        restored.data_dir.display()
    );
    println!("  sha256:        {}", restored.sha256);
    println!(
        "  backed up:     {} by Cantila {} (schema {})",
        restored.backed_up_at, restored.cantila_version, restored.schema_version
    );
    println!("  installation:  {}", restored.installation_id);
    println!(
        "  accounts ({}): {}",
        restored.accounts.len(),
        restored.accounts.join(", ")
    );
    println!(
        "  projects ({}): {}",
        restored.projects.len(),
        if restored.projects.is_empty() {
            "none".to_owned()
        } else {
            restored.projects.join(", ")
        }
    );
    if !restored.certificates {
        println!("  certificates:  not in the archive; they are issued again on first start");
    }
    if let Some(path) = &restored.config_file {
        println!(
            "  config:        the file the backed-up daemon ran with is in {} (owner-only); review it and start with --config",
            path.display()
        );
    }
    println!("next steps:");
    println!("  1. start the daemon (`cantila serve`): releases are pulled again or rebuilt from their recorded commits");
    println!("  2. then `cantila backups restore-latest` restores the projects' data from their newest backups");
    println!("  the API tokens of the old server work again (none at hand: `cantila admin token create --account HANDLE --scope admin`); point DNS at this server");
    Ok(())
}
