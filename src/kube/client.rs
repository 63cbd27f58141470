//! The Kubernetes client: a kubeconfig file when given, else what kube-rs infers: `KUBECONFIG`
//! or `~/.kube/config` when present, then in-cluster config (the pod's ServiceAccount).

use std::path::Path;

use anyhow::Context;

pub async fn connect(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    crate::tls::install_crypto_provider();
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no --kubeconfig given and no in-cluster or default kubeconfig found")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}
