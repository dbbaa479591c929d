//! The Docker label contract: every `cantila.*` label Cantila writes on the containers,
//! images, volumes and networks it makes, building those label maps, reading them back as
//! typed values, and the filters that list an owner's objects.
//! Invariant: this is the one place a label key or a `cantila.kind` value is spelled, and
//! both stay byte for byte what earlier versions wrote, so an installation still recognises
//! its own objects after an upgrade and never touches another installation's.

use std::collections::HashMap;

use crate::names::ProcessType;

/// A label key Cantila writes. The owner keys (installation, project, deploy, preview, and
/// on instances instance, process and size) say whose an object is; `kind` says what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// The installation that made the object: two installations sharing one engine never
    /// touch each other's objects.
    Installation,
    /// What the object is (a [`Kind`]).
    Kind,
    /// The project an app container, image, volume or network belongs to.
    Project,
    /// The deploy whose image or release the object is.
    Deploy,
    /// The preview the object belongs to; production's objects carry none.
    Preview,
    /// An instance's own random suffix; only instances carry it.
    Instance,
    /// The Procfile process type an instance runs (`web`, `worker`, ...).
    Process,
    /// The size tier an instance runs at.
    Size,
    /// The project a helper container works for. Helpers carry this instead of
    /// `cantila.project`, so nothing that manages a project's app containers (release
    /// switches, project deletion, volume checks) ever touches them.
    HelperFor,
    /// The name of a project's volume.
    Volume,
    /// The one-off run a `run` container executes.
    Run,
    /// The name of the project's service a `service` container runs.
    Service,
    /// The hash of everything a service's container was made from: one whose hash differs
    /// from the service's is replaced.
    SpecHash,
}

impl Key {
    pub const ALL: [Key; 13] = [
        Key::Installation,
        Key::Kind,
        Key::Project,
        Key::Deploy,
        Key::Preview,
        Key::Instance,
        Key::Process,
        Key::Size,
        Key::HelperFor,
        Key::Volume,
        Key::Run,
        Key::Service,
        Key::SpecHash,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Key::Installation => "cantila.installation",
            Key::Kind => "cantila.kind",
            Key::Project => "cantila.project",
            Key::Deploy => "cantila.deploy",
            Key::Preview => "cantila.preview",
            Key::Instance => "cantila.instance",
            Key::Process => "cantila.process",
            Key::Size => "cantila.size",
            Key::HelperFor => "cantila.helper-for",
            Key::Volume => "cantila.volume",
            Key::Run => "cantila.run",
            Key::Service => "cantila.service",
            Key::SpecHash => "cantila.spec-hash",
        }
    }
}

/// What an object is: the value of `cantila.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An instance of the `web` process type: the only kind the route table looks at.
    Web,
    /// An instance of any other process type.
    Worker,
    /// The one-off container running a release's release command.
    Release,
    /// A built image.
    Image,
    /// A project's named volume.
    Volume,
    /// A release target's bridge network.
    Network,
    /// A short-lived helper container (backups, restores, asset extraction).
    Helper,
    /// A one-off run's container (`runs`): never routed, never an instance.
    Run,
    /// A container of a project's service (`services`): never routed, never an instance,
    /// replaced only when its own spec changes.
    Service,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Web,
        Kind::Worker,
        Kind::Release,
        Kind::Image,
        Kind::Volume,
        Kind::Network,
        Kind::Helper,
        Kind::Run,
        Kind::Service,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Web => "web",
            Kind::Worker => "worker",
            Kind::Release => "release",
            Kind::Image => "image",
            Kind::Volume => "volume",
            Kind::Network => "network",
            Kind::Helper => "helper",
            Kind::Run => "run",
            Kind::Service => "service",
        }
    }

    /// `None` for a value Cantila never writes.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == value)
    }

    /// The kind of an instance running `process`: `web` instances are routed, every other
    /// process type is a worker.
    pub fn of_process(process: &ProcessType) -> Self {
        if process.is_web() {
            Kind::Web
        } else {
            Kind::Worker
        }
    }
}

