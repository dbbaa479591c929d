//! The route table as a pure function of a `Snapshot`: what the store says should be
//! served (projects, running deploys, aliases, previews and their newest statuses), what
//! the runtime reports (instances and their addresses), routing's own side tables
//! (instances draining, deploys being switched to), which hostnames have a certificate,
//! and the config values a route needs. `build` reads nothing else and changes nothing:
//! it returns the table and the served hostnames that still lack a certificate.
//!
//! Invariant: a hostname only ever routes to instances of the deploy that leads its
//! release target (the store's `running` one, or the one being switched to), never to a
//! draining instance; everything else answers 503 with the state.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
};

use crate::{
    edge::{routes::AssetMount, Route, RouteTable, RouteTarget},
    model::{
        deploy::{Deploy, DeployStatus},
        preview::Preview,
        project::Project,
    },
};

/// Everything a route table is built from, read at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub projects: Vec<Project>,
    /// The deploys the store records `running` (one per release target).
    pub running: Vec<Deploy>,
    /// Deploys being switched to: each leads its release target's routes before the store
    /// records it `running`.
    pub switching: Vec<Deploy>,
    pub aliases: Vec<Alias>,
    pub previews: Vec<Preview>,
    /// The newest deploy's status of each preview, by preview id.
    pub preview_statuses: HashMap<String, DeployStatus>,
    /// The web instances the runtime reports running.
    pub instances: Vec<Instance>,
    /// Instances (by container id) taken out of the table before they stop.
    pub draining: HashSet<String>,
    /// The hostnames a certificate valid now covers.
    pub certified: HashSet<String>,
    pub base_domain: String,
    /// Where published static sites live (`<sites_dir>/<project>/<deploy>`).
    pub sites_dir: PathBuf,
    /// Where container releases' extracted assets live.
    pub assets_dir: PathBuf,
    /// The console's hostname when `[console]` is on: served by the edge itself, outside
    /// the table, but certified like any served hostname.
    pub console_hostname: Option<String>,
}

/// An alias hostname of a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub project_id: String,
    pub hostname: String,
}

/// A web instance the runtime reports running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub container_id: String,
    /// The deploy it runs.
    pub deploy_id: String,
    /// Its address on its release target's network (or the shared one of earlier
    /// versions, until it is moved).
    pub address: IpAddr,
}

/// A built table and the hostnames to ask a certificate for.
#[derive(Debug)]
pub struct Built {
    pub table: RouteTable,
    /// Served hostnames without a certificate, and the console's when it has none, in
    /// table order; a hostname may appear twice.
    pub uncertified: Vec<String>,
}

impl Snapshot {
    /// Every hostname a table built from this snapshot can hold, and the console's: the
    /// ones whose certificates the snapshot records.
    pub fn hostnames(&self) -> impl Iterator<Item = String> + '_ {
        let defaults = self
            .projects
            .iter()
            .map(|project| project.default_hostname(&self.base_domain));
        let aliases = self.aliases.iter().map(|alias| alias.hostname.clone());
        let previews = self.previews.iter().map(|preview| preview.hostname.clone());
        defaults
            .chain(aliases)
            .chain(previews)
            .chain(self.console_hostname.clone())
    }
}

/// Whether any deploy that leads a release target runs in containers, so the runtime's
/// instances are worth asking for.
pub fn needs_instances(running: &[Deploy], switching: &[Deploy]) -> bool {
    leading_deploys(running, switching)
        .iter()
        .any(|deploy| !is_static(deploy))
}

