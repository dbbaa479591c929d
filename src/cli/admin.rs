//! `cantila admin`: account and token bootstrap straight on the data directory, for the
//! operator on the server. Safe while the daemon runs: SQLite's WAL and busy timeout
//! serialise the two writers.

use clap::Subcommand;

use crate::{
    accounts::{self, Actor},
    config::Overrides,
    names::{Handle, Scope, TokenName},
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
    let store = Store::open(&config.data_dir)?;
    match args.command {
        AdminCommand::Account(AccountCommand::Create { handle }) => {
            let account = accounts::create_account(&store, Handle::parse(&handle)?)?;
            println!("{}", account.id);
        }
        AdminCommand::Token(TokenCommand::Create {
            account,
            scope,
            name,
        }) => {
            let scope = Scope::parse(&scope)?;
            let name = name.as_deref().map(TokenName::parse).transpose()?;
            let account = accounts::account_by_handle(&store, &Handle::parse(&account)?)?;
            let token =
                accounts::create_token_blocking(&store, &Actor::operator(&account), scope, name)?;
            println!("{}", token.secret);
        }
        AdminCommand::Token(TokenCommand::List { account, json }) => {
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
            super::state_backup::backup(&config, store, out, json)?
        }
        AdminCommand::Token(TokenCommand::Revoke { account, id }) => {
            let account = accounts::account_by_handle(&store, &Handle::parse(&account)?)?;
            accounts::revoke_token_blocking(&store, &Actor::operator(&account), &id)?;
            println!("revoked {id}");
        }
    }
    Ok(())
}