/// One label of an object's label map, by key.
pub fn get(labels: &HashMap<String, String>, key: Key) -> Option<&str> {
    labels.get(key.as_str()).map(String::as_str)
}

/// The labels of one object, as typed values: what [`Labels::to_map`] writes and
/// [`Labels::parse`] reads back. A label the object does not carry is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    pub installation: Option<String>,
    /// `None` also for a kind Cantila never writes.
    pub kind: Option<Kind>,
    pub project: Option<String>,
    pub deploy: Option<String>,
    pub preview: Option<String>,
    pub instance: Option<String>,
    pub process: Option<String>,
    pub size: Option<String>,
    pub helper_for: Option<String>,
    pub volume: Option<String>,
    pub run: Option<String>,
    pub service: Option<String>,
    pub spec_hash: Option<String>,
}

impl Labels {
    /// An instance of a release: one container of the process type `process`, `instance`
    /// being its random suffix and `size` its size tier.
    pub fn instance(
        installation: &str,
        project: &str,
        deploy: &str,
        instance: &str,
        process: &ProcessType,
        size: &str,
    ) -> Self {
        Self {
            installation: Some(installation.to_owned()),
            kind: Some(Kind::of_process(process)),
            project: Some(project.to_owned()),
            deploy: Some(deploy.to_owned()),
            instance: Some(instance.to_owned()),
            process: Some(process.to_string()),
            size: Some(size.to_owned()),
            ..Self::default()
        }
    }

    /// The one-off container that runs a release's release command.
    pub fn release(installation: &str, project: &str, deploy: &str) -> Self {
        Self::of_deploy(Kind::Release, installation, project, deploy)
    }

    /// The container of a one-off run of a deploy's image. It carries the project and
    /// the deploy like the release's instances (so a project's deletion and the volume
    /// checks see it) but no instance or process label, so nothing that manages instances
    /// (routing, scaling, the reconciler, metrics, runtime logs) takes it for one.
    pub fn run(installation: &str, project: &str, deploy: &str, run: &str) -> Self {
        Self {
            run: Some(run.to_owned()),
            ..Self::of_deploy(Kind::Run, installation, project, deploy)
        }
    }

    /// A container of a project's service: production's (a preview never runs services),
    /// carrying the project (so the project's deletion and volume checks see it) but no
    /// deploy, instance or process label, so nothing that manages releases takes it for
    /// one of theirs.
    pub fn service(installation: &str, project: &str, service: &str, spec_hash: &str) -> Self {
        Self {
            installation: Some(installation.to_owned()),
            kind: Some(Kind::Service),
            project: Some(project.to_owned()),
            service: Some(service.to_owned()),
            spec_hash: Some(spec_hash.to_owned()),
            ..Self::default()
        }
    }

    /// An image a deploy built. Images carry no preview label: a preview's image is told
    /// from production's by its deploy.
    pub fn image(installation: &str, project: &str, deploy: &str) -> Self {
        Self::of_deploy(Kind::Image, installation, project, deploy)
    }

    fn of_deploy(kind: Kind, installation: &str, project: &str, deploy: &str) -> Self {
        Self {
            installation: Some(installation.to_owned()),
            kind: Some(kind),
            project: Some(project.to_owned()),
            deploy: Some(deploy.to_owned()),
            ..Self::default()
        }
    }

    /// A project's named volume.
    pub fn volume(installation: &str, project: &str, volume: &str) -> Self {
        Self {
            installation: Some(installation.to_owned()),
            kind: Some(Kind::Volume),
            project: Some(project.to_owned()),
            volume: Some(volume.to_owned()),
            ..Self::default()
        }
    }

    /// A release target's network (production's, or with [`Labels::in_preview`] a
    /// preview's).
    pub fn network(installation: &str, project: &str) -> Self {
        Self {
            installation: Some(installation.to_owned()),
            kind: Some(Kind::Network),
            project: Some(project.to_owned()),
            ..Self::default()
        }
    }

    /// A helper container working for a project (see [`Key::HelperFor`]).
    pub fn helper(installation: &str, helper_for: &str) -> Self {
        Self {
            installation: Some(installation.to_owned()),
            kind: Some(Kind::Helper),
            helper_for: Some(helper_for.to_owned()),
            ..Self::default()
        }
    }