/// Builds the table: each project's default hostname and aliases route to its
/// production's leading deploy, each preview's hostname to the preview's.
pub fn build(snapshot: &Snapshot) -> Built {
    let leading = leading_deploys(&snapshot.running, &snapshot.switching);
    let production: HashMap<&str, &Deploy> = leading
        .iter()
        .filter(|deploy| deploy.preview_id.is_none())
        .map(|deploy| (deploy.project_id.as_str(), *deploy))
        .collect();
    let by_preview: HashMap<&str, &Deploy> = leading
        .iter()
        .filter_map(|deploy| Some((deploy.preview_id.as_deref()?, *deploy)))
        .collect();
    let instances = addresses_by_deploy(&snapshot.instances, &snapshot.draining);
    let mut aliases: HashMap<&str, Vec<&str>> = HashMap::new();
    for alias in &snapshot.aliases {
        aliases
            .entry(alias.project_id.as_str())
            .or_default()
            .push(&alias.hostname);
    }

    let mut built = Built {
        table: RouteTable::new(),
        uncertified: Vec::new(),
    };
    for project in &snapshot.projects {
        let serving = production.get(project.id.as_str()).copied();
        let target = production_target(snapshot, project, serving, &instances);
        let assets = assets_of(snapshot, project, &target, serving);
        let mut hosts = vec![project.default_hostname(&snapshot.base_domain)];
        hosts.extend(
            aliases
                .get(project.id.as_str())
                .into_iter()
                .flatten()
                .map(|host| (*host).to_owned()),
        );
        for host in hosts {
            let https_redirect = built.certify(snapshot, &host, serving.is_some());
            let route = Route::new(
                project.id.clone(),
                project.name.to_string(),
                target.clone(),
                https_redirect,
            )
            .with_assets(assets.clone());
            built.table.insert(&host, Arc::new(route));
        }
    }
    for preview in &snapshot.previews {
        let Some(project) = snapshot
            .projects
            .iter()
            .find(|p| p.id == preview.project_id)
        else {
            continue;
        };
        let serving = by_preview.get(preview.id.as_str()).copied();
        let target = preview_target(snapshot, project, preview, serving, &instances);
        let assets = assets_of(snapshot, project, &target, serving);
        let https_redirect = built.certify(snapshot, &preview.hostname, serving.is_some());
        let route = Route::new(
            project.id.clone(),
            format!("{} (preview)", project.name),
            target,
            https_redirect,
        )
        .for_preview(preview.id.clone())
        .with_assets(assets);
        built.table.insert(&preview.hostname, Arc::new(route));
    }
    if let Some(console) = &snapshot.console_hostname {
        if !snapshot.certified.contains(console) {
            built.uncertified.push(console.clone());
        }
    }
    built
}

impl Built {
    /// Whether plain HTTP on `host` moves to HTTPS: once the hostname has a certificate.
    /// A served hostname without one is noted for a certificate request.
    fn certify(&mut self, snapshot: &Snapshot, host: &str, serving: bool) -> bool {
        let certified = snapshot.certified.contains(host);
        if serving && !certified {
            self.uncertified.push(host.to_owned());
        }
        certified
    }
}

/// The store's running deploys, each release target's replaced by the deploy being
/// switched to, if any.
fn leading_deploys<'a>(running: &'a [Deploy], switching: &'a [Deploy]) -> Vec<&'a Deploy> {
    let mut leading: Vec<&Deploy> = running.iter().collect();
    for switching in switching {
        leading.retain(|deploy| {
            deploy.project_id != switching.project_id || deploy.preview_id != switching.preview_id
        });
        leading.push(switching);
    }
    leading
}

/// The addresses of the instances not draining, by deploy id.
fn addresses_by_deploy<'a>(
    instances: &'a [Instance],
    draining: &HashSet<String>,
) -> HashMap<&'a str, Vec<IpAddr>> {
    let mut by_deploy: HashMap<&str, Vec<IpAddr>> = HashMap::new();
    for instance in instances {
        if draining.contains(&instance.container_id) {
            continue;
        }
        by_deploy
            .entry(instance.deploy_id.as_str())
            .or_default()
            .push(instance.address);
    }
    by_deploy
}

/// Where a project's production requests go: its leading deploy's target; 503 "stopped"
/// when it is scaled to zero (a static site has no instances to stop), or the project's
/// status while nothing runs.
fn production_target(
    snapshot: &Snapshot,
    project: &Project,
    serving: Option<&Deploy>,
    instances: &HashMap<&str, Vec<IpAddr>>,
) -> RouteTarget {
    match serving {
        Some(deploy) if project.instances == 0 && !is_static(deploy) => RouteTarget::Unavailable {
            state: "stopped".to_owned(),
        },
        Some(deploy) => target_of(snapshot, project, deploy, instances),
        None => RouteTarget::Unavailable {
            state: project.status.as_str().to_owned(),
        },
    }
}

