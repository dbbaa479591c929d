//! Test fixtures of the observation services (logs here, metrics above it): a store with
//! two accounts, each with one project and one preview of it.

use crate::{
    model::{
        account::{Account, Actor},
        preview::Preview,
        project::{Project, ProjectStatus},
    },
    names::{Handle, ProjectName},
    store::{self, Store},
};

/// A store in `dir` with account `acc_a` (project `prj_a`, its preview `prv_a`) and
/// account `acc_b` (project `prj_b`, its preview `prv_b`), and an actor of each.
pub(crate) fn two_accounts(dir: &std::path::Path) -> (Store, Actor, Actor) {
    let store = Store::open(dir).unwrap();
    let mut actors = ["a", "b"].map(|side| {
        let account = Account {
            id: format!("acc_{side}"),
            handle: Handle::parse(&format!("owner-{side}")).unwrap(),
            created_at: String::new(),
        };
        let project = Project {
            id: format!("prj_{side}"),
            account_id: account.id.clone(),
            handle: account.handle.clone(),
            name: ProjectName::parse("web").unwrap(),
            runtime: None,
            status: ProjectStatus::Running,
            created_at: String::new(),
            updated_at: String::new(),
            instances: 1,
            size: None,
            preview_branches: Vec::new(),
            process_instances: Default::default(),
            build: Default::default(),
            health_check: None,
        };
        let preview = Preview {
            id: format!("prv_{side}"),
            project_id: project.id.clone(),
            hostname: format!("preview-{side}"),
            branch: Some("feature".into()),
            git_ref: "feature".into(),
            pull_request: None,
            sealed_env: None,
            ttl_secs: 3600,
            trigger: "api".into(),
            created_at: String::new(),
            updated_at: String::new(),
            expires_at: String::new(),
        };
        store
            .call_blocking(|c| {
                store::accounts::insert_account(c, &account)?;
                store::projects::insert(c, &project)?;
                store::previews::insert(c, &preview)
            })
            .unwrap();
        Some(Actor::operator(&account))
    });
    let alice = actors[0].take().unwrap();
    let bob = actors[1].take().unwrap();
    (store, alice, bob)
}