    /// Marks the object as one preview's; `None` leaves it production's. Every container
    /// and network of a preview carries it, so production never counts, routes, logs or
    /// samples a preview's objects.
    pub fn in_preview(mut self, preview: Option<&str>) -> Self {
        self.preview = preview.map(str::to_owned);
        self
    }

    /// The label map handed to the engine.
    pub fn to_map(&self) -> HashMap<String, String> {
        Key::ALL
            .into_iter()
            .filter_map(|key| Some((key.as_str().to_owned(), self.value(key)?.to_owned())))
            .collect()
    }

    /// An object's labels read back. Labels that are not Cantila's are ignored.
    pub fn parse(labels: &HashMap<String, String>) -> Self {
        let read = |key| get(labels, key).map(str::to_owned);
        Self {
            installation: read(Key::Installation),
            kind: get(labels, Key::Kind).and_then(Kind::parse),
            project: read(Key::Project),
            deploy: read(Key::Deploy),
            preview: read(Key::Preview),
            instance: read(Key::Instance),
            process: read(Key::Process),
            size: read(Key::Size),
            helper_for: read(Key::HelperFor),
            volume: read(Key::Volume),
            run: read(Key::Run),
            service: read(Key::Service),
            spec_hash: read(Key::SpecHash),
        }
    }

    fn value(&self, key: Key) -> Option<&str> {
        match key {
            Key::Installation => self.installation.as_deref(),
            Key::Kind => self.kind.map(Kind::as_str),
            Key::Project => self.project.as_deref(),
            Key::Deploy => self.deploy.as_deref(),
            Key::Preview => self.preview.as_deref(),
            Key::Instance => self.instance.as_deref(),
            Key::Process => self.process.as_deref(),
            Key::Size => self.size.as_deref(),
            Key::HelperFor => self.helper_for.as_deref(),
            Key::Volume => self.volume.as_deref(),
            Key::Run => self.run.as_deref(),
            Key::Service => self.service.as_deref(),
            Key::SpecHash => self.spec_hash.as_deref(),
        }
    }

    /// The process type an instance runs; `None` for anything that is not an instance
    /// (release, helper and other containers). Web instances made before process types had
    /// a label of their own carry only `cantila.kind=web`.
    pub fn process_type(&self) -> Option<ProcessType> {
        match (&self.process, self.kind) {
            (Some(name), _) => ProcessType::parse(name).ok(),
            (None, Some(Kind::Web)) => ProcessType::parse(ProcessType::WEB).ok(),
            (None, _) => None,
        }
    }
}

/// Which objects a listing selects: labels that must have a value, and labels that must be
/// absent (which the engine cannot filter by, so they are checked on what it returns).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter<'a> {
    equal: Vec<(Key, &'a str)>,
    absent: Vec<Key>,
}

impl<'a> Filter<'a> {
    /// Every object (add conditions with the methods below).
    pub fn new() -> Self {
        Self::default()
    }

    /// This project's production containers: labelled with the project and with no
    /// preview. Helpers carry `cantila.helper-for` instead, so they are not among them.
    pub fn production(project: &'a str) -> Self {
        Self::new().project(project).target(None)
    }

    pub fn installation(self, installation: &'a str) -> Self {
        self.with(Key::Installation, installation)
    }

    pub fn project(self, project: &'a str) -> Self {
        self.with(Key::Project, project)
    }

    pub fn deploy(self, deploy: &'a str) -> Self {
        self.with(Key::Deploy, deploy)
    }

    pub fn preview(self, preview: &'a str) -> Self {
        self.with(Key::Preview, preview)
    }

    pub fn helper_for(self, project: &'a str) -> Self {
        self.with(Key::HelperFor, project)
    }

    pub fn service(self, service: &'a str) -> Self {
        self.with(Key::Service, service)
    }

    pub fn kind(self, kind: Kind) -> Self {
        self.with(Key::Kind, kind.as_str())
    }