/// Where a preview's requests go: its leading deploy's target; while nothing runs, 503
/// "failed" when its newest deploy failed or was canceled, else "building".
fn preview_target(
    snapshot: &Snapshot,
    project: &Project,
    preview: &Preview,
    serving: Option<&Deploy>,
    instances: &HashMap<&str, Vec<IpAddr>>,
) -> RouteTarget {
    match (serving, snapshot.preview_statuses.get(&preview.id)) {
        (Some(deploy), _) => target_of(snapshot, project, deploy, instances),
        (None, Some(DeployStatus::Failed | DeployStatus::Canceled)) => RouteTarget::Unavailable {
            state: "failed".to_owned(),
        },
        (None, _) => RouteTarget::Unavailable {
            state: "building".to_owned(),
        },
    }
}

/// Where a leading deploy's requests go: its published site, or its running instances
/// (503 "starting" while there are none).
fn target_of(
    snapshot: &Snapshot,
    project: &Project,
    deploy: &Deploy,
    instances: &HashMap<&str, Vec<IpAddr>>,
) -> RouteTarget {
    if is_static(deploy) {
        return RouteTarget::Static {
            root: snapshot.sites_dir.join(&project.id).join(&deploy.id),
            spa_fallback: false,
        };
    }
    let port = deploy
        .plan
        .as_ref()
        .and_then(|plan| plan.get("port"))
        .and_then(serde_json::Value::as_u64)
        .and_then(|port| u16::try_from(port).ok())
        .unwrap_or(crate::plan::DEFAULT_PORT);
    let mut addresses: Vec<SocketAddr> = instances
        .get(deploy.id.as_str())
        .map(|ips| ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
        .unwrap_or_default();
    addresses.sort();
    if addresses.is_empty() {
        RouteTarget::Unavailable {
            state: "starting".to_owned(),
        }
    } else {
        RouteTarget::Instances(addresses)
    }
}

/// The asset files the edge answers before a running container release's instances.
fn assets_of(
    snapshot: &Snapshot,
    project: &Project,
    target: &RouteTarget,
    serving: Option<&Deploy>,
) -> Option<AssetMount> {
    match (target, serving) {
        (RouteTarget::Instances(_), Some(deploy)) => {
            crate::assets::mount_of(&snapshot.assets_dir, &project.id, deploy)
        }
        _ => None,
    }
}

/// A release the edge serves from disk instead of containers.
pub fn is_static(deploy: &Deploy) -> bool {
    deploy
        .plan
        .as_ref()
        .and_then(|plan| plan.get("builder"))
        .and_then(serde_json::Value::as_str)
        == Some("static")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::{json, Value};

    use super::*;
    use crate::{
        model::project::ProjectStatus,
        names::{Handle, ProjectName},
    };

    fn project(id: &str, name: &str, instances: u32, status: ProjectStatus) -> Project {
        Project {
            id: id.to_owned(),
            account_id: "acc_1".to_owned(),
            handle: Handle::parse("alice").unwrap(),
            name: ProjectName::parse(name).unwrap(),
            runtime: None,
            status,
            created_at: String::new(),
            updated_at: String::new(),
            instances,
            size: None,
            preview_branches: Vec::new(),
            process_instances: Default::default(),
            build: Default::default(),
            health_check: None,
        }
    }

    fn deploy(id: &str, project_id: &str, preview_id: Option<&str>, plan: Value) -> Deploy {
        Deploy {
            id: id.to_owned(),
            project_id: project_id.to_owned(),
            status: DeployStatus::Running,
            trigger: "api".to_owned(),
            git_ref: None,
            commit_sha: None,
            commit_message: None,
            plan: Some(plan),
            image: Some(format!("cantila/{id}")),
            failed_step: None,
            error: None,
            created_at: String::new(),
            building_at: None,
            releasing_at: None,
            finished_at: None,
            rollback_of: None,
            preview_id: preview_id.map(str::to_owned),
            image_digest: None,
            outcome: None,
        }
    }

    fn container_plan(port: u16) -> Value {
        json!({"builder": "dockerfile", "port": port})
    }

    fn static_plan() -> Value {
        json!({"builder": "static"})
    }

    fn preview(id: &str, project_id: &str, hostname: &str) -> Preview {
        Preview {
            id: id.to_owned(),
            project_id: project_id.to_owned(),
            hostname: hostname.to_owned(),
            branch: Some("feature".to_owned()),
            git_ref: "feature".to_owned(),
            pull_request: None,
            sealed_env: None,
            ttl_secs: 3600,
            trigger: "api".to_owned(),
            created_at: String::new(),
            updated_at: String::new(),
            expires_at: String::new(),
        }
    }

    fn instance(container_id: &str, deploy_id: &str, ip: &str) -> Instance {
        Instance {
            container_id: container_id.to_owned(),
            deploy_id: deploy_id.to_owned(),
            address: ip.parse().unwrap(),
        }
    }

    /// One running project `web` (`web.alice.example.test`) on port 3000 with two
    /// instances.
    fn serving_web() -> Snapshot {
        Snapshot {
            projects: vec![project("prj_web", "web", 1, ProjectStatus::Running)],
            running: vec![deploy("dep_1", "prj_web", None, container_plan(3000))],
            instances: vec![
                instance("c_b", "dep_1", "10.0.0.3"),
                instance("c_a", "dep_1", "10.0.0.2"),
            ],
            base_domain: "example.test".to_owned(),
            sites_dir: PathBuf::from("/data/sites"),
            assets_dir: PathBuf::from("/data/assets"),
            ..Snapshot::default()
        }
    }

    fn route<'a>(built: &'a Built, host: &str) -> &'a Route {
        built
            .table
            .lookup(host)
            .unwrap_or_else(|| panic!("no route for {host}"))
    }

    fn addresses(list: &[&str]) -> RouteTarget {
        RouteTarget::Instances(list.iter().map(|a| a.parse().unwrap()).collect())
    }

    fn unavailable(state: &str) -> RouteTarget {
        RouteTarget::Unavailable {
            state: state.to_owned(),
        }
    }

    #[test]
    fn production_routes_to_its_running_deploys_instances_on_the_plans_port() {
        let mut snapshot = serving_web();
        // An instance of another deploy (an old release still running) is not routed to.
        snapshot
            .instances
            .push(instance("c_old", "dep_0", "10.0.0.9"));
        let built = build(&snapshot);
        let web = route(&built, "web.alice.example.test");
        assert_eq!(web.target, addresses(&["10.0.0.2:3000", "10.0.0.3:3000"]));
        assert_eq!(web.project_id, "prj_web");
        assert_eq!(web.project_name, "web");
        assert_eq!(web.preview_id, None);
        assert_eq!(built.table.by_host.len(), 1);

        // A plan without a port: the default one.
        snapshot.running = vec![deploy("dep_1", "prj_web", None, json!({"builder": "node"}))];
        let built = build(&snapshot);
        assert_eq!(
            route(&built, "web.alice.example.test").target,
            addresses(&["10.0.0.2:8080", "10.0.0.3:8080"])
        );
    }

    #[test]
    fn a_running_deploy_without_instances_is_starting() {
        let mut snapshot = serving_web();
        snapshot.instances.clear();
        let built = build(&snapshot);
        assert_eq!(
            route(&built, "web.alice.example.test").target,
            unavailable("starting")
        );
    }

    #[test]
    fn a_project_without_a_running_deploy_answers_its_status() {
        let mut snapshot = serving_web();
        snapshot.running.clear();
        for status in [
            ProjectStatus::Created,
            ProjectStatus::Building,
            ProjectStatus::Failed,
        ] {
            snapshot.projects[0].status = status;
            let built = build(&snapshot);
            assert_eq!(
                route(&built, "web.alice.example.test").target,
                unavailable(status.as_str())
            );
        }
    }

    #[test]
    fn a_project_scaled_to_zero_is_stopped_unless_it_is_a_static_site() {
        let mut snapshot = serving_web();
        snapshot.projects[0].instances = 0;
        let built = build(&snapshot);
        assert_eq!(
            route(&built, "web.alice.example.test").target,
            unavailable("stopped")
        );

        snapshot.running = vec![deploy("dep_2", "prj_web", None, static_plan())];
        let built = build(&snapshot);
        assert!(matches!(
            route(&built, "web.alice.example.test").target,
            RouteTarget::Static { .. }
        ));
    }

    #[test]
    fn static_sites_are_served_from_the_sites_dir_without_asking_for_instances() {
        let mut snapshot = serving_web();
        snapshot.running = vec![deploy("dep_2", "prj_web", None, static_plan())];
        let built = build(&snapshot);
        let route = route(&built, "web.alice.example.test");
        assert_eq!(
            route.target,
            RouteTarget::Static {
                root: Path::new("/data/sites/prj_web/dep_2").to_owned(),
                spa_fallback: false,
            }
        );
        assert_eq!(route.assets, None);
        assert!(!needs_instances(&snapshot.running, &snapshot.switching));
        assert!(needs_instances(&serving_web().running, &[]));
    }

    #[test]
    fn aliases_route_like_the_default_hostname() {
        let mut snapshot = serving_web();
        snapshot
            .projects
            .push(project("prj_other", "other", 1, ProjectStatus::Created));
        snapshot.aliases = vec![
            Alias {
                project_id: "prj_web".to_owned(),
                hostname: "www.shop.test".to_owned(),
            },
            Alias {
                project_id: "prj_web".to_owned(),
                hostname: "shop.test".to_owned(),
            },
            Alias {
                project_id: "prj_other".to_owned(),
                hostname: "other.test".to_owned(),
            },
        ];
        let built = build(&snapshot);
        for host in ["www.shop.test", "shop.test", "WWW.Shop.test:80"] {
            let route = route(&built, host);
            assert_eq!(route.project_id, "prj_web", "{host}");
            assert_eq!(
                route.target,
                addresses(&["10.0.0.2:3000", "10.0.0.3:3000"]),
                "{host}"
            );
        }
        assert_eq!(route(&built, "other.test").target, unavailable("created"));
        assert_eq!(built.table.by_host.len(), 5);
    }

    #[test]
    fn a_preview_routes_to_its_own_deploy_never_production() {
        let mut snapshot = serving_web();
        snapshot.previews = vec![
            preview("pre_1", "prj_web", "feature-web-alice.example.test"),
            // A preview whose project is gone gets no route.
            preview("pre_9", "prj_gone", "gone.example.test"),
        ];
        snapshot.running.push(deploy(
            "dep_p",
            "prj_web",
            Some("pre_1"),
            container_plan(4000),
        ));
        snapshot
            .instances
            .push(instance("c_p", "dep_p", "10.0.1.2"));
        let built = build(&snapshot);
        let preview_route = route(&built, "feature-web-alice.example.test");
        assert_eq!(preview_route.target, addresses(&["10.0.1.2:4000"]));
        assert_eq!(preview_route.preview_id.as_deref(), Some("pre_1"));
        assert_eq!(preview_route.project_id, "prj_web");
        assert_eq!(preview_route.project_name, "web (preview)");
        assert_eq!(
            route(&built, "web.alice.example.test").target,
            addresses(&["10.0.0.2:3000", "10.0.0.3:3000"])
        );
        assert!(built.table.lookup("gone.example.test").is_none());
    }

    #[test]
    fn a_preview_without_a_running_deploy_is_building_or_failed() {
        let mut snapshot = serving_web();
        snapshot.previews = vec![preview("pre_1", "prj_web", "pre.example.test")];
        let built = build(&snapshot);
        assert_eq!(
            route(&built, "pre.example.test").target,
            unavailable("building")
        );
        for (status, state) in [
            (DeployStatus::Queued, "building"),
            (DeployStatus::Building, "building"),
            (DeployStatus::Failed, "failed"),
            (DeployStatus::Canceled, "failed"),
        ] {
            snapshot.preview_statuses = HashMap::from([("pre_1".to_owned(), status)]);
            let built = build(&snapshot);
            assert_eq!(
                route(&built, "pre.example.test").target,
                unavailable(state),
                "{status:?}"
            );
        }
    }

    #[test]
    fn https_redirects_once_certified_and_served_names_without_a_certificate_are_asked_for() {
        let mut snapshot = serving_web();
        snapshot
            .projects
            .push(project("prj_idle", "idle", 1, ProjectStatus::Created));
        snapshot.aliases = vec![Alias {
            project_id: "prj_web".to_owned(),
            hostname: "shop.test".to_owned(),
        }];
        snapshot.previews = vec![
            preview("pre_1", "prj_web", "pre.example.test"),
            preview("pre_2", "prj_web", "pending.example.test"),
        ];
        snapshot.running.push(deploy(
            "dep_p",
            "prj_web",
            Some("pre_1"),
            container_plan(4000),
        ));
        snapshot.console_hostname = Some("console.example.test".to_owned());
        snapshot.certified = HashSet::from(["shop.test".to_owned()]);
        let built = build(&snapshot);
        assert!(route(&built, "shop.test").https_redirect);
        assert!(!route(&built, "web.alice.example.test").https_redirect);
        assert!(!route(&built, "pre.example.test").https_redirect);
        // Served names only: a project or preview with nothing running waits.
        assert_eq!(
            built.uncertified,
            vec![
                "web.alice.example.test",
                "pre.example.test",
                "console.example.test"
            ]
        );

        snapshot.certified = snapshot.hostnames().collect();
        let built = build(&snapshot);
        assert!(built.uncertified.is_empty(), "{:?}", built.uncertified);
        for host in [
            "web.alice.example.test",
            "idle.alice.example.test",
            "pre.example.test",
            "pending.example.test",
        ] {
            assert!(route(&built, host).https_redirect, "{host}");
        }
    }

    #[test]
    fn a_container_release_with_assets_gets_its_mount_while_it_has_instances() {
        let mut snapshot = serving_web();
        snapshot.running[0].plan =
            Some(json!({"builder": "node", "port": 3000, "assetsDir": "static"}));
        let built = build(&snapshot);
        assert_eq!(
            route(&built, "web.alice.example.test").assets,
            Some(AssetMount {
                root: Path::new("/data/assets/prj_web/dep_1").to_owned(),
                url_prefix: vec!["static".to_owned()],
            })
        );
        // Nothing to answer for while no instance runs.
        snapshot.instances.clear();
        let built = build(&snapshot);
        assert_eq!(route(&built, "web.alice.example.test").assets, None);
        // Nor without an image to have copied them from.
        snapshot = serving_web();
        snapshot.running[0].plan = Some(json!({"builder": "node", "assetsDir": "public"}));
        snapshot.running[0].image = None;
        let built = build(&snapshot);
        assert_eq!(route(&built, "web.alice.example.test").assets, None);
    }

    #[test]
    fn draining_instances_are_left_out() {
        let mut snapshot = serving_web();
        snapshot.draining = HashSet::from(["c_b".to_owned()]);
        let built = build(&snapshot);
        assert_eq!(
            route(&built, "web.alice.example.test").target,
            addresses(&["10.0.0.2:3000"])
        );
        snapshot.draining.insert("c_a".to_owned());
        let built = build(&snapshot);
        assert_eq!(
            route(&built, "web.alice.example.test").target,
            unavailable("starting")
        );
    }

    #[test]
    fn a_deploy_being_switched_to_leads_its_release_target_only() {
        let mut snapshot = serving_web();
        snapshot.previews = vec![preview("pre_1", "prj_web", "pre.example.test")];
        snapshot.running.push(deploy(
            "dep_p",
            "prj_web",
            Some("pre_1"),
            container_plan(4000),
        ));
        snapshot.instances.extend([
            instance("c_p", "dep_p", "10.0.1.2"),
            instance("c_new", "dep_2", "10.0.0.7"),
        ]);
        snapshot.switching = vec![deploy("dep_2", "prj_web", None, container_plan(5000))];
        let built = build(&snapshot);
        assert_eq!(
            route(&built, "web.alice.example.test").target,
            addresses(&["10.0.0.7:5000"])
        );
        assert_eq!(
            route(&built, "pre.example.test").target,
            addresses(&["10.0.1.2:4000"])
        );
        // Switching a static production to a container release asks for instances.
        let mut snapshot = serving_web();
        snapshot.running = vec![deploy("dep_s", "prj_web", None, static_plan())];
        snapshot.switching = vec![deploy("dep_2", "prj_web", None, container_plan(5000))];
        assert!(needs_instances(&snapshot.running, &snapshot.switching));
        snapshot.running = vec![deploy("dep_1", "prj_web", None, container_plan(5000))];
        snapshot.switching = vec![deploy("dep_s", "prj_web", None, static_plan())];
        assert!(!needs_instances(&snapshot.running, &snapshot.switching));
    }

    #[test]
    fn hostnames_cover_the_table_and_the_console() {
        let mut snapshot = serving_web();
        snapshot.aliases = vec![Alias {
            project_id: "prj_web".to_owned(),
            hostname: "shop.test".to_owned(),
        }];
        snapshot.previews = vec![preview("pre_1", "prj_web", "pre.example.test")];
        snapshot.console_hostname = Some("console.example.test".to_owned());
        let hostnames: Vec<String> = snapshot.hostnames().collect();
        assert_eq!(
            hostnames,
            vec![
                "web.alice.example.test",
                "shop.test",
                "pre.example.test",
                "console.example.test"
            ]
        );
        let built = build(&snapshot);
        for host in built.table.by_host.keys() {
            assert!(hostnames.contains(host), "{host}");
        }
    }
}
