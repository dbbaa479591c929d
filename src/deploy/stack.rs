//! A compose project's deploy beside its web release: each service's build (the same build
//! path as the release's), then the services other than the public one made to match the
//! file through `Services::apply` in dependency order, before the public service is
//! released on the zero-downtime path.
//! Invariant: nothing of the stack starts before every image of it is built; a service
//! whose build and settings did not change keeps its image id, so it is not restarted.

use std::{collections::BTreeMap, path::Path};

use crate::{
    config::ScaleConfig,
    error::Error,
    labels::{Kind, Labels},
    model::service::{ServiceSource, ServiceSpec},
    projects::Project,
    stack::{self, Stack, StackService},
};

use super::{
    pipeline::{failed, BuildJob, Stop},
    Deploy, DeployLog, Deploys,
};

/// The images of a stack's built services, by service name (image ids), and the images
/// their tags named before this build (removed once the services moved off them).
#[derive(Debug, Clone, Default)]
pub(super) struct StackImages {
    pub built: BTreeMap<String, String>,
    pub replaced: Vec<String>,
}

impl Deploys {
    /// Builds every service of the stack that has a `build` (the public one is the
    /// release's own build). Each image is labelled without the deploy, so an unchanged
    /// build yields the same image id and its service is left running.
    pub(super) async fn build_stack_images(
        &self,
        project: &Project,
        deploy: &Deploy,
        stack: &Stack,
        checkout: &Path,
        log: &DeployLog,
    ) -> Result<StackImages, Stop> {
        let mut images = StackImages::default();
        let engine = self.engine().await.map_err(failed("build"))?;
        for service in &stack.services {
            let Some(build) = &service.build else {
                continue;
            };
            let tag = format!(
                "cantila/{}/{}/{}:compose",
                project.handle, project.name, service.name
            );
            let labels = Labels {
                installation: Some(self.installation.to_string()),
                kind: Some(Kind::Image),
                project: Some(project.id.clone()),
                service: Some(service.name.clone()),
                ..Labels::default()
            }
            .to_map();
            let previous = engine.image_id(&tag).await.ok().flatten();
            log.line(format!(
                "building service {} from {}",
                service.name, build.context
            ));
            self.run_build(
                project,
                deploy,
                BuildJob {
                    context_dir: &checkout.join(&build.context),
                    generated: None,
                    dockerfile: build
                        .dockerfile
                        .clone()
                        .unwrap_or_else(|| "Dockerfile".to_owned()),
                    target: build.target.clone(),
                    build_args: build
                        .args
                        .iter()
                        .map(|(name, value)| (name.clone(), value.clone()))
                        .collect(),
                    tag: tag.clone(),
                    labels,
                },
                log,
            )
            .await?;
            let id = engine
                .image_id(&tag)
                .await
                .map_err(|err| failed("build")(err.into()))?
                .ok_or_else(|| {
                    failed("build")(Error::Internal(format!("the built image {tag} is missing")))
                })?;
            images
                .replaced
                .extend(previous.filter(|previous| *previous != id));
            images.built.insert(service.name.clone(), id);
        }
        Ok(images)
    }

    /// Makes the project's compose services match the stack (those the file no longer
    /// names are removed), starting each after its dependencies are ready. Production
    /// only: a preview's release never reaches the services.
    pub(super) async fn apply_stack(
        &self,
        project: &Project,
        stack: &Stack,
        images: &StackImages,
        log: &DeployLog,
    ) -> Result<(), Stop> {
        let specs = stack
            .services
            .iter()
            .map(|service| service_spec(service, images, &self.config.scale))
            .collect::<Result<Vec<_>, Error>>()
            .map_err(failed("services"))?;
        let names: Vec<&str> = stack.services.iter().map(|s| s.name.as_str()).collect();
        log.line(if names.is_empty() {
            "compose: no services beside the public one".to_owned()
        } else {
            format!("compose: services in order: {}", names.join(", "))
        });
        let line_log = log.clone();
        self.services
            .apply(
                &project.id,
                specs,
                ServiceSource::Compose,
                &mut move |line: &str| line_log.line(line.to_owned()),
            )
            .await
            .map_err(failed("services"))?;
        // The services moved to their new images; an old one nothing runs goes (the engine
        // refuses to remove one a container still uses, which then stays).
        if let Ok(engine) = self.engine().await {
            for image in &images.replaced {
                if let Err(err) = engine.remove_image(image).await {
                    tracing::debug!(%image, error = %err, "keeping a replaced service image");
                }
            }
        }
        Ok(())
    }
}

/// A compose service as a service spec, with its image (the built image id for a build)
/// and the size tier its limits fit.
pub(super) fn service_spec(
    service: &StackService,
    images: &StackImages,
    scale: &ScaleConfig,
) -> Result<ServiceSpec, Error> {
    let image =
        match (&service.build, &service.image) {
            (Some(_), _) => images.built.get(&service.name).cloned().ok_or_else(|| {
                Error::Internal(format!("service {} was not built", service.name))
            })?,
            (None, Some(image)) => image.clone(),
            (None, None) => {
                return Err(Error::Internal(format!(
                    "service {} has neither an image nor a build",
                    service.name
                )))
            }
        };
    let size = stack::fit_size(&service.limits, scale, &mut |_| {});
    service.spec(image, size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::service::{RestartPolicy, ServiceHealthType},
        stack::{Build, Condition, Dependency, Health, Limits, Mount, Restart},
    };

    #[test]
    fn a_compose_service_becomes_a_service_spec() {
        let service = StackService {
            name: "worker".into(),
            image: None,
            build: Some(Build {
                context: "worker".into(),
                ..Build::default()
            }),
            command: Some(vec!["run".into()]),
            entrypoint: None,
            env: BTreeMap::from([("QUEUE".into(), "jobs".into())]),
            volumes: vec![Mount {
                volume: "jobs-data".into(),
                path: "/data".into(),
                read_only: false,
            }],
            depends_on: vec![Dependency {
                service: "redis".into(),
                condition: Condition::Healthy,
            }],
            health: Some(Health::Command {
                test: vec!["true".into()],
                interval_secs: Some(1),
                timeout_secs: None,
                start_period_secs: None,
                retries: Some(3),
            }),
            restart: Restart::OnFailure,
            replicas: 2,
            limits: Limits {
                cpus: None,
                memory_bytes: Some(100 << 20),
            },
            port: None,
        };
        let images = StackImages {
            built: BTreeMap::from([("worker".to_owned(), "sha256:abc".to_owned())]),
            replaced: Vec::new(),
        };
        let spec = service_spec(&service, &images, &ScaleConfig::default()).unwrap();
        assert_eq!(spec.image, "sha256:abc");
        assert_eq!(spec.count, 2);
        assert_eq!(spec.restart, RestartPolicy::OnFailure);
        assert_eq!(spec.size.as_deref(), Some("nano"));
        assert_eq!(spec.health.kind, ServiceHealthType::Command);
        assert_eq!(spec.depends_on[0].as_str(), "redis");
        assert_eq!(spec.volumes[0].name.as_str(), "jobs-data");
        // Out of bounds for a service: the message names the compose service.
        let many = StackService {
            replicas: 50,
            ..service.clone()
        };
        let err = service_spec(&many, &images, &ScaleConfig::default()).unwrap_err();
        assert!(
            err.to_string().contains("`services.worker`: `count` is 50"),
            "{err}"
        );
        assert!(service_spec(&service, &StackImages::default(), &ScaleConfig::default()).is_err());
    }
}