    /// Only one release target's objects: a preview's (`Some`), or production's (`None`:
    /// those without a preview label).
    pub fn target(self, preview: Option<&'a str>) -> Self {
        match preview {
            Some(preview) => self.preview(preview),
            None => self.without(Key::Preview),
        }
    }

    /// Only objects that do not carry `key`.
    pub fn without(mut self, key: Key) -> Self {
        self.absent.push(key);
        self
    }

    fn with(mut self, key: Key, value: &'a str) -> Self {
        self.equal.push((key, value));
        self
    }

    /// The `key=value` pairs the engine filters a listing by.
    pub fn pairs(&self) -> Vec<(&'static str, &'a str)> {
        self.equal
            .iter()
            .map(|(key, value)| (key.as_str(), *value))
            .collect()
    }

    /// Whether an object's labels pass every condition.
    pub fn matches(&self, labels: &HashMap<String, String>) -> bool {
        self.equal
            .iter()
            .all(|(key, value)| get(labels, *key) == Some(value))
            && self.absent.iter().all(|key| get(labels, *key).is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn process(name: &str) -> ProcessType {
        ProcessType::parse(name).unwrap()
    }

    /// Each kind's labels, as earlier versions wrote them byte for byte, and the same
    /// labels read back.
    #[test]
    fn each_kind_round_trips_to_the_labels_earlier_versions_wrote() {
        let cases = [
            (
                Labels::instance("ins", "prj_a", "dep_b", "x1y2z3", &process("web"), "small"),
                map(&[
                    ("cantila.installation", "ins"),
                    ("cantila.project", "prj_a"),
                    ("cantila.deploy", "dep_b"),
                    ("cantila.instance", "x1y2z3"),
                    ("cantila.kind", "web"),
                    ("cantila.process", "web"),
                    ("cantila.size", "small"),
                ]),
            ),
            (
                Labels::instance("ins", "prj_a", "dep_b", "q", &process("clock"), "large")
                    .in_preview(Some("prv_c")),
                map(&[
                    ("cantila.installation", "ins"),
                    ("cantila.project", "prj_a"),
                    ("cantila.deploy", "dep_b"),
                    ("cantila.instance", "q"),
                    ("cantila.kind", "worker"),
                    ("cantila.process", "clock"),
                    ("cantila.size", "large"),
                    ("cantila.preview", "prv_c"),
                ]),
            ),
            (
                Labels::release("ins", "prj_a", "dep_b"),
                map(&[
                    ("cantila.installation", "ins"),
                    ("cantila.project", "prj_a"),
                    ("cantila.deploy", "dep_b"),
                    ("cantila.kind", "release"),
                ]),
            ),
            (
                Labels::image("ins", "prj_a", "dep_b"),
                map(&[
                    ("cantila.installation", "ins"),
                    ("cantila.project", "prj_a"),
                    ("cantila.deploy", "dep_b"),
                    ("cantila.kind", "image"),
                ]),
            ),
            (
                Labels::volume("ins", "prj_a", "uploads"),
                map(&[
                    ("cantila.installation", "ins"),
                    ("cantila.project", "prj_a"),
                    ("cantila.kind", "volume"),
                    ("cantila.volume", "uploads"),
                ]),
            ),
            (
                Labels::network("ins", "prj_a").in_preview(Some("prv_c")),
                map(&[
                    ("cantila.installation", "ins"),
                    ("cantila.project", "prj_a"),
                    ("cantila.kind", "network"),
                    ("cantila.preview", "prv_c"),
                ]),
            ),
            (
                Labels::helper("ins", "prj_a"),
                map(&[
                    ("cantila.installation", "ins"),
                    ("cantila.helper-for", "prj_a"),
                    ("cantila.kind", "helper"),
                ]),
            ),
            (
                Labels::run("ins", "prj_a", "dep_b", "run_c"),
                map(&[
                    ("cantila.installation", "ins"),
                    ("cantila.project", "prj_a"),
                    ("cantila.deploy", "dep_b"),
                    ("cantila.kind", "run"),
                    ("cantila.run", "run_c"),
                ]),
            ),
            (
                Labels::service("ins", "prj_a", "redis", "abc"),
                map(&[
                    ("cantila.installation", "ins"),
                    ("cantila.project", "prj_a"),
                    ("cantila.kind", "service"),
                    ("cantila.service", "redis"),
                    ("cantila.spec-hash", "abc"),
                ]),
            ),
        ];
        for (labels, written) in cases {
            assert_eq!(labels.to_map(), written, "{labels:?}");
            assert_eq!(Labels::parse(&written), labels);
        }
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::parse("test"), None);
    }

    #[test]
    fn labels_of_others_are_ignored_when_read() {
        let read = Labels::parse(&map(&[
            ("cantila.kind", "test"),
            ("cantila.project", "prj_a"),
            ("com.docker.compose.project", "other"),
        ]));
        assert_eq!(
            read,
            Labels {
                project: Some("prj_a".to_owned()),
                ..Labels::default()
            }
        );
    }

    #[test]
    fn the_process_type_of_an_instance() {
        let instance = |pairs: &[(&str, &str)]| Labels::parse(&map(pairs)).process_type();
        assert_eq!(
            instance(&[("cantila.kind", "worker"), ("cantila.process", "clock")]),
            Some(process("clock"))
        );
        // Web instances of earlier versions carry only their kind.
        assert_eq!(instance(&[("cantila.kind", "web")]), Some(process("web")));
        assert_eq!(instance(&[("cantila.kind", "release")]), None);
        assert_eq!(instance(&[("cantila.kind", "helper")]), None);
        assert_eq!(
            instance(&[("cantila.kind", "service"), ("cantila.service", "redis")]),
            None
        );
        assert_eq!(
            Labels::run("ins", "prj_a", "dep_b", "run_c").process_type(),
            None
        );
    }

    #[test]
    fn production_and_a_preview_are_told_apart() {
        let production = map(&[("cantila.project", "prj_a"), ("cantila.kind", "web")]);
        let preview = map(&[
            ("cantila.project", "prj_a"),
            ("cantila.kind", "web"),
            ("cantila.preview", "prv_b"),
        ]);
        let other_project = map(&[("cantila.project", "prj_z")]);
        let helper = map(&[("cantila.helper-for", "prj_a"), ("cantila.kind", "helper")]);

        let of_production = Filter::production("prj_a");
        assert!(of_production.matches(&production));
        assert!(!of_production.matches(&preview));
        assert!(!of_production.matches(&other_project));
        assert!(!of_production.matches(&helper));
        assert_eq!(Filter::new().project("prj_a").target(None), of_production);

        let of_preview = Filter::new().project("prj_a").target(Some("prv_b"));
        assert!(of_preview.matches(&preview));
        assert!(!of_preview.matches(&production));
        assert!(!Filter::new().target(Some("prv_c")).matches(&preview));

        assert_eq!(Labels::parse(&production).preview, None);
        assert_eq!(Labels::parse(&preview).preview.as_deref(), Some("prv_b"));
    }

    #[test]
    fn a_filter_lists_by_its_pairs() {
        assert_eq!(
            Filter::new()
                .installation("ins")
                .kind(Kind::Network)
                .preview("prv_b")
                .pairs(),
            [
                ("cantila.installation", "ins"),
                ("cantila.kind", "network"),
                ("cantila.preview", "prv_b"),
            ]
        );
        // An absence is checked on what the engine returns, never sent as a pair.
        assert_eq!(
            Filter::production("prj_a").pairs(),
            [("cantila.project", "prj_a")]
        );
        assert_eq!(
            Filter::new()
                .deploy("dep_b")
                .kind(Kind::Worker)
                .target(None)
                .pairs(),
            [("cantila.deploy", "dep_b"), ("cantila.kind", "worker")]
        );
        let legacy = Filter::new().kind(Kind::Network).without(Key::Installation);
        assert_eq!(legacy.pairs(), [("cantila.kind", "network")]);
        assert!(legacy.matches(&map(&[("cantila.kind", "network")])));
        assert!(!legacy.matches(&map(&[
            ("cantila.kind", "network"),
            ("cantila.installation", "ins"),
        ])));
        assert!(Filter::new().matches(&map(&[])));
    }
}
